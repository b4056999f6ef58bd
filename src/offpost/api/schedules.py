"""``/v1/schedules``: recurring posts (the OpenAPI document).

Thin handlers over :mod:`offpost.recurrence` (the rule) and
:mod:`offpost.scheduler.materialize` (its posts). Behaviour worth knowing:

- Creating, resuming or changing a schedule materialises its first
  occurrences at once (up to the dispatcher's horizon, 24 h), so they are
  visible in ``GET /v1/posts?schedule_id=…`` straight away; the dispatcher
  keeps extending them. Occurrences before the creation are not misfires.
- ``next_run_at`` is the next occurrence from now and ``upcoming`` the next
  five with the zone's offset; both empty while paused, deleted or ended.
- Pausing cancels the schedule's pending posts (never-attempted ``scheduled``
  ones; ``last_error.code = "schedule_paused"``); resuming re-materialises from
  now and revives those of them still in the future. Posts already handed to a
  worker finish.
- Changing content or rule affects future occurrences only: pending posts
  after now are canceled (``schedule_changed``) and re-made from the new
  schedule.
- ``DELETE`` cancels every unpublished post (``schedule_deleted``) and marks
  the schedule ``deleted``: it stays readable (``GET`` shows it with its
  history, ``GET /v1/schedules?status=deleted`` lists it), cannot be changed
  (409), and a second ``DELETE`` answers the same.
- ``credential_id`` and ``target`` are checked as for posts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from offpost.api.deps import ClientDep, NowDep, SessionDep, SettingsDep, read_cursor
from offpost.api.problems import ProblemError, field_error, quota_problem
from offpost.api.schedule_schemas import (
    HISTORY_COUNT,
    UPCOMING_COUNT,
    PreviewOut,
    ScheduleCreate,
    ScheduleDetail,
    ScheduleEventOut,
    ScheduleList,
    ScheduleOut,
    SchedulePreview,
    ScheduleUpdate,
)
from offpost.media.budgets import REELS_PER_DAY
from offpost.media.spec import spec_kind, spec_media_ids
from offpost.media.uses import record_uses
from offpost.models import (
    Credential,
    IdPrefix,
    Schedule,
    ScheduleEvent,
    ScheduleEventKind,
    ScheduleStatus,
    is_id,
)
from offpost.posts import quotas
from offpost.posts.media import check_uploads, media_spec, spec_problems
from offpost.posts.quotas import QuotaDefaults, QuotaExceededError, Quotas
from offpost.posts.rules import (
    PostInputError,
    content_problem,
    encode_cursor,
    initial_status,
    older_than,
    split_page,
)
from offpost.recurrence import Recurrence, RuleError, format_local, parse_rule
from offpost.scheduler import materialize

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

_AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "no or bad API key"}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such schedule for this client"},
    **_AUTH,
}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": "invalid_request; errors[].field names the bad field"},
}
_QUOTAS: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "invalid_request (errors[].field names the bad field), or "
        "quota_exceeded: the rule makes more posts in a day than the client's "
        "occurrences_per_day quota (`quota` names it)"
    },
}
_CREATE_409 = (
    "the credential is deleted, or quota_exceeded: the client's active_schedules quota is reached"
)
_UPDATE_409 = (
    "the schedule is deleted, or quota_exceeded: resuming it would pass the client's "
    "active_schedules quota"
)
_RULE_FIELDS = frozenset({"rrule", "cron", "timezone", "start_at", "end_at"})
_MEDIA_FIELDS = frozenset({"photos", "video", "reel"})
_CONTENT_FIELDS = frozenset(
    {"credential_id", "target", "message", "link", "photo_url", "first_comment"}
) | (_MEDIA_FIELDS)


def _problem(exc: RuleError) -> ProblemError:
    return field_error(exc.field, exc.message)


def _parse(
    rrule: str | None,
    cron: str | None,
    timezone: str,
    start_at: datetime | None,
    end_at: datetime | None,
    now: datetime,
    *,
    stored: bool = True,
) -> Recurrence:
    """The validated recurrence; a missing start means now (cron only). A rule to be
    ``stored`` is evaluated again and again as it ages: a counted one may not start
    long ago (a preview is evaluated once, its COUNT bounds it)."""
    if start_at is None:
        if rrule is not None:
            raise field_error("start_at", "is required with rrule (it is the rule's DTSTART)")
        start_at = now.replace(second=0, microsecond=0)
    try:
        return parse_rule(
            rrule=rrule,
            cron=cron,
            timezone=timezone,
            start_at=start_at,
            end_at=end_at,
            now=now if stored else None,
        )
    except RuleError as exc:
        raise _problem(exc) from exc


def _check_credential(session: Session, client_id: str, credential_id: str, target: str) -> None:
    credential = session.scalars(
        select(Credential).where(Credential.id == credential_id, Credential.client_id == client_id)
    ).one_or_none()
    verdict = initial_status(credential, target)
    if not isinstance(verdict, str):  # a FieldProblem
        raise ProblemError(
            verdict.code,
            f"{verdict.field}: {verdict.message}",
            errors=[{"field": verdict.field, "message": verdict.message}],
        )


def _check_content(
    message: str | None, link: str | None, photo_url: str | None, media: object = None
) -> None:
    why = content_problem(message, link, photo_url, media)
    if why is not None:
        raise field_error("message", why)


def _check_media(
    session: Session,
    client_id: str,
    body: ScheduleCreate | ScheduleUpdate,
    message: str | None,
    link: str | None,
    photo_url: str | None,
) -> dict[str, Any] | None:
    """The schedule's media spec from ``body``, checked as a post's; raises a 422."""
    problems = spec_problems(
        message=message,
        link=link,
        photo_url=photo_url,
        photos=body.photos,
        video=body.video,
        reel=body.reel,
    )
    spec = media_spec(body.photos, body.video, body.reel)
    if not problems:
        problems = check_uploads(session, client_id, spec)[1]
    if problems:
        error = PostInputError(problems)
        raise ProblemError(
            error.code,
            str(error),
            errors=[{"field": p.field, "message": p.message} for p in problems],
        )
    return spec


def _check_reel_rule(
    spec: dict[str, Any] | None, recurrence: Recurrence, now: datetime, limits: Quotas
) -> None:
    """A Reel schedule may not ask for more Reels a day than Graph lets a Page publish."""
    if spec_kind(spec) != "reel":
        return
    try:
        quotas.check_rule(
            recurrence, now, dataclasses.replace(limits, occurrences_per_day=REELS_PER_DAY)
        )
    except QuotaExceededError:
        raise field_error(
            "reel",
            f"the rule makes more than {REELS_PER_DAY} Reels in some 24 hours; Graph lets a "
            f"Page publish at most {REELS_PER_DAY} through the API",
        ) from None


def future_runs(schedule: Schedule, now: datetime) -> tuple[datetime | None, list[str]]:
    """``next_run_at`` and the next five runs with the zone's offset (none unless active)."""
    if schedule.status != ScheduleStatus.ACTIVE:
        return None, []
    try:
        recurrence = materialize.recurrence_of(schedule)
    except RuleError:
        return None, []
    upcoming = recurrence.upcoming(now, UPCOMING_COUNT)
    return (upcoming[0] if upcoming else None), [format_local(i, recurrence.zone) for i in upcoming]


def _out(schedule: Schedule, now: datetime) -> ScheduleOut:
    next_run_at, upcoming = future_runs(schedule, now)
    return ScheduleOut(
        **ScheduleOut.fields_of(schedule), next_run_at=next_run_at, upcoming=upcoming
    )


def schedule_detail(session: Session, schedule: Schedule, now: datetime) -> ScheduleDetail:
    """The schedule as ``GET /v1/schedules/{id}`` answers it, history included."""
    next_run_at, upcoming = future_runs(schedule, now)
    events = session.scalars(
        select(ScheduleEvent)
        .where(ScheduleEvent.schedule_id == schedule.id)
        .order_by(ScheduleEvent.id.desc())
        .limit(HISTORY_COUNT)
    ).all()
    return ScheduleDetail(
        **ScheduleOut.fields_of(schedule),
        next_run_at=next_run_at,
        upcoming=upcoming,
        history=[ScheduleEventOut.of(e) for e in events],
    )


def _load_own(
    session: Session, client_id: str, schedule_id: str, *, for_update: bool = False
) -> Schedule:
    """The client's schedule, or 404 (another client's id included)."""
    if not is_id(schedule_id, IdPrefix.SCHEDULE):
        raise ProblemError("not_found", f"no schedule {schedule_id}")
    query = select(Schedule).where(Schedule.id == schedule_id, Schedule.client_id == client_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        # Waits for a dispatcher that is materialising this schedule right now.
        query = query.with_for_update()
    schedule = session.scalars(query).one_or_none()
    if schedule is None:
        raise ProblemError("not_found", f"no schedule {schedule_id}")
    return schedule


@router.post(
    "/preview",
    response_model=PreviewOut,
    summary="The occurrences of a rule (nothing is stored)",
    responses={**_INVALID, **_AUTH},
)
def preview_schedule(body: SchedulePreview, _: ClientDep, now: NowDep) -> PreviewOut:
    recurrence = _parse(
        body.rrule, body.cron, body.timezone, body.start_at, body.end_at, now, stored=False
    )
    occurrences = itertools.islice(recurrence.occurrences(body.after), body.limit)
    return PreviewOut(occurrences=[format_local(i, recurrence.zone) for i in occurrences])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleDetail,
    summary="Create a recurring post",
    responses={**_INVALID, **_QUOTAS, 409: {"description": _CREATE_409}, **_AUTH},
)
def create_schedule(
    body: ScheduleCreate, client: ClientDep, session: SessionDep, settings: SettingsDep, now: NowDep
) -> ScheduleDetail:
    recurrence = _parse(body.rrule, body.cron, body.timezone, body.start_at, body.end_at, now)
    spec = _check_media(session, client.id, body, body.message, body.link, body.photo_url)
    _check_content(body.message, body.link, body.photo_url, spec)
    _check_credential(session, client.id, body.credential_id, body.target)
    _require_future(recurrence, now, "rrule" if body.rrule is not None else "cron")
    limits = QuotaDefaults.of(settings).for_client(client)
    _check_reel_rule(spec, recurrence, now, limits)
    with _quota_answers():
        quotas.check_rule(recurrence, now, limits)
        quotas.check_new_active_schedule(session, client.id, limits)
    schedule = Schedule(
        client_id=client.id,
        credential_id=body.credential_id,
        target=body.target,
        message=body.message,
        link=body.link,
        photo_url=body.photo_url,
        media=spec,
        first_comment=body.first_comment,
        rrule=body.rrule,
        cron=body.cron,
        timezone=body.timezone,
        start_at=recurrence.start_at,
        end_at=body.end_at,
        misfire=body.misfire,
        status=ScheduleStatus.ACTIVE,
        occurrences_created=0,
        created_at=now,
        updated_at=now,
    )
    materialize.restart_schedule(schedule, recurrence, now)
    session.add(schedule)
    session.flush()
    if media_ids := spec_media_ids(spec):
        record_uses(session, media_ids, schedule_id=schedule.id)
    materialize.materialize_schedule(
        session, schedule, now, occurrences_per_day=limits.occurrences_per_day
    )
    session.commit()
    return schedule_detail(session, schedule, now)


@contextlib.contextmanager
def _quota_answers() -> Iterator[None]:
    try:
        yield
    except quotas.QuotaExceededError as exc:
        raise quota_problem(exc) from exc


def _require_future(recurrence: Recurrence, now: datetime, field: str) -> None:
    if next(recurrence.occurrences(now, inclusive=True), None) is None:
        raise field_error(field, "the rule has no occurrence after now")


@router.get(
    "",
    response_model=ScheduleList,
    summary="This client's schedules, newest first",
    responses={**_INVALID, **_AUTH},
)
def list_schedules(
    client: ClientDep,
    session: SessionDep,
    now: NowDep,
    status_: Annotated[ScheduleStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ScheduleList:
    query = select(Schedule).where(Schedule.client_id == client.id)
    if status_ is None:
        query = query.where(Schedule.status != ScheduleStatus.DELETED)
    else:
        query = query.where(Schedule.status == status_)
    after = read_cursor(cursor, IdPrefix.SCHEDULE)
    if after is not None:
        query = query.where(older_than(Schedule.created_at, Schedule.id, after))
    rows = session.scalars(
        query.order_by(Schedule.created_at.desc(), Schedule.id.desc()).limit(limit + 1)
    ).all()
    page, next_page = split_page(rows, limit, lambda s: (s.created_at, s.id))
    next_cursor = encode_cursor(next_page) if next_page else None
    return ScheduleList(schedules=[_out(s, now) for s in page], next_cursor=next_cursor)


@router.get(
    "/{schedule_id}",
    response_model=ScheduleDetail,
    summary="One schedule, with its upcoming occurrences and history",
    responses=_NOT_FOUND,
)
def get_schedule(
    schedule_id: str, client: ClientDep, session: SessionDep, now: NowDep
) -> ScheduleDetail:
    return schedule_detail(session, _load_own(session, client.id, schedule_id), now)


@router.patch(
    "/{schedule_id}",
    response_model=ScheduleDetail,
    summary="Pause, resume, or change content or rule (future occurrences only)",
    responses={**_INVALID, **_QUOTAS, 409: {"description": _UPDATE_409}, **_NOT_FOUND},
)
def update_schedule(
    schedule_id: str,
    body: ScheduleUpdate,
    client: ClientDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> ScheduleDetail:
    schedule = change_schedule(
        session,
        client.id,
        schedule_id,
        QuotaDefaults.of(settings).for_client(client),
        now,
        status=body.status,
        changes=lambda found: _apply_changes(session, found, body, client.id, now),
        touched=bool(body.model_fields_set),
    )
    return schedule_detail(session, schedule, now)


def change_schedule(
    session: Session,
    client_id: str,
    schedule_id: str,
    limits: Quotas,
    now: datetime,
    *,
    status: Literal["active", "paused"] | None,
    changes: Callable[[Schedule], bool] | None = None,
    touched: bool = True,
) -> Schedule:
    """Pause, resume and/or change one of ``client_id``'s schedules, then commit.

    ``PATCH /v1/schedules/{id}`` and the dashboard's Pause and Resume buttons both
    come here, so both cancel the pending posts on pause, re-materialise on resume
    and check the client's quotas (``limits``) the same way. ``changes`` applies
    everything but the status and says whether posts must be re-made; ``touched``
    whether ``updated_at`` moves. Raises :class:`ProblemError` (404; 409 for a
    deleted schedule or the active_schedules quota; 422) before committing
    anything: the caller rolls the session back.
    """
    if status == "active":
        # Locks the client's row before the schedule's, as creation does.
        with _quota_answers():
            quotas.lock_client(session, client_id)
    schedule = _load_own(session, client_id, schedule_id, for_update=True)
    if schedule.status == ScheduleStatus.DELETED:
        raise ProblemError("conflict", f"schedule {schedule_id} is deleted")
    if status == "active" and schedule.status == ScheduleStatus.PAUSED:
        with _quota_answers():
            quotas.check_new_active_schedule(session, client_id, limits)
    changed = changes(schedule) if changes is not None else False
    resumed = False
    if status == "paused" and schedule.status == ScheduleStatus.ACTIVE:
        materialize.cancel_pending_posts(session, schedule.id, now, materialize.SCHEDULE_PAUSED)
        schedule.status = ScheduleStatus.PAUSED
        materialize.record_events(session, schedule.id, ScheduleEventKind.PAUSED, now)
    elif status == "active" and schedule.status == ScheduleStatus.PAUSED:
        schedule.status = ScheduleStatus.ACTIVE
        resumed = True
        materialize.record_events(session, schedule.id, ScheduleEventKind.RESUMED, now)
    if schedule.status == ScheduleStatus.ACTIVE and (changed or resumed):
        recurrence = materialize.recurrence_of(schedule)
        with _quota_answers():
            quotas.check_rule(recurrence, now, limits)
        materialize.restart_schedule(schedule, recurrence, now)
        materialize.materialize_schedule(
            session, schedule, now, occurrences_per_day=limits.occurrences_per_day
        )
    if touched:
        schedule.updated_at = now
    session.commit()
    return schedule


def _apply_changes(
    session: Session, schedule: Schedule, body: ScheduleUpdate, client_id: str, now: datetime
) -> bool:
    """Validate and apply everything but ``status``; whether posts must be re-made."""
    given = body.model_fields_set - {"status"}
    for name in ("credential_id", "target", "timezone", "misfire"):
        if name in given and getattr(body, name) is None:
            raise field_error(name, "must not be null")
    rule_changed = bool(given & _RULE_FIELDS)
    content_changed = bool(given & _CONTENT_FIELDS)
    if rule_changed:
        if "rrule" in given or "cron" in given:
            rrule = body.rrule if "rrule" in given else None
            cron = body.cron if "cron" in given else None
        else:
            rrule, cron = schedule.rrule, schedule.cron
        timezone = body.timezone if body.timezone is not None else schedule.timezone
        start_at = body.start_at if "start_at" in given else schedule.start_at
        end_at = body.end_at if "end_at" in given else schedule.end_at
        recurrence = _parse(rrule, cron, timezone, start_at, end_at, now)
        _require_future(recurrence, now, "rrule" if rrule is not None else "cron")
        schedule.rrule, schedule.cron, schedule.timezone = rrule, cron, timezone
        schedule.start_at, schedule.end_at = recurrence.start_at, end_at
    if content_changed:
        message = body.message if "message" in given else schedule.message
        link = body.link if "link" in given else schedule.link
        photo_url = body.photo_url if "photo_url" in given else schedule.photo_url
        media = schedule.media
        if given & _MEDIA_FIELDS:
            media = _check_media(session, client_id, body, message, link, photo_url)
            if media_ids := spec_media_ids(media):
                record_uses(session, media_ids, schedule_id=schedule.id)
            schedule.media = media
        elif media is not None and (photo_url is not None or link is not None):
            # The kept media must still go with the new content.
            kind = spec_kind(media)
            if photo_url is not None or kind in ("video", "reel"):
                raise field_error(
                    "photo_url" if photo_url is not None else "link",
                    f"the schedule has {kind}: clear it (null) to change to this",
                )
        _check_content(message, link, photo_url, media)
        credential_id = body.credential_id or schedule.credential_id
        target = body.target or schedule.target
        if "credential_id" in given or "target" in given:
            _check_credential(session, client_id, credential_id, target)
        schedule.message, schedule.link, schedule.photo_url = message, link, photo_url
        if "first_comment" in given:
            schedule.first_comment = body.first_comment
        schedule.credential_id, schedule.target = credential_id, target
    if body.misfire is not None:
        schedule.misfire = body.misfire
    if rule_changed or content_changed:
        if schedule.status == ScheduleStatus.ACTIVE:
            materialize.cancel_pending_posts(
                session, schedule.id, now, materialize.SCHEDULE_CHANGED, after=now
            )
        materialize.record_events(
            session,
            schedule.id,
            ScheduleEventKind.UPDATED,
            now,
            [(None, {"fields": sorted(given - {"misfire"})})],
        )
    return rule_changed or content_changed


@router.delete(
    "/{schedule_id}",
    response_model=ScheduleDetail,
    summary="Delete: cancel its unpublished posts; the schedule stays readable as deleted",
    responses=_NOT_FOUND,
)
def delete_schedule(
    schedule_id: str, client: ClientDep, session: SessionDep, now: NowDep
) -> ScheduleDetail:
    schedule = _load_own(session, client.id, schedule_id, for_update=True)
    if schedule.status != ScheduleStatus.DELETED:
        materialize.cancel_unpublished_posts(session, schedule.id, now)
        schedule.status = ScheduleStatus.DELETED
        schedule.next_run_at = None
        schedule.updated_at = now
        materialize.record_events(session, schedule.id, ScheduleEventKind.DELETED, now)
        session.commit()
    return schedule_detail(session, schedule, now)
