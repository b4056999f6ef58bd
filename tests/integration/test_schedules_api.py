"""``/v1/schedules`` over HTTP: preview against RFC 5545, the life of a schedule, and 422s."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time
from sqlalchemy.orm import Session, sessionmaker

from offpost.api.deps import get_now
from offpost.models import PostStatus, ScheduleEventKind
from offpost.scheduler.materialize import run_schedules
from tests.integration.schedules_support import (
    PAGE_ID,
    TEST_KEY,
    Owner,
    add_owner,
    api_settings,
    bearer,
    events_of,
    migrated,
    posts_of,
    schedules_api,
)
from tests.unit.rfc5545_examples import EXAMPLES, ZONE, Example
from tests.unit.test_recurrence_rfc5545 import expected_strings, start_of

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # a Monday


class Api:
    """The app, its database and a client with a credential."""

    def __init__(self, http: TestClient, sessions: sessionmaker[Session], owner: Owner) -> None:
        self.http = http
        self.sessions = sessions
        self.owner = owner
        self.now = NOW
        http.app.dependency_overrides[get_now] = lambda: self.now  # type: ignore[attr-defined]

    def call(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> httpx.Response:
        return self.http.request(method, path, json=body, headers=bearer(key or self.owner.key))

    def create(self, **fields: Any) -> dict[str, Any]:
        body = {
            "credential_id": self.owner.credential_id,
            "target": PAGE_ID,
            "message": "Good morning",
            "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
            "timezone": "Europe/Berlin",
            "start_at": "2026-12-01T00:00:00+01:00",
            **fields,
        }
        body = {k: v for k, v in body.items() if v is not None}
        response = self.call("POST", "/v1/schedules", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


def _api(database_url: str) -> Iterator[Api]:
    with migrated(database_url, TEST_KEY) as sessions:
        owner = add_owner(sessions)
        with schedules_api(api_settings(database_url, TEST_KEY)) as http:
            yield Api(http, sessions, owner)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    yield from _api(database_url)


@pytest.fixture(scope="module")
def preview_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path_factory.mktemp('preview') / 'offpost.db'}"
    yield from _api(url)


def preview(api: Api, body: dict[str, Any]) -> httpx.Response:
    return api.call("POST", "/v1/schedules/preview", body)


# --- preview ----------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_preview_gives_the_rfc5545_results(preview_api: Api, example: Example) -> None:
    response = preview(
        preview_api,
        {
            "rrule": example.rrule,
            "timezone": ZONE,
            "start_at": start_of(example).isoformat(),
            "limit": len(example.expected) + (0 if example.forever else 1),
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"occurrences": expected_strings(example)}


def test_preview_after_continues_the_sequence(preview_api: Api) -> None:
    body = {
        "rrule": "FREQ=WEEKLY;COUNT=10",
        "timezone": ZONE,
        "start_at": "1997-09-02T09:00:00-04:00",
    }
    everything = preview(preview_api, {**body, "limit": 20}).json()["occurrences"]
    later = preview(preview_api, {**body, "after": "1997-10-21T12:59:00Z", "limit": 20})
    assert later.json()["occurrences"] == everything[7:]
    assert everything[7:9] == ["1997-10-21T09:00:00-04:00", "1997-10-28T09:00:00-05:00"]


def test_preview_of_cron_in_lord_howe_shows_the_half_hour_shift(preview_api: Api) -> None:
    response = preview(
        preview_api,
        {
            "cron": "15 2 * * *",
            "timezone": "Australia/Lord_Howe",
            "start_at": "2026-10-03T00:00:00+10:30",
            "limit": 3,
        },
    )
    assert response.json()["occurrences"] == [
        "2026-10-03T02:15:00+10:30",
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]


def test_preview_needs_an_api_key(preview_api: Api) -> None:
    response = preview_api.http.post(
        "/v1/schedules/preview", json={"cron": "0 9 * * *", "timezone": "UTC"}
    )
    assert response.status_code == 401


PREVIEW_422 = [
    (
        {"rrule": "FREQ=DAILY;BYHOUR=25", "timezone": "UTC", "start_at": "2026-01-01T00:00:00Z"},
        "rrule",
    ),
    (
        {
            "rrule": "FREQ=DAILY",
            "cron": "0 9 * * *",
            "timezone": "UTC",
            "start_at": "2026-01-01T00:00:00Z",
        },
        "rrule",
    ),
    ({"timezone": "UTC", "start_at": "2026-01-01T00:00:00Z"}, "cron"),
    ({"cron": "0 9 * * *", "timezone": "Europe/Atlantis"}, "timezone"),
    ({"cron": "0 9 * *", "timezone": "UTC"}, "cron"),
    ({"rrule": "FREQ=DAILY", "timezone": "UTC"}, "start_at"),
    ({"rrule": "FREQ=DAILY", "timezone": "UTC", "start_at": "2026-01-01T09:00:00"}, "start_at"),
    (
        {
            "rrule": "FREQ=DAILY",
            "timezone": "UTC",
            "start_at": "2026-01-02T00:00:00Z",
            "end_at": "2026-01-01T00:00:00Z",
        },
        "end_at",
    ),
    # A counted rule replays from its start at every evaluation: bounded both ways.
    (
        {
            "rrule": "FREQ=MINUTELY;COUNT=999999",
            "timezone": "UTC",
            "start_at": "2026-11-01T00:00:00Z",
        },
        "rrule",
    ),
    ({"cron": "0 9 * * *", "timezone": "UTC", "limit": 1001}, "limit"),
    ({"cron": "0 9 * * *", "timezone": "UTC", "limit": 0}, "limit"),
    ({"cron": "0 9 * * *", "timezone": "UTC", "color": "red"}, "color"),
]


@pytest.mark.parametrize(("body", "field"), PREVIEW_422)
def test_preview_refuses_with_the_field_named(
    preview_api: Api, body: dict[str, Any], field: str
) -> None:
    response = preview(preview_api, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert [e["field"] for e in problem["errors"]] == [field]


def test_preview_of_1000_is_allowed(preview_api: Api) -> None:
    response = preview(preview_api, {"cron": "* * * * *", "timezone": "UTC", "limit": 1000})
    assert len(response.json()["occurrences"]) == 1000


# --- the life of a schedule -------------------------------------------------------------


def test_create_answers_upcoming_with_offsets_and_makes_the_first_posts(api: Api) -> None:
    created = api.create(message="Good morning {date}")
    assert created["id"].startswith("sched_")
    assert created["status"] == "active"
    assert created["next_run_at"] == "2026-12-01T08:00:00Z"
    assert created["upcoming"] == [f"2026-12-0{d}T09:00:00+01:00" for d in range(1, 6)]
    assert created["start_at"] == "2026-11-30T23:00:00Z"
    assert created["misfire"] == "skip"
    assert created["history"] == []
    posts = posts_of(api.sessions, created["id"])
    # The first 24 hours exist as ordinary posts already.
    assert [(p.occurrence_at, p.status, p.message) for p in posts] == [
        (datetime(2026, 12, 1, 8, tzinfo=UTC), PostStatus.SCHEDULED, "Good morning 2026-12-01")
    ]
    assert api.call("GET", f"/v1/schedules/{created['id']}").json() == created


def test_summer_upcoming_carries_the_summer_offset(api: Api) -> None:
    created = api.create(cron="0 9 * * 1", rrule=None, start_at=None)
    api.now = datetime(2027, 6, 1, tzinfo=UTC)
    shown = api.call("GET", f"/v1/schedules/{created['id']}").json()
    assert shown["upcoming"][0] == "2027-06-07T09:00:00+02:00"
    assert shown["next_run_at"] == "2027-06-07T07:00:00Z"


def test_pause_cancels_pending_posts_and_resume_brings_them_back(api: Api) -> None:
    created = api.create(rrule="FREQ=HOURLY;BYMINUTE=0", start_at="2026-11-30T12:00:00Z")
    schedule_id = created["id"]
    pending = [p.id for p in posts_of(api.sessions, schedule_id)]
    assert len(pending) == 25

    paused = api.call("PATCH", f"/v1/schedules/{schedule_id}", {"status": "paused"}).json()
    assert paused["status"] == "paused"
    assert (paused["next_run_at"], paused["upcoming"]) == (None, [])
    assert {p.status for p in posts_of(api.sessions, schedule_id)} == {PostStatus.CANCELED}
    assert posts_of(api.sessions, schedule_id)[0].last_error["code"] == "schedule_paused"  # type: ignore[index]
    # The dispatcher leaves a paused schedule alone.
    assert run_schedules(api.sessions, api.now + timedelta(hours=5)).created == 0

    api.now += timedelta(hours=5, minutes=30)
    resumed = api.call("PATCH", f"/v1/schedules/{schedule_id}", {"status": "active"}).json()
    assert resumed["next_run_at"] == "2026-11-30T18:00:00Z"
    posts = posts_of(api.sessions, schedule_id)
    scheduled = [p for p in posts if p.status == PostStatus.SCHEDULED]
    assert scheduled[0].occurrence_at == datetime(2026, 11, 30, 18, tzinfo=UTC)
    # Occurrences during the pause stay canceled; the future ones are the same posts again.
    revived = [p for p in scheduled if p.occurrence_at <= datetime(2026, 12, 1, 12, tzinfo=UTC)]
    assert len(revived) == 19
    assert {p.id for p in revived} <= set(pending)
    assert all(p.last_error is None for p in scheduled)
    canceled = [p.occurrence_at for p in posts if p.status == PostStatus.CANCELED]
    assert canceled == [datetime(2026, 11, 30, h, tzinfo=UTC) for h in range(12, 18)]
    kinds = [e["kind"] for e in resumed["history"]]
    assert kinds == ["resumed", "paused"]


def test_a_content_change_remakes_future_occurrences_only(api: Api) -> None:
    created = api.create(rrule="FREQ=HOURLY;BYMINUTE=0", start_at="2026-11-30T12:00:00Z")
    schedule_id = created["id"]
    api.now += timedelta(minutes=30)  # 12:00 is due and left alone
    changed = api.call(
        "PATCH",
        f"/v1/schedules/{schedule_id}",
        {"message": "New text", "link": "https://example.com/x"},
    )
    assert changed.status_code == 200, changed.text
    posts = {p.occurrence_at: p for p in posts_of(api.sessions, schedule_id)}
    assert posts[datetime(2026, 11, 30, 12, tzinfo=UTC)].message == "Good morning"
    future = [p for t, p in posts.items() if t > api.now]
    assert future
    assert all(
        (p.status, p.message, p.link) == (PostStatus.SCHEDULED, "New text", "https://example.com/x")
        for p in future
    )
    assert changed.json()["history"][0]["kind"] == "updated"
    assert changed.json()["history"][0]["detail"] == {"fields": ["link", "message"]}


def test_a_rule_change_cancels_old_times_and_makes_new_ones(api: Api) -> None:
    created = api.create(rrule="FREQ=HOURLY;BYMINUTE=0", start_at="2026-11-30T12:00:00Z")
    changed = api.call(
        "PATCH", f"/v1/schedules/{created['id']}", {"cron": "30 */6 * * *", "timezone": "UTC"}
    ).json()
    assert (changed["rrule"], changed["cron"]) == (None, "30 */6 * * *")
    assert changed["upcoming"][:2] == ["2026-11-30T12:30:00+00:00", "2026-11-30T18:30:00+00:00"]
    scheduled = [
        p.occurrence_at
        for p in posts_of(api.sessions, created["id"])
        if p.status == PostStatus.SCHEDULED
    ]
    assert all(t.minute == 30 for t in scheduled if t > NOW)  # type: ignore[union-attr]
    canceled = [p for p in posts_of(api.sessions, created["id"]) if p.status == PostStatus.CANCELED]
    assert canceled
    assert all(p.last_error["code"] == "schedule_changed" for p in canceled)  # type: ignore[index]


def test_delete_cancels_unpublished_posts_and_keeps_the_schedule_readable(api: Api) -> None:
    created = api.create()
    schedule_id = created["id"]
    deleted = api.call("DELETE", f"/v1/schedules/{schedule_id}")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "deleted"
    assert {p.status for p in posts_of(api.sessions, schedule_id)} == {PostStatus.CANCELED}
    assert api.call("GET", f"/v1/schedules/{schedule_id}").json()["status"] == "deleted"
    assert api.call("DELETE", f"/v1/schedules/{schedule_id}").status_code == 200
    assert (
        api.call("PATCH", f"/v1/schedules/{schedule_id}", {"status": "active"}).status_code == 409
    )
    assert api.call("GET", "/v1/schedules").json()["schedules"] == []
    listed = api.call("GET", "/v1/schedules?status=deleted").json()["schedules"]
    assert [s["id"] for s in listed] == [schedule_id]
    assert [e.kind for e in events_of(api.sessions, schedule_id)] == [ScheduleEventKind.DELETED]
    assert run_schedules(api.sessions, api.now).schedules == 0


def test_list_is_newest_first_with_a_cursor(api: Api) -> None:
    ids = []
    for minutes in range(3):
        api.now = NOW + timedelta(minutes=minutes)
        ids.append(api.create()["id"])
    first = api.call("GET", "/v1/schedules?limit=2").json()
    assert [s["id"] for s in first["schedules"]] == ids[::-1][:2]
    rest = api.call("GET", f"/v1/schedules?limit=2&cursor={first['next_cursor']}").json()
    assert [s["id"] for s in rest["schedules"]] == ids[:1]
    assert rest["next_cursor"] is None
    assert api.call("GET", "/v1/schedules?cursor=nonsense").status_code == 422


def test_another_clients_schedule_is_404(api: Api) -> None:
    created = api.create()
    mallory = add_owner(api.sessions, "mallory")
    for method, body in (("GET", None), ("PATCH", {"status": "paused"}), ("DELETE", None)):
        response = api.call(method, f"/v1/schedules/{created['id']}", body, key=mallory.key)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert api.call("GET", "/v1/schedules/sched_nope").status_code == 404


CREATE_422 = [
    ({"rrule": "FREQ=DAILY;BYHOUR=9;WHATEVER=1"}, "rrule"),
    ({"rrule": None}, "cron"),
    ({"cron": "0 9 * * *"}, "rrule"),
    ({"timezone": "Nowhere/Special"}, "timezone"),
    ({"end_at": "2026-11-01T00:00:00Z"}, "end_at"),
    # Counted from long ago: refused for its start (it would be re-counted at every tick).
    ({"rrule": "FREQ=DAILY;COUNT=2", "start_at": "2020-01-01T00:00:00Z"}, "start_at"),
    ({"rrule": "FREQ=DAILY;COUNT=2", "start_at": "2026-01-01T00:00:00Z"}, "rrule"),
    ({"message": None}, "message"),
    ({"link": "ftp://example.com/file"}, "link"),
    ({"misfire": "sometimes"}, "misfire"),
    ({"credential_id": "cred_00000000000000000000"}, "credential_id"),
    ({"target": "999"}, "target"),
]


@pytest.mark.parametrize(("change", "field"), CREATE_422)
def test_create_refuses_with_the_field_named(api: Api, change: dict[str, Any], field: str) -> None:
    body = {
        "credential_id": api.owner.credential_id,
        "target": PAGE_ID,
        "message": "hi",
        "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
        "timezone": "Europe/Berlin",
        "start_at": "2026-12-01T00:00:00+01:00",
        **change,
    }
    response = api.call("POST", "/v1/schedules", {k: v for k, v in body.items() if v is not None})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_patch_refuses_a_bad_rule_and_changes_nothing(api: Api) -> None:
    created = api.create()
    response = api.call(
        "PATCH", f"/v1/schedules/{created['id']}", {"rrule": "FREQ=DAILY;BYHOUR=99"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "rrule"
    both = api.call(
        "PATCH", f"/v1/schedules/{created['id']}", {"rrule": "FREQ=DAILY", "cron": "0 9 * * *"}
    )
    assert both.status_code == 422
    shown = api.call("GET", f"/v1/schedules/{created['id']}").json()
    assert shown["rrule"] == created["rrule"]
    assert shown["history"] == []


def test_a_week_of_an_api_made_schedule_under_freezegun(api: Api) -> None:
    with freeze_time(NOW) as clock:
        api.now = NOW
        created = api.create(cron="0 9 * * 1-5", rrule=None, start_at=None)
        for _ in range(7 * 24):
            clock.tick(timedelta(hours=1))
            api.now = datetime.now(UTC)
            run_schedules(api.sessions, api.now)
    occurrences = [p.occurrence_at for p in posts_of(api.sessions, created["id"])]
    assert len(occurrences) == len(set(occurrences))
    # Tuesday 1 December to Monday 7 December, weekdays at 09:00 CET, plus Tuesday 8 (horizon).
    days = [1, 2, 3, 4, 7, 8]
    assert occurrences == [datetime(2026, 12, d, 8, tzinfo=UTC) for d in days]


def test_a_counted_schedule_may_not_start_long_ago(api: Api) -> None:
    """Stored, it is evaluated again and again, each time counting from its start."""
    response = api.call(
        "POST",
        "/v1/schedules",
        {
            "credential_id": api.owner.credential_id,
            "target": PAGE_ID,
            "message": "leap hours",
            "rrule": "FREQ=HOURLY;COUNT=9999;BYMONTH=2;BYMONTHDAY=29",
            "timezone": "UTC",
            "start_at": "0001-01-01T00:00:00Z",
        },
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["start_at"]
    assert "at most a year in the past" in response.json()["detail"]
