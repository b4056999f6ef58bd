"""The dispatcher's and reaper's questions are index scans, not table scans.

The table is filled with 20,000 posts, almost all of them ``published`` (as a
real one is after a while), the statistics are refreshed, and the planner is
asked for its plan without being forced: the plan must go through the partial
index, the only thing that keeps "which posts are due" cheap as history grows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine

from offpost.models import Client, Credential, make_engine, make_sessionmaker
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import UTCDateTime

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ROWS = 20_000

# One statement on both dialects: a recursive counter feeds a multi-row INSERT.
# Per 100 rows: 1 scheduled and due, 1 scheduled in the future, 1 queued,
# 1 publishing, 96 published.
FILL = text(
    """
    INSERT INTO posts (id, client_id, credential_id, target, message, publish_at, due_at,
                       status, attempts, max_attempts, queued_at, lease_expires_at,
                       created_at, updated_at)
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
    SELECT 'post_bulk' || i, :client_id, :credential_id, '2001', 'bulk', :past,
           CASE WHEN i % 100 = 1 THEN :future ELSE :past END,
           CASE i % 100 WHEN 0 THEN 'scheduled' WHEN 1 THEN 'scheduled'
                        WHEN 2 THEN 'queued' WHEN 3 THEN 'publishing'
                        ELSE 'published' END,
           0, 5,
           CASE WHEN i % 100 = 2 THEN :past END,
           CASE WHEN i % 100 = 3 THEN :past END,
           :past, :past
    FROM n
    """
).bindparams(
    bindparam("past", type_=UTCDateTime()),
    bindparam("future", type_=UTCDateTime()),
)

QUERIES = {
    "ix_posts_due": (
        "SELECT id FROM posts WHERE status = 'scheduled' AND due_at <= :now "
        "ORDER BY due_at LIMIT 100"
    ),
    "ix_posts_queued": (
        "SELECT id FROM posts WHERE status = 'queued' AND queued_at <= :now "
        "ORDER BY queued_at LIMIT 100"
    ),
    "ix_posts_lease": (
        "SELECT id FROM posts WHERE status = 'publishing' AND lease_expires_at <= :now "
        "ORDER BY lease_expires_at LIMIT 100"
    ),
}

COLUMNS = {
    "ix_posts_due": "due_at",
    "ix_posts_queued": "queued_at",
    "ix_posts_lease": "lease_expires_at",
}


def _query(sql: str) -> Any:
    return text(sql).bindparams(bindparam("now", value=NOW, type_=UTCDateTime()))


def _fill(engine: Engine) -> None:
    with make_sessionmaker(engine).begin() as session:
        client = Client(name="bulk", key_hash="0" * 64)
        session.add(client)
        session.flush()
        credential = Credential(client_id=client.id, fb_user_id="10001")
        session.add(credential)
        session.flush()
        session.execute(
            FILL,
            {
                "rows": ROWS,
                "client_id": client.id,
                "credential_id": credential.id,
                "past": NOW - timedelta(hours=1),
                "future": NOW + timedelta(days=30),
            },
        )
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()


@pytest.fixture
def filled_postgres(postgres_url: str) -> Iterator[Engine]:
    upgrade_to_head(postgres_url)
    engine = make_engine(postgres_url)
    _fill(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def filled_sqlite(sqlite_url: str) -> Iterator[Engine]:
    upgrade_to_head(sqlite_url)
    engine = make_engine(sqlite_url)
    _fill(engine)
    yield engine
    engine.dispose()


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.parametrize("index", list(QUERIES))
def test_postgresql_answers_the_watchdog_queries_from_the_partial_index(
    filled_postgres: Engine, index: str
) -> None:
    with filled_postgres.connect() as connection:
        counts: dict[str, int] = dict(
            connection.execute(text("SELECT status, count(*) FROM posts GROUP BY status")).all()
        )
        assert sum(counts.values()) == ROWS
        assert counts["published"] == ROWS * 96 // 100
        raw = connection.execute(_query(f"EXPLAIN (FORMAT JSON) {QUERIES[index]}")).scalar_one()
    plan = raw if isinstance(raw, list) else json.loads(raw)
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    scans = [(n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]]
    assert all(kind != "Seq Scan" for kind, _ in scans), scans
    used = [n for n in nodes if n.get("Index Name") == index]
    assert used, scans
    # A range scan on the time column, in its order: no filter pass, no sort step.
    assert COLUMNS[index] in used[0].get("Index Cond", ""), used[0]
    assert all(n["Node Type"] != "Sort" for n in nodes), [n["Node Type"] for n in nodes]


def test_postgresql_finds_exactly_the_due_posts(filled_postgres: Engine) -> None:
    with filled_postgres.connect() as connection:
        due = connection.execute(_query(QUERIES["ix_posts_due"])).scalars().all()
    assert len(due) == 100  # LIMIT; 200 are due
    assert all(post_id.startswith("post_bulk") for post_id in due)


@pytest.mark.parametrize("index", list(QUERIES))
def test_sqlite_answers_the_watchdog_queries_from_the_partial_index(
    filled_sqlite: Engine, index: str
) -> None:
    with filled_sqlite.connect() as connection:
        plan = connection.execute(_query(f"EXPLAIN QUERY PLAN {QUERIES[index]}")).all()
    details = [str(row[-1]) for row in plan]
    assert any(f"USING INDEX {index}" in detail for detail in details), details
    assert not any(detail.startswith("SCAN posts") for detail in details), details
    # ORDER BY is served by the index order, not a sort step.
    assert not any("TEMP B-TREE" in detail for detail in details), details


def test_sqlite_finds_exactly_the_due_posts(filled_sqlite: Engine) -> None:
    with filled_sqlite.connect() as connection:
        due = connection.execute(_query(QUERIES["ix_posts_due"])).scalars().all()
        total = connection.execute(
            _query("SELECT count(*) FROM posts WHERE status = 'scheduled' AND due_at <= :now")
        ).scalar_one()
    assert len(due) == 100
    assert total == ROWS // 100
