"""The sandbox's in-memory world: apps, users, Pages, tokens, posts, media, codes and clock.

One :class:`World` per sandbox, guarded by one re-entrant lock (``world.lock``):
every read-modify-write of the world happens while holding it, and nothing
awaits while holding it. Lookups are dictionaries keyed by id or token string.

Time: token lifetimes, post times and usage windows follow the **sandbox
clock**, real time plus an offset that ``POST /_sandbox/clock`` moves forward.
Proof ages do not (see :mod:`.auth`).

Roles: a user has a role on each Page in ``user.page_ids`` (mirrored in
``page.admin_ids``) with the tasks in ``user.page_tasks``. Taking the role away
(:meth:`World.remove_role`) kills that user's Page tokens for that Page with
190/492; giving it back lets ``/me/accounts`` derive a new one.

Token strings are opaque, ``EAA`` followed by base62 characters, shaped like
real ones so that log scrubbers recognise them. App tokens are
``{app_id}|{app_secret}`` literals or ``{app_id}|{random}`` strings issued by
``grant_type=client_credentials``.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from offpost.graph.sandbox.calls import CallLog
from offpost.graph.sandbox.faults import FaultBook
from offpost.graph.sandbox.settings import SandboxSettings
from offpost.graph.sandbox.usage import UsageMeter

SHORT_LIVED_S = 3600
LONG_LIVED_S = 5_184_000
SHORT_PAGE_TOKEN_S = 3600
DATA_ACCESS_S = 7_776_000
DEFAULT_SCOPES = (
    "public_profile",
    "pages_show_list",
    "pages_manage_posts",
    "pages_read_engagement",
    "pages_manage_engagement",
)
#: ``POST /_sandbox/users/{id}/invalidate`` reasons and the 190 subcode each produces.
INVALIDATION_SUBCODES = {"password_changed": 460, "deauthorized": 458, "logged_out": 467}
#: The 190 subcode of a Page token whose user no longer has a role on the Page.
ROLE_LOST_SUBCODE = 492
#: The tasks a person can have on a Page, as ``/me/accounts`` names them.
PAGE_TASK_NAMES = ("ANALYZE", "ADVERTISE", "MESSAGING", "MODERATE", "CREATE_CONTENT", "MANAGE")
#: A Page's creator's tasks (full control), in the order Graph lists them.
DEFAULT_PAGE_TASKS = ("ANALYZE", "ADVERTISE", "MODERATE", "CREATE_CONTENT", "MANAGE")
#: The task ``POST /{page}/feed`` and ``/photos`` need.
PUBLISH_TASK = "CREATE_CONTENT"

_BASE62 = string.ascii_letters + string.digits
_TOKEN_BODY_CHARS = 190


def _random_token() -> str:
    return "EAA" + "".join(secrets.choice(_BASE62) for _ in range(_TOKEN_BODY_CHARS))


def random_app_id() -> str:
    """A numeric app id like Meta's (15 or 16 digits)."""
    return str(10**14 + secrets.randbelow(9 * 10**15))


def random_app_secret() -> str:
    return secrets.token_hex(16)


class TokenKind(StrEnum):
    """The ``type`` debug_token reports."""

    USER = "USER"
    PAGE = "PAGE"
    APP = "APP"


@dataclass(eq=False)
class App:
    app_id: str
    app_secret: str
    name: str
    #: When set, ``/oauth/client_code`` accepts only these redirect URIs.
    redirect_uris: frozenset[str] | None = None


@dataclass(eq=False)
class Token:
    value: str
    kind: TokenKind
    app_id: str
    issued_at: float
    #: Sandbox-clock unix time; ``None`` means it never expires.
    expires_at: float | None
    user_id: str | None = None
    page_id: str | None = None
    long_lived: bool = False
    scopes: tuple[str, ...] = ()
    #: 190 subcode once invalidated (460, 458, 467; 492 for a Page token whose user lost the role).
    invalid_subcode: int | None = None
    #: Page tokens derived from this user token, by Page id.
    page_tokens: dict[str, str] = field(default_factory=dict)
    #: The long-lived token an exchange of this short-lived token produced.
    exchanged_to: str | None = None


@dataclass(eq=False)
class User:
    user_id: str
    name: str
    app_id: str
    scopes: tuple[str, ...]
    #: The Pages the user has a role on, in the order ``/me/accounts`` lists them.
    page_ids: list[str]
    #: The user's tasks on each Page of ``page_ids``.
    page_tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)

    def tasks_on(self, page_id: str) -> tuple[str, ...]:
        """The user's tasks on the Page; none without a role."""
        return self.page_tasks.get(page_id, ()) if page_id in self.page_ids else ()


@dataclass(eq=False)
class Post:
    post_id: str  # "{page_id}_{n}"
    page_id: str
    created_time: float
    message: str | None
    link: str | None
    published: bool = True
    scheduled_publish_time: int | None = None
    photo_id: str | None = None
    photo_url: str | None = None
    #: The app whose token made the post (Graph's ``application`` field); ``None``
    #: for a post a person made in Facebook's own interface.
    app: App | None = None
    #: What the post shows: ``"photo"``, ``"album"`` (several photos) or ``"video"``,
    #: with the ids of its photos or video in order; ``None`` and ``()`` for text.
    media_type: str | None = None
    media_ids: tuple[str, ...] = ()
    #: ``DELETE /{post-id}`` hides it from Graph; control routes still list it.
    deleted: bool = False
    #: When ``POST /{post-id}`` last changed the message; ``None`` until edited.
    updated_time: float | None = None


@dataclass(eq=False)
class Comment:
    """A comment on a post (or on a reel without a post): the Page's or a person's."""

    comment_id: str
    #: The post (or reel video) it is on.
    target_id: str
    created_time: float
    message: str
    #: Who wrote it: the Page itself (a Page token) or a person (a control route).
    from_id: str
    from_name: str
    #: The app whose token made it; ``None`` for a person's comment.
    app: App | None = None


@dataclass(eq=False)
class MediaBytes:
    """What arrived of an uploaded file: never the bytes, only their count and SHA-256."""

    size: int
    sha256: str


@dataclass(eq=False)
class Photo:
    photo_id: str
    page_id: str
    created_time: float
    caption: str | None
    published: bool
    app: App | None
    #: How it came: ``"url"`` (Graph fetched ``url``) or ``"source"`` (multipart).
    origin: str
    url: str | None = None
    filename: str | None = None
    #: ``None`` for a placeholder URL the sandbox does not fetch (see :mod:`.media`).
    content: MediaBytes | None = None
    temporary: bool = False
    #: The post showing it: its own post when published, else the feed post that
    #: attached it (``attached_media``); an unpublished photo is attached once.
    post_id: str | None = None
    attached_to: str | None = None
    deleted: bool = False


@dataclass(eq=False)
class Video:
    """A Page video or reel, from its first upload call to its publication.

    Bytes arrive whole (``file_url``, ``source``) or in order (resumable chunks,
    rupload offsets): ``received`` counts them and ``hasher`` digests them as they
    come, so nothing but the hash state is kept.
    """

    video_id: str
    page_id: str
    created_time: float
    #: ``"video"`` (``/videos``) or ``"reel"`` (``/video_reels``).
    kind: str
    app: App | None
    origin: str
    title: str | None = None
    description: str | None = None
    file_url: str | None = None
    #: The announced size (``file_size``); ``None`` until known.
    file_size: int | None = None
    received: int = 0
    hasher: Any = field(default=None, repr=False)
    sha256: str | None = None
    upload_session_id: str | None = None
    #: Resumable chunks accepted, by start offset: (length, sha256), so a chunk sent
    #: again after a lost reply is recognised and answered, not refused.
    chunks: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: ``None`` until finished; then ``"published"``, ``"draft"`` or ``"scheduled"``.
    publish_status: str | None = None
    publish_time: float | None = None
    #: When the upload was finished (the Reels limit counts these).
    finished_at: float | None = None
    post_id: str | None = None
    #: A rupload body is arriving: another one at the same time is refused.
    uploading: bool = False
    deleted: bool = False

    @property
    def complete(self) -> bool:
        return self.file_size is not None and self.received >= self.file_size


@dataclass(eq=False)
class Page:
    page_id: str
    name: str
    category: str
    #: The users with a role on the Page (whatever their tasks).
    admin_ids: list[str]
    posts: list[Post] = field(default_factory=list)
    #: (message, link) of the newest post, for duplicate detection.
    last_content: tuple[str | None, str | None] | None = None
    #: Whether Graph gives insights for the Page (it does not below 100 likes).
    insights_available: bool = True
    #: The post metrics Graph refuses for this Page; ``None``: the documented ones
    #: (:data:`offpost.graph.sandbox.engagement.DEPRECATED_POST_METRICS`).
    deprecated_metrics: frozenset[str] | None = None


@dataclass(eq=False)
class AuthCode:
    value: str
    app_id: str
    user_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    created_at: float
    used: bool = False


class World:
    """Everything the sandbox knows; use under ``world.lock``."""

    def __init__(
        self, app_id: str, app_secret: str, settings: SandboxSettings | None = None
    ) -> None:
        self.lock = threading.RLock()
        self.default_app_id = app_id
        self._default_app_secret = app_secret
        self._initial_settings = settings or SandboxSettings()
        self.reset()

    def reset(self) -> None:
        """Forget everything but the sandbox's own app; settings and clock back to start."""
        with self.lock:
            self.settings = self._initial_settings
            self.clock_offset_s = 0.0
            self.apps: dict[str, App] = {}
            self.users: dict[str, User] = {}
            self.pages: dict[str, Page] = {}
            self.posts: dict[str, Post] = {}
            self.tokens: dict[str, Token] = {}
            self.codes: dict[str, AuthCode] = {}
            self.photos: dict[str, Photo] = {}
            self.videos: dict[str, Video] = {}
            #: Resumable ``/videos`` upload sessions: session id -> video id.
            self.upload_sessions: dict[str, str] = {}
            #: Comments by the id of the post (or reel) they are on, oldest first.
            self.comments: dict[str, list[Comment]] = {}
            self.faults = FaultBook()
            self.calls = CallLog()
            self.usage = UsageMeter()
            self._used_ids: set[str] = set()
            self._user_counter = 0
            self._page_counter = 0
            self.register_app(self.default_app_id, self._default_app_secret, name="offpost sandbox")

    # --- clock ----------------------------------------------------------------------------

    def now(self) -> float:
        """The sandbox clock (unix seconds)."""
        return time.time() + self.clock_offset_s

    def advance_clock(self, seconds: float) -> float:
        with self.lock:
            self.clock_offset_s += seconds
            return self.now()

    # --- ids and registries ---------------------------------------------------------------

    def new_id(self, digits: int = 15) -> str:
        """A fresh numeric id, unique within this world."""
        with self.lock:
            while True:
                candidate = str(10 ** (digits - 1) + secrets.randbelow(9 * 10 ** (digits - 1)))
                if candidate not in self._used_ids:
                    self._used_ids.add(candidate)
                    return candidate

    def register_app(
        self,
        app_id: str,
        app_secret: str,
        *,
        name: str | None = None,
        redirect_uris: frozenset[str] | None = None,
    ) -> App:
        with self.lock:
            app = App(app_id, app_secret, name or f"Sandbox App {app_id}", redirect_uris)
            self.apps[app_id] = app
            return app

    def create_user(
        self,
        *,
        name: str | None,
        pages: int,
        scopes: tuple[str, ...],
        app_id: str,
        page_tasks: tuple[str, ...] = DEFAULT_PAGE_TASKS,
    ) -> tuple[User, Token]:
        """A user of ``app_id`` with a role on ``pages`` new Pages, with a short-lived token.

        The user has ``page_tasks`` on every one of them.
        """
        with self.lock:
            self._user_counter += 1
            user = User(
                user_id=self.new_id(),
                name=name or f"Sandbox User {self._user_counter}",
                app_id=app_id,
                scopes=scopes,
                page_ids=[],
            )
            self.users[user.user_id] = user
            for _ in range(pages):
                self._page_counter += 1
                page = Page(
                    page_id=self.new_id(),
                    name=f"Sandbox Page {self._page_counter}",
                    category="Brand",
                    admin_ids=[user.user_id],
                )
                self.pages[page.page_id] = page
                user.page_ids.append(page.page_id)
                user.page_tasks[page.page_id] = page_tasks
            return user, self.login(user.user_id)

    def login(self, user_id: str) -> Token:
        """A new short-lived user token, as Facebook Login hands a client."""
        with self.lock:
            user = self.users[user_id]
            return self.mint_user_token(user, long_lived=False)

    def invalidate_user(self, user_id: str, subcode: int) -> int:
        """Invalidate every token of the user and every Page token derived from them."""
        with self.lock:
            count = 0
            for value in self.users[user_id].tokens:
                token = self.tokens[value]
                for derived in (value, *token.page_tokens.values()):
                    self.tokens[derived].invalid_subcode = subcode
                    count += 1
            return count

    # --- roles ----------------------------------------------------------------------------

    def grant_role(self, user_id: str, page_id: str, tasks: tuple[str, ...]) -> None:
        """Give the user a role with ``tasks`` on the Page, or change the tasks of the one
        they have. Page tokens killed by an earlier :meth:`remove_role` stay dead: the
        user must derive new ones, as after a real re-login."""
        with self.lock:
            user, page = self.users[user_id], self.pages[page_id]
            if page_id not in user.page_ids:
                user.page_ids.append(page_id)
            if user_id not in page.admin_ids:
                page.admin_ids.append(user_id)
            user.page_tasks[page_id] = tasks

    def remove_role(self, user_id: str, page_id: str) -> int:
        """Take the user's role on the Page away; returns how many Page tokens it invalidated.

        Every Page token of that Page derived from the user's tokens fails with
        190/:data:`ROLE_LOST_SUBCODE` from now on, like Graph's tokens for a Page the
        person no longer manages. The user's own tokens and their other Pages' tokens
        keep working.
        """
        with self.lock:
            user, page = self.users[user_id], self.pages[page_id]
            if page_id in user.page_ids:
                user.page_ids.remove(page_id)
            if user_id in page.admin_ids:
                page.admin_ids.remove(user_id)
            user.page_tasks.pop(page_id, None)
            count = 0
            for token in self.tokens.values():
                if (
                    token.kind is TokenKind.PAGE
                    and token.user_id == user_id
                    and token.page_id == page_id
                    and token.invalid_subcode is None
                ):
                    token.invalid_subcode = ROLE_LOST_SUBCODE
                    count += 1
            return count

    # --- tokens ---------------------------------------------------------------------------

    def _store(self, token: Token) -> Token:
        self.tokens[token.value] = token
        if token.user_id is not None and token.kind is TokenKind.USER:
            self.users[token.user_id].tokens.append(token.value)
        return token

    def mint_user_token(self, user: User, *, long_lived: bool) -> Token:
        with self.lock:
            now = self.now()
            lifetime = LONG_LIVED_S if long_lived else SHORT_LIVED_S
            return self._store(
                Token(
                    value=_random_token(),
                    kind=TokenKind.USER,
                    app_id=user.app_id,
                    issued_at=now,
                    expires_at=now + lifetime,
                    user_id=user.user_id,
                    long_lived=long_lived,
                    scopes=user.scopes,
                )
            )

    def page_token_for(self, user_token: Token, page_id: str) -> Token:
        """The Page token derived from ``user_token`` (reused while it is alive).

        Never expires when derived from a long-lived user token, 1 h otherwise (docs/graph.md).
        An invalidated one (a lost role, say) is never handed out again: a new one replaces it.
        """
        with self.lock:
            now = self.now()
            existing = self.tokens.get(user_token.page_tokens.get(page_id, ""))
            if (
                existing is not None
                and existing.invalid_subcode is None
                and (existing.expires_at is None or existing.expires_at > now)
            ):
                return existing
            token = self._store(
                Token(
                    value=_random_token(),
                    kind=TokenKind.PAGE,
                    app_id=user_token.app_id,
                    issued_at=now,
                    expires_at=None if user_token.long_lived else now + SHORT_PAGE_TOKEN_S,
                    user_id=user_token.user_id,
                    page_id=page_id,
                    long_lived=user_token.long_lived,
                    scopes=user_token.scopes,
                    invalid_subcode=user_token.invalid_subcode,
                )
            )
            user_token.page_tokens[page_id] = token.value
            return token

    def mint_app_token(self, app: App) -> Token:
        """An app token as ``grant_type=client_credentials`` issues it (never expires)."""
        with self.lock:
            value = f"{app.app_id}|{secrets.token_urlsafe(20)}"
            return self._store(
                Token(value, TokenKind.APP, app.app_id, issued_at=self.now(), expires_at=None)
            )

    def find_token(self, value: str) -> Token | None:
        """The token with this string, or ``None``; resolves ``app_id|app_secret`` literals.

        A literal whose app exists but whose secret is wrong is returned as a token
        of app id ``""`` so the caller can report a bad signature.
        """
        with self.lock:
            token = self.tokens.get(value)
            if token is not None or "|" not in value:
                return token
            app_id, _, secret = value.partition("|")
            app = self.apps.get(app_id)
            if app is None:
                return None
            if not secrets.compare_digest(app.app_secret.encode(), secret.encode()):
                return Token(value, TokenKind.APP, "", issued_at=0.0, expires_at=None)
            return Token(value, TokenKind.APP, app_id, issued_at=0.0, expires_at=None)

    # --- codes ----------------------------------------------------------------------------

    def new_code(self, token: Token, redirect_uri: str) -> AuthCode:
        with self.lock:
            assert token.user_id is not None
            code = AuthCode(
                value=secrets.token_urlsafe(48),
                app_id=token.app_id,
                user_id=token.user_id,
                redirect_uri=redirect_uri,
                scopes=token.scopes,
                created_at=self.now(),
            )
            self.codes[code.value] = code
            return code

    # --- posts ----------------------------------------------------------------------------

    def add_post(self, page: Page, post: Post) -> Post:
        with self.lock:
            page.posts.append(post)
            self.posts[post.post_id] = post
            if post.message is not None or post.link is not None:
                page.last_content = (post.message, post.link)
            return post
