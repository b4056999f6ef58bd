"""``GET /metrics``: Prometheus text, valid for ``promtool check metrics``, right across processes.

The database gauges are checked against the rows of ``admin_support.populate``;
the worker counters against values written by other processes into a shared
metrics directory (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from offpost.settings import Settings
from offpost.workers.metrics import process_metrics
from tests.conftest import service_missing
from tests.integration.admin_support import (
    EXPECTED_STATS,
    make_admin_settings,
    populate,
    queued_messages,
)
from tests.integration.api_support import api_client

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def promtool_check(text: str) -> None:
    """``promtool check metrics`` must accept ``text`` (a missing promtool fails under CI)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        service_missing("promtool (apt-get install prometheus)", FileNotFoundError("promtool"))
        return
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, f"promtool check metrics:\n{problems}\n---\n{text}"


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    path = tmp_path / "metrics"
    path.mkdir()
    return path


@pytest.fixture
def settings(postgres_url: str, redis_url: str, metrics_dir: Path) -> Settings:
    return make_admin_settings(postgres_url, redis_url, metrics_dir=str(metrics_dir))


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with api_client(settings) as client:
        client.app.state.metrics._cache_s = 0  # type: ignore[attr-defined]  # fresh numbers
        yield client


def count_in_other_process(metrics_dir: Path, script: str) -> None:
    """Run ``script`` in a new Python process whose observer writes to ``metrics_dir``."""
    prelude = textwrap.dedent(
        f"""
        from offpost.workers.metrics import metrics_observer
        observer = metrics_observer({str(metrics_dir)!r})
        m = observer.metrics
        """
    )
    subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)], check=True, timeout=60
    )


def test_metrics_need_no_key_and_speak_prometheus_text(api: TestClient) -> None:
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    promtool_check(response.text)


def test_database_gauges_match_the_rows(
    api: TestClient, settings: Settings, redis_url: str
) -> None:
    populate(settings)
    with queued_messages(redis_url, 2):
        text = api.get("/metrics").text
    got = samples(text)
    for status, count in EXPECTED_STATS["posts"].items():
        assert got[("offpost_posts", (("status", status),))] == count
    for status, count in EXPECTED_STATS["credentials"].items():
        assert got[("offpost_credentials", (("status", status),))] == count
    assert got[("offpost_credentials", (("status", "deleted"),))] == 1
    assert got[("offpost_posts_due_not_dispatched", ())] == 3
    assert 290 <= got[("offpost_posts_due_oldest_age_seconds", ())] < 400  # due 5 min ago
    assert got[("offpost_queue_depth_messages", ())] == 2
    promtool_check(text)


def test_counters_of_several_worker_processes_add_up(api: TestClient, metrics_dir: Path) -> None:
    for _ in range(2):
        count_in_other_process(
            metrics_dir,
            """
            m.published.labels(outcome="published").inc()
            m.failed.labels(reason="368").inc()
            m.graph_errors.labels(code="190").inc(2)
            m.duration.observe(0.3)
            m.lateness.labels(kind="recurring").observe(42)
            m.graph_usage.labels(scope="app").set(0.25)
            m.pacing_waits.labels(scope="page").inc()
            m.pacing_wait.labels(scope="page").observe(30)
            m.pacing_usage.labels(scope="page").set(0.6)
            """,
        )
    text = api.get("/metrics").text
    got = samples(text)
    assert got[("offpost_posts_published_total", (("outcome", "published"),))] == 2
    assert got[("offpost_posts_published_total", (("outcome", "reconciled"),))] == 0
    assert got[("offpost_posts_failed_total", (("reason", "368"),))] == 2
    assert got[("offpost_graph_errors_total", (("code", "190"),))] == 4
    assert got[("offpost_publish_duration_seconds_count", ())] == 2
    assert got[("offpost_publish_duration_seconds_bucket", (("le", "0.5"),))] == 2
    lateness = ("offpost_schedule_lateness_seconds_sum", (("kind", "recurring"),))
    assert got[lateness] == 84
    assert got[("offpost_graph_usage_ratio", (("scope", "app"),))] == 0.25
    assert got[("offpost_pacing_waits_total", (("scope", "page"),))] == 2
    assert got[("offpost_pacing_waits_total", (("scope", "app"),))] == 0
    assert got[("offpost_pacing_wait_seconds_bucket", (("le", "60.0"), ("scope", "page")))] == 2
    assert got[("offpost_pacing_usage_ratio", (("scope", "page"),))] == 0.6
    promtool_check(text)


def test_without_a_metrics_dir_the_process_registry_is_served(
    postgres_url: str, redis_url: str
) -> None:
    # As in `offpost up` with the worker inside the API's process.
    metrics = process_metrics()
    before = metrics.published.labels(outcome="reconciled")._value.get()
    metrics.published.labels(outcome="reconciled").inc()
    metrics.graph_usage.labels(scope="page").set(0.5)
    settings = make_admin_settings(postgres_url, redis_url)
    with api_client(settings) as api:
        text = api.get("/metrics").text
    got = samples(text)
    assert got[("offpost_posts_published_total", (("outcome", "reconciled"),))] == before + 1
    assert got[("offpost_graph_usage_ratio", (("scope", "page"),))] == 0.5
    assert ("offpost_posts", (("status", "published"),)) in got
    promtool_check(text)
