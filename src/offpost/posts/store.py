"""One-off posts in the database: create many at once, read, and change under a guard.

The API's handlers (``api/posts.py``) parse and answer; what they
decide comes from :mod:`offpost.posts.rules` (pure) and what they store
goes through here, one statement each where it matters:

- :func:`prepare_posts` checks a request's posts against the rules and the
  client's credentials (one query), and :func:`insert_posts` writes any number
  of them with one executemany ``INSERT`` and returns the written values, so a
  caller answers without reading them back (the batch route, the CSV import);
  a schedule's occurrences are built by the same :func:`new_post_rows`;
- :func:`update_post`, :func:`cancel_post` and :func:`retry_post` make their
  change through the guarded transitions of :mod:`offpost.models.transitions`
  (``UPDATE … WHERE id = :id AND client_id = :c AND status IN (…) RETURNING``):
  a dispatcher claiming the post at the same instant either sees the change or
  makes it fail with :class:`PostStateError`, never half of it.
  Only when no row matched do they read the post, to say why (404 or 409).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Select, Table, and_, bindparam, case, insert, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from offpost.media.budgets import REELS_PER_DAY, next_reel_slot, page_reel_times
from offpost.media.spec import spec_kind, spec_media_ids
from offpost.media.uses import record_uses
from offpost.models import (
    CREATE_CONTENT,
    Credential,
    CredentialPage,
    CredentialStatus,
    IdPrefix,
    PageTokenStatus,
    Post,
    PostStatus,
    is_id,
    transitions,
)
from offpost.models.ids import new_ids
from offpost.models.post import (
    CANCELABLE_STATUSES,
    DEFAULT_MAX_ATTEMPTS,
    EDITABLE_STATUSES,
    WAITING_STATUSES,
)
from offpost.posts.input import PhotoIn, ReelIn, VideoIn
from offpost.posts.media import check_uploads, media_spec, spec_problems
from offpost.posts.rules import (
    COMMENT_SCOPE,
    CONTENT_FIELDS,
    MAX_BATCH_TOKENS,
    NO_SUCH_CREDENTIAL,
    Cursor,
    FieldProblem,
    PostInputError,
    PostNotFoundError,
    PostOutcomeUnknownError,
    PostStateError,
    content_problem,
    initial_status,
    older_than,
    publish_at_problem,
    split_page,
)
from offpost.tokens.intake import MissingPermissionsError, TokenRejectedError

__all__ = [
    "NULL_ON_INSERT",
    "CredentialFacts",
    "NewPost",
    "PageFacts",
    "PostFields",
    "TokenIntake",
    "cancel_post",
    "earliest_due",
    "insert_posts",
    "list_posts",
    "load_credential_facts",
    "load_credentials",
    "load_post",
    "new_post_ids",
    "prepare_posts",
    "retry_post",
    "update_post",
]


# --- new posts -----------------------------------------------------------------------------


class PostFields(Protocol):
    """What a client sends to create a post (``PostCreate`` has these attributes)."""

    @property
    def credential_id(self) -> str | None: ...
    @property
    def access_token(self) -> str | None: ...
    @property
    def target(self) -> str: ...
    @property
    def message(self) -> str | None: ...
    @property
    def link(self) -> str | None: ...
    @property
    def photo_url(self) -> str | None: ...
    @property
    def photos(self) -> list[PhotoIn] | None: ...
    @property
    def video(self) -> VideoIn | None: ...
    @property
    def reel(self) -> ReelIn | None: ...
    @property
    def first_comment(self) -> str | None: ...
    @property
    def publish_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class NewPost:
    """A checked post, ready for :func:`insert_posts`. Times are aware."""

    credential_id: str
    target: str
    message: str | None
    link: str | None
    photo_url: str | None
    publish_at: datetime
    status: PostStatus = PostStatus.SCHEDULED
    #: Photos, a video or a Reel (:mod:`offpost.posts.media`).
    media: dict[str, Any] | None = None
    #: Posted as the Page right after the post is published.
    first_comment: str | None = None
    schedule_id: str | None = None
    occurrence_at: datetime | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


#: Takes in a short-lived user token (``POST /v1/credentials``'s work) → the credential.
TokenIntake = Callable[[str], Credential]


@dataclass(slots=True)
class _Item:
    index: int
    fields: PostFields
    prefix: str
    credential_id: str | None = None
    problems: list[FieldProblem] = field(default_factory=list)

    def problem(self, name: str, message: str, code: str = "invalid_request") -> None:
        self.problems.append(FieldProblem(f"{self.prefix}{name}", message, code))


def prepare_posts(
    session: Session | None,
    client_id: str,
    items: Sequence[PostFields],
    now: datetime,
    *,
    intake: TokenIntake | None = None,
    batch: bool = False,
    credentials: Mapping[str, CredentialFacts] | None = None,
) -> list[NewPost]:
    """Check ``items`` against every rule; the posts to insert, in order.

    Raises :class:`PostInputError` listing every problem found (fields named
    ``posts[17].publish_at`` when ``batch``), before anything is written. Inline
    ``access_token`` values go through ``intake`` (once per distinct token) only
    when everything else is right, so a bad body never costs a Graph call;
    ``intake`` may raise :class:`~offpost.tokens.intake.GraphUnavailableError`.

    ``credentials`` are the items' credentials when the caller has read them
    already (:func:`load_credential_facts`, or the event loop's reads of the
    single route); ``session`` may then be ``None`` if no item names an upload
    or a Reel (their checks read the database).
    """
    work = [_Item(i, item, f"posts[{i}]." if batch else "") for i, item in enumerate(items)]
    tokens: dict[str, int] = {}
    for item in work:
        _check_in_memory(item, now)
        token = item.fields.access_token
        if token is not None and not item.problems:
            tokens.setdefault(token, item.index)
    if batch and len(tokens) > MAX_BATCH_TOKENS:
        first_extra = sorted(tokens.values())[MAX_BATCH_TOKENS]
        work[first_extra].problem(
            "access_token",
            f"at most {MAX_BATCH_TOKENS} different access tokens per batch; "
            "submit them to /v1/credentials and use credential_id",
        )

    credentials = _credentials_of(session, client_id, work, credentials)
    # A batch usually names a few (credential, Page) pairs many times: decide each once.
    verdicts: dict[tuple[str, str], PostStatus | FieldProblem] = {}

    def check_credential(item: _Item) -> None:
        if any(p.field == f"{item.prefix}credential_id" for p in item.problems):
            return  # already said: one message per field
        assert item.credential_id is not None
        pair = (item.credential_id, item.fields.target)
        if pair not in verdicts:
            verdicts[pair] = initial_status(credentials.get(item.credential_id), pair[1])
        if isinstance(verdict := verdicts[pair], FieldProblem):
            item.problem(verdict.field, verdict.message, verdict.code)

    for item in work:
        if item.fields.credential_id is not None:
            item.credential_id = item.fields.credential_id
            check_credential(item)
    _check_media(session, client_id, work, now)
    _raise_problems(work)

    if tokens:
        assert intake is not None, "inline access tokens need an intake"
        taken: dict[str, Credential] = {}
        for token, index in tokens.items():
            try:
                taken[token] = intake(token)
            except TokenRejectedError as exc:
                code = (
                    "missing_permissions"
                    if isinstance(exc, MissingPermissionsError)
                    else "invalid_token"
                )
                work[index].problem("access_token", str(exc), code)
        for item in work:
            credential = taken.get(item.fields.access_token or "")
            if credential is not None:
                item.credential_id = credential.id
                credentials[credential.id] = CredentialFacts.of(credential)
                check_credential(item)
        _raise_problems(work)

    for item in work:
        # Commenting as the Page takes a permission posting does not.
        if item.fields.first_comment is not None and item.credential_id in credentials:
            granted = credentials[item.credential_id].scopes or []
            if COMMENT_SCOPE not in granted:
                item.problem(
                    "first_comment",
                    f"commenting as the Page needs the {COMMENT_SCOPE} permission, which "
                    "this credential's user did not grant; ask for it in Facebook Login",
                    "missing_permissions",
                )
    _raise_problems(work)

    out = []
    for item in work:
        assert item.credential_id is not None
        status = verdicts[(item.credential_id, item.fields.target)]
        assert isinstance(status, PostStatus)  # else check_credential raised above
        out.append(
            NewPost(
                credential_id=item.credential_id,
                target=item.fields.target,
                message=item.fields.message,
                link=item.fields.link,
                photo_url=item.fields.photo_url,
                publish_at=item.fields.publish_at or now,
                status=status,
                media=media_spec(item.fields.photos, item.fields.video, item.fields.reel),
                first_comment=item.fields.first_comment,
            )
        )
    return out


def _credentials_of(
    session: Session | None,
    client_id: str,
    work: Sequence[_Item],
    known: Mapping[str, CredentialFacts] | None,
) -> dict[str, CredentialFacts]:
    """The items' credentials: ``known``, or read with one query."""
    if known is not None:
        return dict(known)
    assert session is not None, "prepare_posts reads the credentials with a session"
    return load_credential_facts(
        session,
        client_id,
        {w.fields.credential_id for w in work if w.fields.credential_id},
        {w.fields.target for w in work if w.fields.credential_id},
    )


def _check_media(
    session: Session | None, client_id: str, work: Sequence[_Item], now: datetime
) -> None:
    """The uploads each post names, and the Page's Reels budget at its time."""
    reels: dict[str, list[datetime]] = {}
    for item in work:
        fields = item.fields
        spec = media_spec(fields.photos, fields.video, fields.reel)
        if spec is None or item.problems:
            continue
        if spec_media_ids(spec) or spec_kind(spec) == "reel":
            assert session is not None, "uploads and Reels are checked with a session"
        else:
            continue  # URLs only, not a Reel: nothing to read
        _, problems = check_uploads(session, client_id, spec, prefix=item.prefix)
        item.problems += problems
        if spec_kind(spec) == "reel" and not problems:
            at = fields.publish_at or now
            times = reels.setdefault(fields.target, page_reel_times(session, fields.target, at))
            slot = next_reel_slot(times, at)
            if slot != at:
                free = slot.astimezone(UTC).isoformat().replace("+00:00", "Z")
                item.problem(
                    "publish_at",
                    f"the Page {fields.target} would publish more than {REELS_PER_DAY} Reels "
                    f"in 24 hours (Graph's limit); the next free time is {free}",
                )
            else:
                # The batch's own Reels count against each other.
                times.append(at)
                times.sort()


def _check_in_memory(item: _Item, now: datetime) -> None:
    fields = item.fields
    if (fields.credential_id is None) == (fields.access_token is None):
        which = "both" if fields.credential_id is not None else "neither"
        item.problem(
            "access_token" if which == "both" else "credential_id",
            f"give exactly one of credential_id and access_token ({which} given)",
        )
    elif fields.credential_id is not None and not is_id(fields.credential_id, IdPrefix.CREDENTIAL):
        item.problem("credential_id", NO_SUCH_CREDENTIAL)
    spec = media_spec(fields.photos, fields.video, fields.reel)
    if why := content_problem(fields.message, fields.link, fields.photo_url, spec):
        item.problem("message", why)
    item.problems += spec_problems(
        message=fields.message,
        link=fields.link,
        photo_url=fields.photo_url,
        photos=fields.photos,
        video=fields.video,
        reel=fields.reel,
        prefix=item.prefix,
    )
    if why := publish_at_problem(fields.publish_at, now):
        item.problem("publish_at", why)


def _raise_problems(work: Iterable[_Item]) -> None:
    problems = [p for item in work for p in item.problems]
    if problems:
        raise PostInputError(problems)


@dataclass(frozen=True, slots=True)
class PageFacts:
    """What a new post's checks read of one Page of a credential (never its token)."""

    token_status: PageTokenStatus
    tasks: list[str] | None

    @property
    def can_create_content(self) -> bool:
        """As :attr:`offpost.models.CredentialPage.can_create_content`."""
        return self.tasks is None or CREATE_CONTENT in self.tasks


@dataclass(frozen=True, slots=True)
class CredentialFacts:
    """What a new post's checks read of a credential: status, scopes, some of its Pages.

    Read by :func:`load_credential_facts` without the tokens (no decryption, no
    ORM objects): :func:`~offpost.posts.rules.initial_status` takes it as it
    takes a :class:`~offpost.models.Credential`.
    """

    id: str
    status: CredentialStatus
    scopes: list[str]
    pages: dict[str, PageFacts]

    def page(self, page_id: str) -> PageFacts | None:
        return self.pages.get(page_id)

    @classmethod
    def of(cls, credential: Credential) -> CredentialFacts:
        return cls(
            id=credential.id,
            status=credential.status,
            scopes=list(credential.scopes or []),
            pages={p.page_id: PageFacts(p.token_status, p.tasks) for p in credential.pages},
        )


def _credential_facts_query() -> Select[Any]:
    credentials = cast(Table, Credential.__table__)
    pages = cast(Table, CredentialPage.__table__)
    return (
        select(
            credentials.c.id,
            credentials.c.status,
            credentials.c.scopes,
            pages.c.page_id,
            pages.c.token_status,
            pages.c.tasks,
        )
        .select_from(
            credentials.outerjoin(
                pages,
                and_(
                    pages.c.credential_id == credentials.c.id,
                    pages.c.page_id.in_(bindparam("page_ids", expanding=True)),
                ),
            )
        )
        .where(
            credentials.c.client_id == bindparam("client_id"),
            credentials.c.id.in_(bindparam("ids", expanding=True)),
        )
    )


#: Built once: a request only binds its values.
_CREDENTIAL_FACTS = _credential_facts_query()


def load_credential_facts(
    session: Session, client_id: str, credential_ids: Iterable[str], page_ids: Iterable[str]
) -> dict[str, CredentialFacts]:
    """The client's credentials among ``credential_ids``, each with those of ``page_ids``
    that are its Pages, by id: one query, no token read."""
    ids = [c for c in set(credential_ids) if is_id(c, IdPrefix.CREDENTIAL)]
    if not ids:
        return {}
    found: dict[str, CredentialFacts] = {}
    rows = session.connection().execute(
        _CREDENTIAL_FACTS,
        {"client_id": client_id, "ids": ids, "page_ids": sorted(set(page_ids))},
    )
    for row in rows:
        facts = found.get(row.id)
        if facts is None:
            facts = found[row.id] = CredentialFacts(row.id, row.status, row.scopes or [], {})
        if row.page_id is not None:
            facts.pages[row.page_id] = PageFacts(row.token_status, row.tasks)
    return found


def load_credentials(
    session: Session, client_id: str, credential_ids: Iterable[str]
) -> dict[str, Credential]:
    """The client's credentials among ``credential_ids`` (with their Pages), by id; one query."""
    ids = [c for c in set(credential_ids) if is_id(c, IdPrefix.CREDENTIAL)]
    if not ids:
        return {}
    rows = session.scalars(
        select(Credential).where(Credential.client_id == client_id, Credential.id.in_(ids))
    )
    return {credential.id: credential for credential in rows}


def new_post_ids(count: int) -> list[str]:
    """``count`` fresh post ids (:func:`offpost.models.ids.new_ids`)."""
    return new_ids(IdPrefix.POST, count)


def insert_posts(
    session: Session,
    client_id: str,
    posts: Sequence[NewPost],
    now: datetime,
    *,
    only_if: ColumnElement[bool] | None = None,
) -> list[dict[str, Any]]:
    """Insert ``posts`` for ``client_id`` with one executemany INSERT; does not commit.

    Returns every column's value of each row (as stored, without reading it
    back), in the order of ``posts``, ready for ``PostOut.of``.

    With ``only_if`` (one post only), the row is written only if that condition
    holds when the statement runs — ``INSERT … SELECT … WHERE``, one statement
    for the check and the write (the single route's quotas,
    :func:`offpost.posts.quotas.room_for`); ``[]`` when it did not hold.
    """
    if not posts:
        return []
    rows = new_post_rows(client_id, posts, now)
    table = cast(Table, Post.__table__)
    if only_if is not None:
        if len(rows) != 1:
            raise ValueError("only_if inserts one post at a time")
        row = rows[0]
        values = select(*(bindparam(None, v, type_=table.c[k].type) for k, v in row.items()))
        written = session.execute(
            insert(table).from_select(list(row), values.where(only_if)).returning(table.c.id)
        ).first()
        if written is None:
            return []
    else:
        # Core on the Table, not the ORM: one executemany (insertmanyvalues batches it
        # into multi-row VALUES), no identity map, no per-object flush bookkeeping.
        session.execute(insert(table), rows)
    record_post_uses(session, rows)
    return [row | NULL_ON_INSERT for row in rows]


def record_post_uses(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Tie the uploads of new post rows to them (retention keeps what a pending post needs)."""
    for row in rows:
        if ids := spec_media_ids(row.get("media")):
            record_uses(session, ids, post_id=row["id"])


def new_post_rows(client_id: str, posts: Sequence[NewPost], now: datetime) -> list[dict[str, Any]]:
    """The rows of new posts, as every insert of posts writes them (one-off posts here,
    a schedule's occurrences in :mod:`offpost.scheduler.materialize`).

    ``due_at`` is ``publish_at``. Rows of one call get ``created_at`` one
    microsecond apart, in order, so that "newest first" lists them in reverse
    input order instead of by their random ids.
    """
    ids = new_post_ids(len(posts))
    rows = []
    for i, post in enumerate(posts):
        created_at = now + timedelta(microseconds=i)
        rows.append(
            {
                "id": ids[i],
                "client_id": client_id,
                "credential_id": post.credential_id,
                "target": post.target,
                "message": post.message,
                "link": post.link,
                "photo_url": post.photo_url,
                "media": post.media,
                "media_kind": spec_kind(post.media),
                "first_comment": post.first_comment,
                "first_comment_status": "pending" if post.first_comment else None,
                "publish_at": post.publish_at,
                "due_at": post.publish_at,
                "status": post.status,
                "schedule_id": post.schedule_id,
                "occurrence_at": post.occurrence_at,
                "attempts": 0,
                "max_attempts": post.max_attempts,
                "created_at": created_at,
                "updated_at": created_at,
            }
        )
    return rows


#: Columns a new post leaves NULL. They stay out of the INSERT: a ``None`` bound to
#: the JSON column ``last_error`` would store JSON ``null``, not SQL ``NULL``.
NULL_ON_INSERT: dict[str, Any] = dict.fromkeys(
    (
        "queued_at",
        "lease_owner",
        "lease_expires_at",
        "graph_post_id",
        "published_at",
        "last_error",
        "reconcile_since",
        "first_comment_id",
    )
)


def earliest_due(posts: Iterable[Mapping[str, Any] | Post]) -> datetime | None:
    """The earliest ``due_at`` among the ``scheduled`` posts (what wakes the dispatcher)."""
    due = [
        p["due_at"] if isinstance(p, Mapping) else p.due_at
        for p in posts
        if (p["status"] if isinstance(p, Mapping) else p.status) is PostStatus.SCHEDULED
    ]
    return min(due) if due else None


# --- reading -------------------------------------------------------------------------------


def _owned(post_id: str, client_id: str | None) -> ColumnElement[bool]:
    condition = Post.id == post_id
    return and_(condition, Post.client_id == client_id) if client_id is not None else condition


def load_post(session: Session, client_id: str | None, post_id: str) -> Post:
    """The post ``post_id`` of ``client_id`` (any client's when ``None``).

    Raises :class:`PostNotFoundError`, also for another client's post.
    """
    post = None
    if is_id(post_id, IdPrefix.POST):
        post = session.scalars(
            select(Post).where(_owned(post_id, client_id)).execution_options(populate_existing=True)
        ).one_or_none()
    if post is None:
        raise PostNotFoundError(f"no post {post_id}")
    return post


def list_posts(
    session: Session,
    client_id: str | None,
    *,
    limit: int,
    status: PostStatus | None = None,
    target: str | None = None,
    schedule_id: str | None = None,
    credential_id: str | None = None,
    since: datetime | None = None,
    after: Cursor | None = None,
) -> tuple[list[Post], Cursor | None]:
    """A page of posts, newest first by ``(created_at, id)``, and the cursor of the next page.

    ``client_id`` ``None`` lists every client's posts (the admin view); ``since``
    keeps the posts created at or after it.
    """
    query = select(Post).order_by(Post.created_at.desc(), Post.id.desc()).limit(limit + 1)
    if client_id is not None:
        query = query.where(Post.client_id == client_id)
    if credential_id is not None:
        query = query.where(Post.credential_id == credential_id)
    if status is not None:
        query = query.where(Post.status == status)
    if target is not None:
        query = query.where(Post.target == target)
    if schedule_id is not None:
        query = query.where(Post.schedule_id == schedule_id)
    if since is not None:
        query = query.where(Post.created_at >= since)
    if after is not None:
        query = query.where(older_than(Post.created_at, Post.id, after))
    return split_page(session.scalars(query).all(), limit, lambda p: (p.created_at, p.id))


# --- guarded changes -----------------------------------------------------------------------


def update_post(
    session: Session,
    client_id: str | None,
    post_id: str,
    changes: Mapping[str, Any],
    now: datetime,
) -> Post:
    """Change the content or ``publish_at`` of an editable post; commits.

    ``changes`` holds only the fields the client sent (``None`` clears a content
    field). A new ``publish_at`` also moves ``due_at`` of a ``scheduled`` or
    ``needs_reauth`` post. Raises :class:`PostInputError` (bad values, or the
    change would leave no content), :class:`PostNotFoundError`,
    :class:`PostStateError`.
    """
    problems = _change_problems(changes, now)
    if problems:
        raise PostInputError(problems)
    values: dict[str, Any] = {
        name: changes[name] for name in (*CONTENT_FIELDS, "publish_at") if name in changes
    }
    if "first_comment" in changes:
        comment = changes["first_comment"]
        values["first_comment"] = comment
        values["first_comment_status"] = "pending" if comment is not None else None
    values["updated_at"] = now
    if "publish_at" in changes:
        values["due_at"] = case(
            (
                Post.status.in_([PostStatus.SCHEDULED, PostStatus.NEEDS_REAUTH]),
                changes["publish_at"],
            ),
            else_=Post.due_at,
        )
    # "Content remains" is part of the guard: the kept fields are read by the same
    # statement that clears the others, so no second request can empty the post between.
    extra: list[ColumnElement[bool]] = []
    sent = [name for name in CONTENT_FIELDS if name in changes]
    if sent and all(changes[name] is None for name in sent):
        kept = [getattr(Post, name).is_not(None) for name in CONTENT_FIELDS if name not in changes]
        kept.append(Post.media.is_not(None))
        extra.append(or_(*kept))
    post = (
        transitions.edit(session, client_id, post_id, values, *extra) if _is_post(post_id) else None
    )
    if post is None:
        current = load_post(session, client_id, post_id)
        if current.status not in EDITABLE_STATUSES:
            raise PostStateError(post_id, current.status, "edited")
        if current.reconcile_since is not None:
            raise _outcome_unknown(current, "edited")
        raise PostInputError(
            [FieldProblem(sent[0], "the post would have no message, link or photo_url left")]
        )
    session.commit()
    return post


def _is_post(post_id: str) -> bool:
    return is_id(post_id, IdPrefix.POST)


def _outcome_unknown(post: Post, action: str) -> PostOutcomeUnknownError:
    known_at = post.due_at if post.status in WAITING_STATUSES else None
    return PostOutcomeUnknownError(post.id, post.status, action, known_at)


def _change_problems(changes: Mapping[str, Any], now: datetime) -> list[FieldProblem]:
    problems = []
    if "publish_at" in changes:
        if changes["publish_at"] is None:
            problems.append(
                FieldProblem("publish_at", "cannot be null: give a time, or omit it to keep it")
            )
        elif why := publish_at_problem(changes["publish_at"], now):
            problems.append(FieldProblem("publish_at", why))
    if all(name in changes for name in CONTENT_FIELDS) and (
        why := content_problem(changes["message"], changes["link"], changes["photo_url"])
    ):
        problems.append(FieldProblem("message", why))
    return problems


def cancel_post(session: Session, client_id: str | None, post_id: str, now: datetime) -> Post:
    """Cancel a post not yet publishing; an already canceled post is returned as it is. Commits.

    Raises :class:`PostNotFoundError`, :class:`PostOutcomeUnknownError` while an
    earlier attempt may have published it, or :class:`PostStateError` once it is
    ``publishing`` or ``published``.
    """
    post = transitions.cancel(session, client_id, post_id, now) if _is_post(post_id) else None
    if post is None:
        post = load_post(session, client_id, post_id)
        if post.status in CANCELABLE_STATUSES and post.reconcile_since is not None:
            raise _outcome_unknown(post, "canceled")
        if post.status is not PostStatus.CANCELED:
            raise PostStateError(post_id, post.status, "canceled")
    session.commit()
    return post


def retry_post(session: Session, client_id: str | None, post_id: str, now: datetime) -> Post:
    """Put a ``failed`` post back to ``scheduled``, due now, with a fresh budget; commits.

    ``last_error`` and ``reconcile_since`` stay (see
    :func:`offpost.models.transitions.retry_failed`). Raises
    :class:`PostNotFoundError`, :class:`PostStateError`.
    """
    post = (
        transitions.retry_failed(session, client_id, post_id, now, DEFAULT_MAX_ATTEMPTS)
        if _is_post(post_id)
        else None
    )
    if post is None:
        current = load_post(session, client_id, post_id)
        raise PostStateError(post_id, current.status, "retried (only a failed post can)")
    session.commit()
    return post
