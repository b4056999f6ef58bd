"""The pure parts of the operators' numbers: percentiles and the scrape-time gauge families."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from offpost.api.exporter import DatabaseGauges, gauge_families
from offpost.models import CredentialStatus, PostStatus
from offpost.posts.stats import percentiles


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], []),
        ([7.0], [7.0, 7.0, 7.0]),
        ([1.0, 2.0], [1.5, 1.95, 1.99]),
        ([float(v) for v in range(1, 11)], [5.5, 9.55, 9.91]),
        # Order does not matter; the input is not sorted in place.
        ([10.0, 1.0, 5.0, 3.0], [4.0, 9.25, 9.85]),
        ([0.0] * 99 + [100.0], [0.0, 0.0, 1.0]),
    ],
)
def test_percentiles_interpolate_like_percentile_cont(
    values: list[float], expected: list[float]
) -> None:
    assert percentiles(values) == pytest.approx(expected)


def test_percentile_bounds() -> None:
    assert percentiles([3.0, 1.0, 2.0], (0.0, 1.0)) == [1.0, 3.0]
    with pytest.raises(ValueError, match="fraction"):
        percentiles([1.0], (1.5,))


def _render(gauges: DatabaseGauges, queue_depth: int | None) -> str:
    class Fixed(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return gauge_families(gauges, queue_depth)

    registry = CollectorRegistry()
    registry.register(Fixed())
    return generate_latest(registry).decode()


GAUGES = DatabaseGauges(
    posts={status: i for i, status in enumerate(PostStatus)},
    due_not_dispatched=4,
    due_oldest_age_s=12.5,
    credentials={status: 1 for status in CredentialStatus},
)


def test_gauge_families_name_every_status() -> None:
    text = _render(GAUGES, 7)
    for i, status in enumerate(PostStatus):
        assert f'offpost_posts{{status="{status.value}"}} {float(i)}' in text
    for status in CredentialStatus:
        assert f'offpost_credentials{{status="{status.value}"}} 1.0' in text
    assert "offpost_posts_due_not_dispatched 4.0" in text
    assert "offpost_posts_due_oldest_age_seconds 12.5" in text
    assert "offpost_queue_depth_messages 7.0" in text
    assert "# TYPE offpost_posts gauge" in text


def test_unknown_queue_depth_is_left_out() -> None:
    assert "offpost_queue_depth_messages" not in _render(GAUGES, None)
