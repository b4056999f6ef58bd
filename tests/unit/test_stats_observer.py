"""The metrics observer of the publish protocol: what each outcome counts, on a private registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from offpost.graph.errors import GraphAuthError, GraphTimeoutError
from offpost.graph.usage import BusinessUseCaseUsage, GraphUsage, UsageCounters
from offpost.models.transitions import ClaimedPost
from offpost.workers.metrics import (
    MetricsObserver,
    PublishMetrics,
    failure_reason,
    usage_by_scope,
)
from offpost.workers.observe import Finished

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeSession:
    """Answers the observer's one query: when the last attempt started."""

    def __init__(self, started_at: datetime | None) -> None:
        self.started_at = started_at

    def scalar(self, _statement: Any) -> datetime | None:
        return self.started_at


def claimed(schedule_id: str | None = None, late_s: float = 30) -> ClaimedPost:
    return ClaimedPost(
        id="post_x",
        client_id="cli_x",
        credential_id="cred_x",
        target="page",
        message="hi",
        link=None,
        photo_url=None,
        media=None,
        first_comment=None,
        publish_at=NOW - timedelta(seconds=late_s),
        attempts=0,
        max_attempts=5,
        reconcile_since=None,
        schedule_id=schedule_id,
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def observer(registry: CollectorRegistry) -> MetricsObserver:
    return MetricsObserver(PublishMetrics(registry))


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_a_publish_counts_lateness_and_duration(
    observer: MetricsObserver, registry: CollectorRegistry
) -> None:
    session = FakeSession(NOW - timedelta(seconds=0.4))
    observer.posts_finished(
        session, [Finished(claimed(late_s=30), "published", {"status": "published"})], NOW
    )  # type: ignore[arg-type]
    assert value(registry, "offpost_posts_published_total", outcome="published") == 1
    assert value(registry, "offpost_publish_outcomes_total", outcome="published") == 1
    assert value(registry, "offpost_schedule_lateness_seconds_sum", kind="one_off") == 30
    assert value(registry, "offpost_publish_duration_seconds_sum") == pytest.approx(0.4)
    assert value(registry, "offpost_publish_duration_seconds_bucket", le="0.5") == 1


def test_a_recurring_reconciled_post_counts_as_recurring_without_duration(
    observer: MetricsObserver, registry: CollectorRegistry
) -> None:
    post = claimed(schedule_id="sched_x", late_s=5)
    observer.posts_finished(
        FakeSession(None), [Finished(post, "reconciled", {"status": "published"})], NOW
    )  # type: ignore[arg-type]
    assert value(registry, "offpost_posts_published_total", outcome="reconciled") == 1
    assert value(registry, "offpost_schedule_lateness_seconds_count", kind="recurring") == 1
    assert value(registry, "offpost_publish_duration_seconds_count") == 0


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"status": "failed", "last_error": {"code": 368, "message": "x"}}, "368"),
        ({"status": "failed", "last_error": {"code": "credential_deleted"}}, "credential_deleted"),
        ({"status": "failed", "reconcile_since": None}, "attempts_exhausted"),
        ({"status": "failed", "last_error": None}, "attempts_exhausted"),
    ],
)
def test_failures_count_by_reason(
    observer: MetricsObserver, registry: CollectorRegistry, values: dict[str, Any], reason: str
) -> None:
    assert failure_reason(values) == reason
    observer.posts_finished(FakeSession(None), [Finished(claimed(), "failed", values)], NOW)  # type: ignore[arg-type]
    assert value(registry, "offpost_posts_failed_total", reason=reason) == 1
    assert value(registry, "offpost_posts_published_total", outcome="published") == 0


def test_a_retry_is_only_an_outcome(observer: MetricsObserver, registry: CollectorRegistry) -> None:
    observer.posts_finished(
        FakeSession(None), [Finished(claimed(), "retry", {"status": "scheduled"})], NOW
    )  # type: ignore[arg-type]
    assert value(registry, "offpost_publish_outcomes_total", outcome="retry") == 1
    assert registry.get_sample_value("offpost_posts_failed_total", {"reason": "retry"}) is None


def test_graph_errors_count_by_code(observer: MetricsObserver, registry: CollectorRegistry) -> None:
    observer.graph_error(GraphAuthError("expired", code=190, subcode=463))
    observer.graph_error(GraphTimeoutError("read timeout"))
    assert value(registry, "offpost_graph_errors_total", code="190") == 1
    assert value(registry, "offpost_graph_errors_total", code="timeout") == 1


def test_usage_becomes_ratios_by_scope(
    observer: MetricsObserver, registry: CollectorRegistry
) -> None:
    usage = GraphUsage(
        app=UsageCounters(call_count_pct=28, total_time_pct=40),
        business=(
            BusinessUseCaseUsage("page", "pages", call_count_pct=90),
            BusinessUseCaseUsage("other", "pages", call_count_pct=10),
        ),
    )
    assert usage_by_scope(usage, "page") == {"app": 40, "business_use_case": 90}
    observer.graph_usage(usage, "page")
    assert value(registry, "offpost_graph_usage_ratio", scope="app") == pytest.approx(0.4)
    assert value(registry, "offpost_graph_usage_ratio", scope="business_use_case") == 0.9
    assert registry.get_sample_value("offpost_graph_usage_ratio", {"scope": "page"}) is None


def test_a_broken_session_never_escapes(
    observer: MetricsObserver, registry: CollectorRegistry
) -> None:
    class Broken:
        def scalar(self, _statement: Any) -> None:
            raise RuntimeError("database gone")

    observer.posts_finished(
        Broken(), [Finished(claimed(), "published", {"status": "published"})], NOW
    )  # type: ignore[arg-type]
    assert value(registry, "offpost_posts_published_total", outcome="published") == 1
