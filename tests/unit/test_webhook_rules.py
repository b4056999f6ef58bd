"""Pure rules of webhooks and the token check: backoff, the retry window, URLs, warnings, dedupe."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from offpost.api.webhooks import check_webhook_url
from offpost.models import EventType
from offpost.outbox import event_document, expiring_dedupe_key
from offpost.tokens.expiry import due_warning
from offpost.workers.app import make_celery
from offpost.workers.webhooks import DeliveryPolicy

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "low_s", "high_s"),
    [(1, 15, 30), (2, 30, 60), (3, 60, 120), (7, 960, 1920), (8, 1800, 3600), (20, 1800, 3600)],
)
def test_backoff_doubles_with_jitter_up_to_the_cap(
    attempt: int, low_s: float, high_s: float
) -> None:
    policy = DeliveryPolicy(base_s=30, cap_s=3600, retry_for_s=86400)
    rng = random.Random(attempt)
    for _ in range(50):
        at = policy.next_attempt_at(T0, attempt, T0, rng)
        assert at is not None
        assert timedelta(seconds=low_s) <= at - T0 <= timedelta(seconds=high_s)


def test_the_last_attempt_is_at_the_end_of_the_window_then_it_gives_up() -> None:
    policy = DeliveryPolicy(base_s=30, cap_s=3600, retry_for_s=86400)
    end = T0 + timedelta(days=1)
    almost = end - timedelta(seconds=5)
    assert policy.next_attempt_at(T0, 25, almost, random.Random(1)) == end
    assert policy.next_attempt_at(T0, 26, end, random.Random(1)) is None
    assert policy.next_attempt_at(T0, 26, end + timedelta(seconds=1)) is None


def test_the_event_document_is_compact_and_ordered() -> None:
    body = event_document(
        "evt_0vB4kq9TzLr2mWc8xYpA",
        EventType.POST_PUBLISHED,
        T0 + timedelta(microseconds=123),
        {"id": "post_1", "message": "héllo"},
    )
    assert body.startswith('{"id":"evt_0vB4kq9TzLr2mWc8xYpA","type":"post.published",')
    assert json.loads(body) == {
        "id": "evt_0vB4kq9TzLr2mWc8xYpA",
        "type": "post.published",
        "created_at": "2026-12-01T08:00:00Z",
        "data": {"id": "post_1", "message": "héllo"},
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://example.com:8443/a?b=c",
        # Well-formed; whether offpost may send there is offpost.addresses' to say.
        "http://localhost:8080/hook",
        "http://[::1]:9000/x",
    ],
)
def test_webhook_urls_well_formed(url: str) -> None:
    assert check_webhook_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "example.com/hook",
        "https://user:pw@example.com/",
        "https:///nohost",
        "",
    ],
)
def test_webhook_urls_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_webhook_url(url)


WARNINGS = (14, 3, 1)


@pytest.mark.parametrize(
    ("expires_in", "due"),
    [
        (None, None),  # never expires
        (timedelta(days=30), None),
        (timedelta(days=14, seconds=1), None),
        (timedelta(days=14), 14),
        (timedelta(days=5), 14),
        (timedelta(days=3), 3),
        # A sweep that missed the 14- and 3-day marks warns once, for the nearest.
        (timedelta(hours=20), 1),
        (timedelta(seconds=-1), None),  # already past: user_token_expired says it
    ],
)
def test_the_warning_due_is_the_nearest_mark_reached(
    expires_in: timedelta | None, due: int | None
) -> None:
    expires_at = T0 + expires_in if expires_in is not None else None
    assert due_warning(expires_at, T0, WARNINGS) == due


def test_expiring_is_deduplicated_per_expiry_date() -> None:
    key = expiring_dedupe_key("cred_1", T0, 14)
    assert key == expiring_dedupe_key("cred_1", T0, 14)
    assert key != expiring_dedupe_key("cred_1", T0, 3)
    assert key != expiring_dedupe_key("cred_1", T0 + timedelta(days=60), 14)
    assert key != expiring_dedupe_key("cred_2", T0, 14)


def test_workers_send_task_events_for_flower() -> None:
    conf = make_celery("memory://").conf
    assert conf.worker_send_task_events is True
    assert conf.task_send_sent_event is True
