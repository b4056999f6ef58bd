"""Insights of published posts (docs/insights.md), through the real sandbox over HTTP.

The sandbox's counts grow with its control clock; offpost's side runs on a clock of
the test's, moved by the same amounts. The fetches are claimed and run directly
(the dispatcher's claim, then the worker's function), without a Celery worker.
"""

from __future__ import annotations

import itertools
import random
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from offpost.api import insights as insights_api
from offpost.api.app import create_app
from offpost.api.dashboard import insights as dashboard_insights
from offpost.cli.insights_status import insights_line
from offpost.graph.client import GraphClient
from offpost.models import CredentialPage, Post, PostStatus, make_engine, make_sessionmaker
from offpost.models.insights import (
    InsightStatus,
    PostInsight,
    claim_due_insights,
    page_summary,
    schedule_insights,
    series,
)
from offpost.models.migrate import upgrade_to_head
from offpost.settings import Settings
from offpost.workers import ratelimit
from offpost.workers.insights import (
    IMPRESSIONS_METRIC,
    NO_DATA,
    REACH_METRIC,
    InsightsContext,
    InsightsScheduler,
    TokenBucket,
    fetch_insights,
    send_due_insights,
)
from offpost.workers.observe import Finished, Outcome
from tests.integration.api_support import add_client, bearer
from tests.integration.posts_support import Account, make_account
from tests.integration.sandbox_support import SandboxClient

HOUR = 3600.0
RESEND = timedelta(minutes=5)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The API app with the insights routes (included here until app.py includes them)."""
    upgrade_to_head(settings.database_url)
    app = create_app(settings)
    paths = {getattr(route, "path", None) for route in app.routes}
    if "/v1/posts/{post_id}/insights" not in paths:
        app.include_router(insights_api.router)
    if "/admin/pages/{page_id}/insights" not in paths:
        app.include_router(dashboard_insights.router)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


class Clock:
    """offpost's clock in these tests; :meth:`advance` moves the sandbox's by as much."""

    def __init__(self, graph: SandboxClient) -> None:
        self.now = datetime.now(UTC)
        self.graph = graph

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.graph.advance(seconds)
        self.now += timedelta(seconds=seconds)


@dataclass
class World:
    settings: Settings
    account: Account
    sessions: sessionmaker[Session]
    graph_client: GraphClient
    sandbox: SandboxClient
    clock: Clock
    ctx: InsightsContext
    page_token: str
    fetched: list[str] = field(default_factory=list)

    def publish(self, message: str | None = None) -> str:
        """A post published on the sandbox now, recorded as offpost records one, with its
        fetches scheduled; its offpost id."""
        message = message or f"insights, please ({secrets.token_hex(4)})"
        result = self.graph_client.publish_feed(
            self.account.page_id, self.page_token, message=message
        )
        now = self.clock()
        with self.sessions.begin() as session:
            post = Post(
                client_id=self.account.client_id,
                credential_id=self.account.credential_id,
                target=self.account.page_id,
                message=message,
                publish_at=now,
                due_at=now,
                status=PostStatus.PUBLISHED,
                graph_post_id=result.post_id or result.id,
                published_at=now,
            )
            session.add(post)
            session.flush()
            schedule_insights(
                session,
                post.id,
                post.client_id,
                post.target,
                now,
                self.settings.insight_ages(),
            )
            return post.id

    def claim(self) -> list[tuple[str, int]]:
        with self.sessions.begin() as session:
            return claim_due_insights(session, self.clock(), RESEND, 100)

    def run_due(self) -> list[str]:
        """Claim what is due and fetch each; the outcomes."""
        return [
            fetch_insights(self.ctx, insight_id, attempts, on_fetched=self.on_fetched)
            for insight_id, attempts in self.claim()
        ]

    def on_fetched(self, session: Session, row: PostInsight) -> None:
        assert row.status is InsightStatus.DONE
        self.fetched.append(row.age)

    def rows(self, post_id: str) -> list[PostInsight]:
        with self.sessions() as session:
            return series(session, post_id)

    def insights_control(self, **body: Any) -> dict[str, Any]:
        return dict(self.sandbox.control("PUT", f"/pages/{self.account.page_id}/insights", body))


@pytest.fixture
def world(api: TestClient, settings: Settings, graph: SandboxClient) -> Iterator[World]:
    account = make_account(api, settings, graph, "insights")
    engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        page = session.get(CredentialPage, (account.credential_id, account.page_id))
        assert page is not None
        assert page.page_token
        token = page.page_token
    assert settings.app_id is not None
    assert settings.app_secret is not None
    http = httpx.Client(timeout=10)
    graph_client = GraphClient(
        http,
        graph_url=settings.graph_url,
        version=settings.graph_version,
        app_id=settings.app_id,
        app_secret=settings.app_secret.get_secret_value(),
    )
    clock = Clock(graph)
    ctx = InsightsContext(
        sessions=sessions,
        graph=graph_client,
        blocks=ratelimit.MemoryBlockStore(),
        app_id=settings.app_id,
        bucket=TokenBucket(6000, burst=1000),
        clock=clock,
        rng=random.Random(7),
    )
    yield World(settings, account, sessions, graph_client, graph, clock, ctx, token)
    http.close()
    engine.dispose()


def test_the_three_ages_are_fetched_as_the_clock_passes_them(world: World, api: TestClient) -> None:
    post_id = world.publish()
    rows = world.rows(post_id)
    assert [r.age for r in rows] == ["1h", "24h", "7d"]
    assert [r.due_at - world.clock() for r in rows] == [
        timedelta(hours=1),
        timedelta(hours=24),
        timedelta(days=7),
    ]
    assert world.run_due() == []  # nothing is due at publishing

    published = world.clock()
    seen: list[PostInsight] = []
    for age, after in (("1h", HOUR), ("24h", 24 * HOUR), ("7d", 7 * 24 * HOUR)):
        world.clock.advance(after - (world.clock() - published).total_seconds())
        assert world.run_due() == ["done"], age
        done = {r.age: r for r in world.rows(post_id)}[age]
        assert done.status is InsightStatus.DONE
        assert done.fetched_at == world.clock()
        assert done.errors is None
        for value in (done.reactions, done.comments, done.shares, done.impressions, done.reach):
            assert value is not None
            assert value >= 0
        assert done.reach is not None
        assert done.impressions is not None
        assert done.impressions >= done.reach > 0
        seen.append(done)
    assert world.fetched == ["1h", "24h", "7d"]
    # The audience only grows: each fetch counts at least what the one before did.
    for earlier, later in itertools.pairwise(seen):
        for name in ("reactions", "comments", "shares", "impressions", "reach"):
            assert getattr(later, name) >= getattr(earlier, name), name
    assert seen[-1].reach > seen[0].reach  # type: ignore[operator]

    # The same message again (a duplicate, a late re-send) changes nothing.
    assert fetch_insights(world.ctx, seen[0].id, 0) == "skipped"
    assert fetch_insights(world.ctx, seen[0].id) == "skipped"

    # The series through the API: the client's own post only.
    response = api.get(f"/v1/posts/{post_id}/insights", headers=world.account.headers)
    assert response.status_code == 200, response.text
    body = response.json()["insights"]
    assert [i["age"] for i in body] == ["1h", "24h", "7d"]
    assert [i["status"] for i in body] == ["done"] * 3
    assert body[2]["reach"] == seen[2].reach
    assert body[2]["impressions"] == seen[2].impressions
    assert body[0]["fetched_at"].endswith("Z")
    assert set(body[0]) == {
        "age", "due_at", "fetched_at", "status", "reactions", "comments", "shares",
        "impressions", "reach", "errors",
    }  # fmt: skip
    other = bearer(add_client(world.settings, "someone-else"))
    assert api.get(f"/v1/posts/{post_id}/insights", headers=other).status_code == 404
    missing = api.get("/v1/posts/pst_00000000000000000000/insights", headers=world.account.headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert api.get(f"/v1/posts/{post_id}/insights").status_code == 401

    # What `offpost status` says of it.
    with world.sessions() as session:
        assert insights_line(session, world.clock()) == (
            "insights: 1 fetched in the last 24 h, 0 due, 0 failed"
        )


def test_a_deprecated_metric_is_named_and_the_rest_stored(world: World) -> None:
    world.insights_control(deprecated_metrics=[IMPRESSIONS_METRIC])
    post_id = world.publish()
    world.clock.advance(HOUR)
    assert world.run_due() == ["done"]
    row = world.rows(post_id)[0]
    assert row.status is InsightStatus.DONE
    assert row.impressions is None
    assert row.reach is not None
    assert row.reach > 0
    assert row.reactions is not None
    assert row.errors is not None
    assert set(row.errors) == {IMPRESSIONS_METRIC}
    assert "The value must be a valid insights metric" in row.errors[IMPRESSIONS_METRIC]


def test_both_metrics_refused_still_stores_the_counts(world: World) -> None:
    world.insights_control(deprecated_metrics=[IMPRESSIONS_METRIC, REACH_METRIC])
    post_id = world.publish()
    world.clock.advance(HOUR)
    assert world.run_due() == ["done"]
    row = world.rows(post_id)[0]
    assert row.impressions is None
    assert row.reach is None
    assert row.errors is not None
    assert set(row.errors) == {IMPRESSIONS_METRIC, REACH_METRIC}
    assert row.reactions is not None
    assert row.shares is not None


def test_a_page_without_insights_stores_nulls_with_the_reason(world: World) -> None:
    world.insights_control(available=False)
    post_id = world.publish()
    world.clock.advance(HOUR)
    assert world.run_due() == ["done"]
    row = world.rows(post_id)[0]
    assert row.status is InsightStatus.DONE
    assert row.impressions is None
    assert row.reach is None
    assert row.errors == {IMPRESSIONS_METRIC: NO_DATA, REACH_METRIC: NO_DATA}
    assert row.reactions is not None
    assert row.comments is not None


def test_a_deleted_post_is_canceled(world: World) -> None:
    post_id = world.publish()
    with world.sessions() as session:
        graph_post_id = session.scalars(select(Post.graph_post_id).where(Post.id == post_id)).one()
    assert graph_post_id is not None
    assert world.graph_client.delete_object(graph_post_id, world.page_token)
    world.clock.advance(HOUR)
    assert world.run_due() == ["canceled"]
    rows = world.rows(post_id)
    assert rows[0].status is InsightStatus.CANCELED
    assert rows[0].last_error is not None
    assert "does not exist" in rows[0].last_error
    assert [r.status for r in rows[1:]] == [InsightStatus.PENDING] * 2
    assert world.fetched == []


def test_rate_limits_and_the_pace_put_a_fetch_off_without_an_attempt(world: World) -> None:
    post_id = world.publish()
    world.clock.advance(HOUR)
    world.ctx.blocks.block(ratelimit.page_key(world.account.page_id), 90)
    assert world.run_due() == ["waiting"]
    row = world.rows(post_id)[0]
    assert row.attempts == 0
    assert row.status is InsightStatus.PENDING
    assert row.due_at > world.clock() + timedelta(seconds=60)
    assert world.claim() == []  # not due again before the block ends

    world.ctx.blocks = ratelimit.MemoryBlockStore()
    world.ctx.bucket = TokenBucket(1, burst=1)
    world.clock.advance(120)
    assert world.run_due() == ["done"]
    second = world.publish()
    world.clock.advance(HOUR)
    outcomes = world.run_due()
    assert outcomes == ["paced"]
    paced = world.rows(second)[0]
    assert paced.attempts == 0
    assert paced.due_at > world.clock()


def test_graph_out_of_reach_retries_with_backoff_then_fails(
    world: World, settings: Settings
) -> None:
    post_id = world.publish()
    world.clock.advance(HOUR)
    unreachable = httpx.Client(timeout=2)
    assert settings.app_id is not None
    assert settings.app_secret is not None
    world.ctx.graph = GraphClient(
        unreachable,
        graph_url="http://127.0.0.1:9",
        version=settings.graph_version,
        app_id=settings.app_id,
        app_secret=settings.app_secret.get_secret_value(),
    )
    outcomes = []
    delays = []
    for _ in range(5):
        outcomes += world.run_due()
        row = world.rows(post_id)[0]
        delays.append((row.due_at - world.clock()).total_seconds())
        world.clock.advance(max(0.0, delays[-1]) + 1)
    unreachable.close()
    assert outcomes == ["retry"] * 4 + ["failed"]
    assert delays[1] > delays[0] / 2  # backoff grows
    row = world.rows(post_id)[0]
    assert row.status is InsightStatus.FAILED
    assert row.attempts == 5
    assert row.last_error
    with world.sessions() as session:
        assert insights_line(session, world.clock()).endswith("1 failed")


def test_the_dispatcher_sends_due_fetches_once(world: World) -> None:
    world.publish()
    world.publish("another")
    sent: list[list[tuple[str, int]]] = []
    assert send_due_insights(world.sessions, None, world.clock(), send=sent.append) == 0
    world.clock.advance(HOUR)
    assert send_due_insights(world.sessions, None, world.clock(), send=sent.append) == 2
    assert send_due_insights(world.sessions, None, world.clock(), send=sent.append) == 0
    assert len(sent) == 1
    assert [attempts for _, attempts in sent[0]] == [0, 0]
    # A lost message: the fetch is sent again after resend_after.
    world.clock.advance(RESEND.total_seconds() + 1)
    assert send_due_insights(world.sessions, None, world.clock(), send=sent.append) == 2


def test_schedule_insights_is_once_per_age(world: World) -> None:
    post_id = world.publish()
    with world.sessions.begin() as session:
        added = schedule_insights(
            session,
            post_id,
            world.account.client_id,
            world.account.page_id,
            world.clock(),
            world.settings.insight_ages(),
        )
    assert added == 0
    assert len(world.rows(post_id)) == 3


def test_the_page_summary_and_its_dashboard_page(world: World, api: TestClient) -> None:
    first = world.publish("one")
    world.publish("two")
    world.clock.advance(HOUR)
    assert world.run_due() == ["done", "done"]
    rows = {p: world.rows(p)[0] for p in (first,)}
    with world.sessions() as session:
        days = page_summary(
            session, world.account.page_id, world.clock() - timedelta(days=29), world.clock()
        )
    assert len(days) in (30, 31)
    today = [d for d in days if d.posts]
    assert len(today) == 1
    assert today[0].posts == 2
    assert today[0].reactions >= (rows[first].reactions or 0)

    # Signed out: to the sign-in form.
    page = f"/admin/pages/{world.account.page_id}/insights"
    assert api.get(page, follow_redirects=False).headers["location"] == "/admin/login"
    key = add_client(world.settings, "operator", admin=True)
    assert api.post("/admin/login", data={"key": key}, follow_redirects=False).status_code == 303
    # The page asks for "now" from the app's clock: the posts were published on the test's
    # clock an hour ago, which is today or yesterday, inside the 30 days either way.
    response = api.get(page)
    assert response.status_code == 200, response.text
    html = response.text
    assert "<script" not in html
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert '<svg class="chart"' in html
    assert html.count('<g class="day">') == 1
    assert f'href="/admin/posts/{first}"' in html
    assert re.search(r"<td class=\"num\">2</td>", html)  # the day's two posts
    assert api.get("/admin/pages/not%20a%20page/insights").status_code == 404


def test_the_publish_observer_schedules_the_fetches_of_published_posts(world: World) -> None:
    post_id = world.publish()
    with world.sessions.begin() as session:
        session.execute(delete(PostInsight).where(PostInsight.post_id == post_id))
    published_at = world.clock() - timedelta(minutes=5)
    claimed: Any = SimpleNamespace(
        id=post_id, client_id=world.account.client_id, target=world.account.page_id, media=None
    )
    scheduler = InsightsScheduler(world.settings.insight_ages())
    with world.sessions.begin() as session:
        scheduler.posts_finished(
            session,
            [
                Finished(claimed, Outcome.FAILED, {"status": PostStatus.FAILED}),
                Finished(
                    claimed,
                    Outcome.PUBLISHED,
                    {"status": PostStatus.PUBLISHED, "published_at": published_at},
                ),
            ],
            world.clock(),
        )
    rows = world.rows(post_id)
    assert [(r.age, r.due_at - published_at) for r in rows] == [
        ("1h", timedelta(hours=1)),
        ("24h", timedelta(days=1)),
        ("7d", timedelta(days=7)),
    ]
