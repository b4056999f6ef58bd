"""``/admin``: the operators' dashboard, server-rendered HTML (Jinja2, no JavaScript).

Pages (``GET``) and actions (``POST``, each a form with a CSRF token):

- ``/admin/login`` — the sign-in form; ``POST`` it the admin key to get the
  session cookie (:mod:`.session`), then ``303`` to ``/admin``;
- ``/admin`` — counts by status and the rest of the stats document
  (:func:`~offpost.posts.stats.collect_stats`, the same numbers as
  ``GET /v1/admin/stats``), the chart, the credentials expiring soon, and every
  client's posts with a preview of their message and their Page's name,
  filterable by status, target, client, credential and schedule, a page at a
  time;
- ``/admin/credentials`` — every client's credentials with their health (status
  and advice, user-token and data-access expiry, last check; each Page's token,
  tasks and whether it can post) and how many posts still wait on each, linked
  to those posts in the list above (:mod:`.credentials`);
- ``/admin/clients`` — every client with its quotas, which of them are its own
  and which the deployment's defaults, and how much of each countable one it
  uses now (:func:`~offpost.posts.quotas.client_quotas`), the ones nearly used
  up highlighted;
- ``/admin/schedules`` — every client's schedules (filterable by status and
  client, a page at a time), each with its rule in words, its zone, its next
  five runs as the API computes them, its misfire policy and status
  (:mod:`.schedules`, :mod:`.rule_words`);
- ``/admin/schedules/{id}`` — one schedule, its history, its last runs and
  their posts, and its Pause or Resume button;
- ``/admin/posts/{id}`` — one post with its attempts, and its buttons;
- ``POST /admin/posts/{id}/retry|cancel`` — the admin API's own handlers, so
  the same 409 rules, log lines and dispatcher wake-up;
- ``POST /admin/schedules/{id}/pause|resume`` — the client API's own change
  (:func:`offpost.api.schedules.change_schedule`, what ``PATCH
  /v1/schedules/{id}`` runs), under the schedule's client's quotas; logged with
  the admin's id;
- ``POST /admin/logout``.

A page asked for without a valid session redirects to the sign-in form; an
action answers 401. Every answer is HTML (never the API's problem+json; only a
malformed query string, refused before any page runs, gets the API's 422),
carries a strict Content-Security-Policy, and is not cached.
"""

from __future__ import annotations

import enum
import functools
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from offpost.api import admin
from offpost.api.dashboard.chart import chart, outcomes_per_minute
from offpost.api.dashboard.credentials import (
    DEPENDENT_STATUSES,
    CredentialHealth,
    list_credentials,
    page_names,
)
from offpost.api.dashboard.schedules import (
    ScheduleRow,
    list_schedules,
    schedule_row,
    schedule_runs,
)
from offpost.api.dashboard.session import (
    COOKIE_NAME,
    COOKIE_PATH,
    SESSION_TTL,
    DashboardSession,
    SessionSigner,
    derive_secrets,
    same_origin,
)
from offpost.api.deps import NowDep, SessionDep, check_key
from offpost.api.limits import retry_after_header
from offpost.api.problems import ProblemError
from offpost.api.schedules import change_schedule, schedule_detail
from offpost.models import (
    Attempt,
    Client,
    Credential,
    CredentialStatus,
    IdPrefix,
    Post,
    PostStatus,
    PostStep,
    Schedule,
    ScheduleStatus,
    is_id,
)
from offpost.models.insights import series
from offpost.models.post import CANCELABLE_STATUSES
from offpost.posts import rules, store
from offpost.posts.quotas import ClientQuotas, Quota, QuotaDefaults, client_quotas
from offpost.posts.stats import collect_stats, count_credentials, expiring_credentials
from offpost.settings import Settings

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", tags=["dashboard"])

#: Posts per page of the table, unless the query asks for another number.
PAGE_SIZE = 25
#: What the form offers (the query may ask for any number from 1 to 200).
PAGE_SIZES = (10, 25, 50, 100, 200)
#: A form body larger than this is not a sign-in or a button press.
MAX_FORM_BYTES = 4096
_DONE = {"retried": "Retried: the post is scheduled again, due now.", "canceled": "Canceled."}
_SCHEDULE_DONE = {
    "paused": "Paused: its pending posts are canceled.",
    "resumed": "Resumed: its next posts are made again.",
}
#: Characters of a message the posts list shows.
PREVIEW_CHARS = 80


def _answers(**statuses: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of HTML pages, ``_303="…"`` → ``{303: …}``."""
    return {
        int(name.lstrip("_")): {"description": text, "content": {"text/html": {}}}
        for name, text in statuses.items()
    }


_SIGNED_OUT = "signed out: a redirect to the sign-in form"
_ACTION = _answers(
    _303="done: a redirect to the post's page",
    _401="signed out",
    _403="the form came from another site, or its CSRF token expired",
    _404="no such post",
    _409="the post is not in a state that allows it",
)
_SCHEDULE_ACTION = _answers(
    _303="done: a redirect to the schedule's page",
    _401="signed out",
    _403="the form came from another site, or its CSRF token expired",
    _404="no such schedule",
    _409="the schedule is deleted, or resuming it would pass its client's active_schedules quota",
    _422="resuming it would pass its client's occurrences_per_day quota",
)


@functools.cache
def _templates() -> jinja2.Environment:
    """The template environment, built on first use (nothing happens at import)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("offpost.api.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["local"] = _local
    env.filters["preview"] = _preview
    return env


def _when(value: datetime | None) -> str:
    return "—" if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


def _local(value: str) -> str:
    """An RFC 3339 time with its zone's offset, as the API gives a run, for reading:
    ``2026-12-01T09:00:00+01:00`` → ``Tue 2026-12-01 09:00 +01:00``."""
    moment = datetime.fromisoformat(value)
    return f"{moment:%a %Y-%m-%d %H:%M} {value[19:]}"


def _preview(text: str, chars: int = PREVIEW_CHARS) -> str:
    """The start of ``text`` on one line: runs of white space become one space."""
    line = " ".join(text.split())
    return line if len(line) <= chars else line[:chars].rstrip() + "…"


def _headers(nonce: str) -> dict[str, str]:
    return {
        # The only inline code is the stylesheet, admitted by its per-response nonce.
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    # Every page may show these; StrictUndefined catches any other name a template misspells.
    context = {"signed_in": None, "error": None, "notice": None, "nav": None, **context}
    html = _templates().get_template(name).render(nonce=nonce, **context)
    return HTMLResponse(html, status_code=status, headers=_headers(nonce))


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


# --- who is signed in ----------------------------------------------------------------------


def _signer(request: Request) -> SessionSigner:
    settings: Settings = request.app.state.settings
    return SessionSigner(derive_secrets(settings.encryption_key_list()))


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The admin behind a valid session cookie, and the CSRF token of the session."""

    admin: Client
    session: DashboardSession
    csrf: str


def _signed_in(request: Request, db: SessionDep, now: NowDep) -> SignedIn | None:
    token = request.cookies.get(COOKIE_NAME)
    signer = _signer(request)
    client_id = signer.claimed_client(token) if token else None
    if token is None or client_id is None:
        return None
    client = db.get(Client, client_id)
    if client is None or client.is_revoked or not client.is_admin:
        return None
    session = signer.verify(token, client.key_hash, now)
    if session is None:
        return None
    return SignedIn(client, session, signer.csrf_token(session))


SignedInDep = Annotated[SignedIn | None, Depends(_signed_in)]


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form body (first value of each field); empty when it is not one.

    Read here, in an async dependency, so that the handlers themselves stay
    synchronous and do their database work in the thread pool.
    """
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:  # more fields than any of our forms has
        return {}
    return {name: values[0] for name, values in fields.items()}


FormDep = Annotated[dict[str, str], Depends(_form)]


def _checked_action(
    request: Request, who: SignedIn | None, form: dict[str, str]
) -> Response | SignedIn:
    """The signed-in admin if this POST may act, else the page that says why not."""
    if who is None:
        return _page("message.html", 401, title="Signed out", text="Sign in again to do that.")
    if not same_origin(
        request.headers.get("origin"), request.headers.get("referer"), _own_origin(request)
    ):
        return _page("message.html", 403, title="Refused", text="That form came from elsewhere.")
    signer = _signer(request)
    if not signer.csrf_matches(who.session, form.get("csrf")):
        return _page(
            "message.html", 403, title="Refused", text="The form expired; reload and try again."
        )
    return who


# --- sign in and out -----------------------------------------------------------------------


@router.get(
    "/login",
    response_class=HTMLResponse,
    summary="The dashboard's sign-in form",
    responses=_answers(_303="already signed in: a redirect to the dashboard"),
)
def login_form(who: SignedInDep) -> Response:
    if who is not None:
        return _redirect("/admin")
    return _page("login.html")


@router.post(
    "/login",
    response_class=HTMLResponse,
    summary="Sign in with an admin key",
    responses=_answers(
        _303="signed in: the session cookie, and a redirect to the dashboard",
        _401="not a valid key",
        _403="a client key, or the form came from another site",
        _429="too many failed sign-ins from this address",
    ),
)
def login(request: Request, form: FormDep, db: SessionDep, now: NowDep) -> Response:
    if not same_origin(
        request.headers.get("origin"), request.headers.get("referer"), _own_origin(request)
    ):
        return _page("login.html", 403, error="That sign-in form came from another site.")
    # The same check, and the same budget of failures per address, as the API's keys.
    client, wait_s = check_key(request, db, form.get("key", "").strip() or None)
    if wait_s:
        return _too_many_sign_ins(wait_s)
    if client is None:
        logger.warning("dashboard sign-in refused", extra={"action": "dashboard_login_failed"})
        return _page("login.html", 401, error="That key is not valid.")
    if not client.is_admin:
        return _page(
            "login.html", 403, error="That is a client key; the dashboard needs an admin key."
        )
    token = _signer(request).issue(client.id, client.key_hash, now)
    logger.info(
        "admin %s signed in to the dashboard",
        client.id,
        extra={"action": "dashboard_login", "admin_id": client.id},
    )
    response = _redirect("/admin")
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(SESSION_TTL.total_seconds()),
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


def _too_many_sign_ins(wait_s: float) -> Response:
    page = _page("login.html", 429, error="Too many failed sign-ins; wait a minute.")
    page.headers.update(retry_after_header(wait_s))
    return page


@router.post(
    "/logout",
    response_class=HTMLResponse,
    summary="Sign out of the dashboard",
    responses=_answers(
        _303="signed out: a redirect to the sign-in form",
        _403="the form came from another site, or its CSRF token expired",
    ),
)
def logout(request: Request, form: FormDep, who: SignedInDep) -> Response:
    if who is not None:
        checked = _checked_action(request, who, form)
        if isinstance(checked, Response):
            return checked
    response = _redirect("/admin/login")
    response.delete_cookie(
        COOKIE_NAME,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


# --- pages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """The table's filters as typed in (checked by :func:`_posts_page`)."""

    status: str
    target: str
    client: str
    limit: int
    #: A credential id: the posts that depend on it (the credentials page links here).
    credential: str = ""
    #: A schedule id: its posts (a schedule's page links here).
    schedule: str = ""

    def query(self, **extra: str) -> str:
        """The query string of these filters (empty values left out) plus ``extra``."""
        values = {
            "status": self.status,
            "target": self.target,
            "client": self.client,
            "credential": self.credential,
            "schedule": self.schedule,
        }
        if self.limit != PAGE_SIZE:
            values["limit"] = str(self.limit)
        return urlencode({k: v for k, v in {**values, **extra}.items() if v})

    @property
    def narrows(self) -> bool:
        """Whether a filter narrows the list (the page size does not)."""
        return bool(self.status or self.target or self.client or self.credential or self.schedule)


def _page_size(text: str) -> int:
    """The ``limit`` asked for, within 1..200; the default when it is not a number."""
    try:
        return min(max(int(text), 1), max(PAGE_SIZES))
    except ValueError:
        return PAGE_SIZE


def _posts_page(
    db: Session, filters: Filters, cursor: str
) -> tuple[list[Post], str | None, str | None]:
    """The table's rows, the next page's cursor, and what was wrong with the filters."""
    if filters.status and filters.status not in {s.value for s in PostStatus}:
        return [], None, f"no status {filters.status!r}"
    status = PostStatus(filters.status) if filters.status else None
    try:
        after = rules.decode_cursor(cursor) if cursor else None
    except rules.CursorError:
        return [], None, "that page link is broken; start again from the first page"
    try:
        client_id = admin.resolve_client_id(db, filters.client) if filters.client else None
    except ProblemError as exc:
        return [], None, exc.detail
    if filters.credential and not _credential_exists(db, filters.credential):
        return [], None, f"no credential {filters.credential!r}"
    if filters.schedule and not _schedule_exists(db, filters.schedule):
        return [], None, f"no schedule {filters.schedule!r}"
    posts, next_page = store.list_posts(
        db,
        client_id,
        limit=filters.limit,
        status=status,
        target=filters.target or None,
        credential_id=filters.credential or None,
        schedule_id=filters.schedule or None,
        after=after,
    )
    return posts, rules.encode_cursor(next_page) if next_page else None, None


def _credential_exists(db: Session, credential_id: str) -> bool:
    # The id column only: loading the row would decrypt its tokens.
    return is_id(credential_id, IdPrefix.CREDENTIAL) and (
        db.scalar(select(Credential.id).where(Credential.id == credential_id)) is not None
    )


def _schedule_exists(db: Session, schedule_id: str) -> bool:
    return is_id(schedule_id, IdPrefix.SCHEDULE) and (
        db.scalar(select(Schedule.id).where(Schedule.id == schedule_id)) is not None
    )


@router.get(
    "",
    response_class=HTMLResponse,
    summary="The dashboard (sign in first)",
    responses=_answers(_303=_SIGNED_OUT),
)
def dashboard(
    request: Request,
    who: SignedInDep,
    db: SessionDep,
    now: NowDep,
    status: Annotated[str, Query(max_length=32)] = "",
    target: Annotated[str, Query(max_length=64)] = "",
    client: Annotated[str, Query(max_length=100)] = "",
    credential: Annotated[str, Query(max_length=64)] = "",
    schedule: Annotated[str, Query(max_length=64)] = "",
    cursor: Annotated[str, Query(max_length=512)] = "",
    limit: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    if who is None:
        return _redirect("/admin/login")
    settings: Settings = request.app.state.settings
    filters = Filters(
        status=status.strip(),
        target=target.strip(),
        client=client.strip(),
        limit=_page_size(limit),
        credential=credential.strip(),
        schedule=schedule.strip(),
    )
    posts, next_cursor, filter_error = _posts_page(db, filters, cursor)
    shown = {p.client_id for p in posts}
    names = {
        cid: name
        for cid, name in db.execute(select(Client.id, Client.name).where(Client.id.in_(shown)))
    }
    return _page(
        "dashboard.html",
        signed_in=who,
        nav="posts",
        now=now,
        stats=collect_stats(db, now, queue_depth=request.app.state.queue.depth()),
        chart=chart(outcomes_per_minute(db, now)),
        expiring=expiring_credentials(
            db, now, timedelta(hours=settings.refresh_margin_hours), limit=20
        ),
        margin_hours=settings.refresh_margin_hours,
        statuses=[s.value for s in PostStatus],
        page_sizes=sorted({*PAGE_SIZES, filters.limit}),
        filters=filters,
        posts=posts,
        client_names=names,
        page_names=page_names(db, {(p.credential_id, p.target) for p in posts}),
        filter_error=filter_error,
        next_query=filters.query(cursor=next_cursor) if next_cursor else None,
        first_query=filters.query() if cursor else None,
    )


@dataclass(frozen=True, slots=True)
class ListFilters:
    """A list page's filters as typed in: status, client and page size (the credentials
    and schedules pages; checked by :func:`_checked_filters`)."""

    status: str
    client: str
    limit: int

    def query(self, **extra: str) -> str:
        """The query string of these filters (empty values left out) plus ``extra``."""
        values = {"status": self.status, "client": self.client}
        if self.limit != PAGE_SIZE:
            values["limit"] = str(self.limit)
        return urlencode({k: v for k, v in {**values, **extra}.items() if v})

    def paging(self, cursor: str, next_cursor: str | None) -> dict[str, Any]:
        """What a list template needs to show these filters and page on."""
        return {
            "filters": self,
            "page_sizes": sorted({*PAGE_SIZES, self.limit}),
            "next_query": self.query(cursor=next_cursor) if next_cursor else None,
            "first_query": self.query() if cursor else None,
        }


def _list_filters(
    status: Annotated[str, Query(max_length=32)] = "",
    client: Annotated[str, Query(max_length=100)] = "",
    limit: Annotated[str, Query(max_length=8)] = "",
) -> ListFilters:
    return ListFilters(status=status.strip(), client=client.strip(), limit=_page_size(limit))


ListFiltersDep = Annotated[ListFilters, Depends(_list_filters)]
S = TypeVar("S", bound=enum.StrEnum)


class _FilterError(Exception):
    """What is wrong with a list page's filters, in words for the page."""


def _checked_filters(
    db: Session, filters: ListFilters, statuses: type[S], cursor: str, prefix: IdPrefix
) -> tuple[S | None, rules.Cursor | None, str | None]:
    """The status, cursor and client id the filters name; :class:`_FilterError` if one is wrong."""
    if filters.status and filters.status not in {s.value for s in statuses}:
        raise _FilterError(f"no status {filters.status!r}")
    status = statuses(filters.status) if filters.status else None
    try:
        after = rules.decode_cursor(cursor, prefix) if cursor else None
    except rules.CursorError:
        raise _FilterError("that page link is broken; start again from the first page") from None
    try:
        client_id = admin.resolve_client_id(db, filters.client) if filters.client else None
    except ProblemError as exc:
        raise _FilterError(exc.detail) from None
    return status, after, client_id


def _credentials_page(
    db: Session, filters: ListFilters, cursor: str
) -> tuple[list[CredentialHealth], str | None, str | None]:
    """The page's credentials, the next page's cursor, and what was wrong with the filters."""
    try:
        status, after, client_id = _checked_filters(
            db, filters, CredentialStatus, cursor, IdPrefix.CREDENTIAL
        )
    except _FilterError as exc:
        return [], None, str(exc)
    rows, next_page = list_credentials(
        db, limit=filters.limit, status=status, client_id=client_id, after=after
    )
    return rows, rules.encode_cursor(next_page) if next_page else None, None


@router.get(
    "/credentials",
    response_class=HTMLResponse,
    summary="Every client's credentials, their health and the posts waiting on them",
    responses=_answers(_303=_SIGNED_OUT),
)
def credentials_page(
    who: SignedInDep,
    db: SessionDep,
    now: NowDep,
    filters: ListFiltersDep,
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    if who is None:
        return _redirect("/admin/login")
    credentials, next_cursor, filter_error = _credentials_page(db, filters, cursor)
    return _page(
        "credentials.html",
        signed_in=who,
        nav="credentials",
        now=now,
        counts={s.value: n for s, n in count_credentials(db).items()},
        statuses=[s.value for s in CredentialStatus],
        dependent_statuses=[s.value for s in DEPENDENT_STATUSES],
        credentials=credentials,
        filter_error=filter_error,
        **filters.paging(cursor, next_cursor),
    )


#: A countable quota used at least this share of is highlighted on the clients page.
NEAR_SHARE = 0.8

#: The clients page's quota columns, in order: the quota and its heading.
QUOTA_COLUMNS: tuple[tuple[Quota, str], ...] = (
    (Quota.POSTS_PER_DAY, "Posts, last 24 h"),
    (Quota.PENDING_POSTS, "Pending posts"),
    (Quota.ACTIVE_SCHEDULES, "Active schedules"),
    (Quota.REQUESTS_PER_MINUTE, "Requests per minute"),
    (Quota.OCCURRENCES_PER_DAY, "Occurrences per day, each schedule"),
)


@dataclass(frozen=True, slots=True)
class QuotaCell:
    """One quota of one client as the clients page shows it."""

    quota: str
    limit: int
    #: What the client uses of it now; ``None`` for a rate, which no row counts.
    used: int | None
    #: Set for this client, rather than the deployment's default.
    own: bool
    #: Used at least :data:`NEAR_SHARE` of.
    near: bool


def _quota_cells(client: ClientQuotas) -> list[QuotaCell]:
    """``client``'s quotas in the order of :data:`QUOTA_COLUMNS`."""
    near = set(client.near(NEAR_SHARE))
    return [
        QuotaCell(
            quota=quota.value,
            limit=client.quotas[quota],
            used=client.used(quota),
            own=quota in client.overridden,
            near=quota in near,
        )
        for quota, _ in QUOTA_COLUMNS
    ]


@router.get(
    "/clients",
    response_class=HTMLResponse,
    summary="Every client's quotas, its own or the defaults, and how much of them it uses",
    responses=_answers(_303=_SIGNED_OUT),
)
def clients_page(request: Request, who: SignedInDep, db: SessionDep, now: NowDep) -> Response:
    if who is None:
        return _redirect("/admin/login")
    settings: Settings = request.app.state.settings
    defaults = QuotaDefaults.of(settings)
    clients = client_quotas(db, now, defaults)
    return _page(
        "clients.html",
        signed_in=who,
        nav="clients",
        now=now,
        columns=[(quota.value, heading) for quota, heading in QUOTA_COLUMNS],
        defaults={quota.value: getattr(defaults, quota.value) for quota, _ in QUOTA_COLUMNS},
        near_percent=round(NEAR_SHARE * 100),
        clients=[(client, _quota_cells(client)) for client in clients],
    )


def _schedules_page(
    db: Session, filters: ListFilters, cursor: str, now: datetime
) -> tuple[list[ScheduleRow], str | None, str | None]:
    """The page's schedules, the next page's cursor, and what was wrong with the filters."""
    try:
        status, after, client_id = _checked_filters(
            db, filters, ScheduleStatus, cursor, IdPrefix.SCHEDULE
        )
    except _FilterError as exc:
        return [], None, str(exc)
    rows, next_page = list_schedules(
        db, now, limit=filters.limit, status=status, client_id=client_id, after=after
    )
    return rows, rules.encode_cursor(next_page) if next_page else None, None


@router.get(
    "/schedules",
    response_class=HTMLResponse,
    summary="Every client's schedules, their rules in words and their next runs",
    responses=_answers(_303=_SIGNED_OUT),
)
def schedules_page(
    who: SignedInDep,
    db: SessionDep,
    now: NowDep,
    filters: ListFiltersDep,
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    if who is None:
        return _redirect("/admin/login")
    rows, next_cursor, filter_error = _schedules_page(db, filters, cursor, now)
    return _page(
        "schedules.html",
        signed_in=who,
        nav="schedules",
        now=now,
        statuses=[s.value for s in ScheduleStatus],
        schedules=rows,
        filter_error=filter_error,
        **filters.paging(cursor, next_cursor),
    )


def _schedule_page(
    db: Session,
    who: SignedIn,
    schedule_id: str,
    now: datetime,
    *,
    status: int = 200,
    **context: Any,
) -> Response:
    schedule = db.get(Schedule, schedule_id) if is_id(schedule_id, IdPrefix.SCHEDULE) else None
    if schedule is None:
        return _page(
            "message.html",
            404,
            signed_in=who,
            title="Not found",
            text=f"No schedule {schedule_id}.",
        )
    client = db.get(Client, schedule.client_id)
    names = page_names(db, [(schedule.credential_id, schedule.target)])
    return _page(
        "schedule.html",
        status,
        signed_in=who,
        nav="schedules",
        now=now,
        row=schedule_row(
            schedule,
            client.name if client else schedule.client_id,
            names.get((schedule.credential_id, schedule.target)),
            now,
        ),
        # The API's own view of it: the same upcoming runs and history as GET /v1/schedules/{id}.
        detail=schedule_detail(db, schedule, now),
        runs=schedule_runs(db, schedule.id, now),
        can_pause=schedule.status is ScheduleStatus.ACTIVE,
        can_resume=schedule.status is ScheduleStatus.PAUSED,
        **context,
    )


@router.get(
    "/schedules/{schedule_id}",
    response_class=HTMLResponse,
    summary="A schedule, its history and its last runs",
    responses=_answers(_303=_SIGNED_OUT, _404="no such schedule"),
)
def schedule_page(
    schedule_id: str,
    who: SignedInDep,
    db: SessionDep,
    now: NowDep,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    if who is None:
        return _redirect("/admin/login")
    return _schedule_page(db, who, schedule_id, now, notice=_SCHEDULE_DONE.get(done))


def _post_page(
    db: Session, who: SignedIn, post_id: str, *, status: int = 200, **context: Any
) -> Response:
    try:
        post = store.load_post(db, None, post_id)
    except rules.PostNotFoundError:
        return _page(
            "message.html", 404, signed_in=who, title="Not found", text=f"No post {post_id}."
        )
    attempts = db.scalars(
        select(Attempt).where(Attempt.post_id == post.id).order_by(Attempt.number)
    )
    return _page(
        "post.html",
        status,
        signed_in=who,
        nav="posts",
        post=post,
        client=db.get(Client, post.client_id),
        attempts=list(attempts),
        insights=series(db, post.id),
        steps=list(
            db.scalars(
                select(PostStep)
                .where(PostStep.post_id == post.id)
                .order_by(PostStep.started_at, PostStep.id)
            )
        ),
        can_retry=post.status is PostStatus.FAILED,
        # Not while an earlier attempt may have published it (409 outcome_unknown).
        can_cancel=post.status in CANCELABLE_STATUSES and post.reconcile_since is None,
        **context,
    )


@router.get(
    "/posts/{post_id}",
    response_class=HTMLResponse,
    summary="A post and its attempts",
    responses=_answers(_303=_SIGNED_OUT, _404="no such post"),
)
def post_page(
    post_id: str,
    who: SignedInDep,
    db: SessionDep,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    if who is None:
        return _redirect("/admin/login")
    return _post_page(db, who, post_id, notice=_DONE.get(done))


# --- actions -------------------------------------------------------------------------------


def _act(
    action: str,
    post_id: str,
    request: Request,
    form: dict[str, str],
    who: SignedIn | None,
    db: Session,
    now: datetime,
) -> Response:
    checked = _checked_action(request, who, form)
    if isinstance(checked, Response):
        return checked
    try:
        if action == "retry":
            admin.admin_retry_post(post_id, checked.admin, request, db, now)
        else:
            admin.admin_cancel_post(post_id, checked.admin, db, now)
    except ProblemError as exc:
        db.rollback()
        return _post_page(db, checked, post_id, status=exc.status, error=exc.detail)
    done = "retried" if action == "retry" else "canceled"
    return _redirect(f"/admin/posts/{post_id}?done={done}")


@router.post(
    "/posts/{post_id}/retry",
    response_class=HTMLResponse,
    summary="Retry a failed post",
    responses=_ACTION,
)
def retry(
    post_id: str, request: Request, form: FormDep, who: SignedInDep, db: SessionDep, now: NowDep
) -> Response:
    return _act("retry", post_id, request, form, who, db, now)


@router.post(
    "/posts/{post_id}/cancel",
    response_class=HTMLResponse,
    summary="Cancel a post",
    responses=_ACTION,
)
def cancel(
    post_id: str, request: Request, form: FormDep, who: SignedInDep, db: SessionDep, now: NowDep
) -> Response:
    return _act("cancel", post_id, request, form, who, db, now)


def _act_on_schedule(
    action: str,
    schedule_id: str,
    request: Request,
    form: dict[str, str],
    who: SignedIn | None,
    db: Session,
    now: datetime,
) -> Response:
    """Pause or resume through :func:`~offpost.api.schedules.change_schedule`, as the
    schedule's client's ``PATCH`` would, under that client's quotas."""
    checked = _checked_action(request, who, form)
    if isinstance(checked, Response):
        return checked
    found = (
        db.execute(
            select(Client, Schedule.status)
            .join(Schedule, Schedule.client_id == Client.id)
            .where(Schedule.id == schedule_id)
        ).one_or_none()
        if is_id(schedule_id, IdPrefix.SCHEDULE)
        else None
    )
    if found is None:
        return _schedule_page(db, checked, schedule_id, now)  # its 404
    client, before = found
    settings: Settings = request.app.state.settings
    target = ScheduleStatus.PAUSED if action == "pause" else ScheduleStatus.ACTIVE
    try:
        change_schedule(
            db,
            client.id,
            schedule_id,
            QuotaDefaults.of(settings).for_client(client),
            now,
            status="paused" if target is ScheduleStatus.PAUSED else "active",
        )
    except ProblemError as exc:
        db.rollback()
        verb = "Not paused" if target is ScheduleStatus.PAUSED else "Not resumed"
        return _schedule_page(
            db, checked, schedule_id, now, status=exc.status, error=f"{verb}: {exc.detail}"
        )
    done = "paused" if target is ScheduleStatus.PAUSED else "resumed"
    if before is not target:
        logger.info(
            "admin %s %s schedule %s of client %s",
            checked.admin.id,
            done,
            schedule_id,
            client.id,
            extra={
                "action": f"admin_schedule_{done}",
                "schedule_id": schedule_id,
                "client_id": client.id,
                "admin_id": checked.admin.id,
            },
        )
    return _redirect(f"/admin/schedules/{schedule_id}?done={done}")


@router.post(
    "/schedules/{schedule_id}/pause",
    response_class=HTMLResponse,
    summary="Pause a schedule: its pending posts are canceled",
    responses=_SCHEDULE_ACTION,
)
def pause_schedule(
    schedule_id: str,
    request: Request,
    form: FormDep,
    who: SignedInDep,
    db: SessionDep,
    now: NowDep,
) -> Response:
    return _act_on_schedule("pause", schedule_id, request, form, who, db, now)


@router.post(
    "/schedules/{schedule_id}/resume",
    response_class=HTMLResponse,
    summary="Resume a paused schedule, within its client's quotas",
    responses=_SCHEDULE_ACTION,
)
def resume_schedule(
    schedule_id: str,
    request: Request,
    form: FormDep,
    who: SignedInDep,
    db: SessionDep,
    now: NowDep,
) -> Response:
    return _act_on_schedule("resume", schedule_id, request, form, who, db, now)
