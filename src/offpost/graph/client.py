"""The Graph API client: the calls offpost makes, on one shared ``httpx.Client``.

Every request goes through :meth:`GraphClient._call`, the one place where:

- the URL is built: ``{graph_url}/{version}/{path}``;
- a token is attached by :class:`GraphTokenAuth` as ``access_token`` plus
  ``appsecret_proof`` (and ``appsecret_time`` in timed mode), computed per call
  from the injected clock, in the query string — for some POST endpoints a proof
  sent only in a form body was ignored (docs/graph.md); POST fields go in the body;
- the whole reply must arrive within one deadline (``deadline_s``, by default
  the read timeout): httpx bounds each read, so a reply that trickles in a few
  bytes at a time would otherwise hold a worker far beyond its lease. The
  deadline is checked as the body arrives, so a call ends at the latest one
  read timeout after it; a body beyond :data:`MAX_REPLY_BYTES` is refused;
- transport exceptions are translated into :mod:`offpost.graph.errors` with
  messages that say in a sentence what went wrong, naming only the method and
  path (the query holds the token), and whether the call may have taken effect;
- the reply is classified by :func:`offpost.graph.classify.classify_error`;
- malformed or absurd usage headers are ignored or capped
  (:func:`offpost.graph.usage.read_usage`), with one warning per header per
  client, naming the header but not its value.

Methods return the frozen dataclasses of :mod:`offpost.graph.types` and raise
:class:`~offpost.graph.errors.GraphError` subclasses, nothing else.

Note that httpx itself logs each request URL (query included) at INFO on the
``httpx`` logger; processes must install the token-scrubbing log filter.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from urllib.parse import quote

import httpx

from offpost.graph.classify import classify_error
from offpost.graph.errors import (
    GraphConnectionError,
    GraphError,
    GraphMalformedResponseError,
    GraphPermissionError,
    GraphTimeoutError,
    scrub_secrets,
)
from offpost.graph.parse import (
    JsonObject,
    form_token_body,
    granular_scopes,
    graph_time,
    next_page_params,
    opt_id,
    opt_str,
    positive_int,
    require_str,
    str_tuple,
    token_info_error,
    unix_time,
)
from offpost.graph.proof import proof_params
from offpost.graph.types import (
    ClientCode,
    FeedPost,
    PageAccount,
    PageAccounts,
    PagePosts,
    PageToken,
    PublishResult,
    TokenExchange,
    TokenInfo,
    UserInfo,
)
from offpost.graph.usage import GraphUsage, read_usage

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_POOL_TIMEOUT_S = 5.0
#: Enough result pages for thousands of Pages or posts; a guard against a paging loop.
DEFAULT_MAX_PAGES = 50
#: Graph's replies are kilobytes; a body beyond this is not one of them.
MAX_REPLY_BYTES = 8 * 1024 * 1024


def make_http_client(
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
    max_connections: int = 20,
    max_keepalive_connections: int | None = None,
    per_thread: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """The ``httpx.Client`` for Graph: one per process, bounded in time and connections.

    Every connection the client may open is kept alive for the next call by
    default (``max_keepalive_connections``): with fewer kept than used, each
    call beyond them paid a new TCP connection, on both ends.

    ``per_thread`` gives each calling thread a pool of its own (a worker's many
    publish threads): see :class:`PerThreadTransport`. ``max_connections`` then
    bounds the connections of each thread, not of the client.

    ``timeout_s`` bounds each read and write; :class:`GraphClient` also makes it
    the deadline of a whole reply, so a call ends within about twice ``timeout_s``
    (plus the connect timeout) whatever Graph does. Celery time limits and
    leases must sit well above that.
    """
    return httpx.Client(
        timeout=httpx.Timeout(
            connect=connect_timeout_s, read=timeout_s, write=timeout_s, pool=pool_timeout_s
        ),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=(
                max_connections if max_keepalive_connections is None else max_keepalive_connections
            ),
        ),
        follow_redirects=False,
        headers={"User-Agent": "offpost"},
        transport=transport or (PerThreadTransport(max_connections) if per_thread else None),
    )


class PerThreadTransport(httpx.BaseTransport):
    """One small connection pool per calling thread, instead of one pool for all.

    httpcore's pool walks every connection, under one lock, for each request it
    sends and each response it closes: with dozens of publish threads sharing
    one pool of dozens of connections, that bookkeeping cost more CPU than the
    request itself. A thread makes one call at a time, so a pool of its own
    never waits, and holds one kept-alive connection to Graph.
    """

    def __init__(self, max_connections: int = 2) -> None:
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        # One TLS context for all (each one loads the CA bundle: time and memory).
        self._ssl = httpx.create_ssl_context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._transports: list[httpx.HTTPTransport] = []

    def _own(self) -> httpx.HTTPTransport:
        transport: httpx.HTTPTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = httpx.HTTPTransport(verify=self._ssl, limits=self._limits)
            self._local.transport = transport
            with self._lock:
                self._transports.append(transport)
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._own().handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()


class GraphTokenAuth(httpx.Auth):
    """Attaches ``access_token`` and its ``appsecret_proof`` to the query of one request."""

    def __init__(
        self, access_token: str, *, app_secret: str, timed: bool, clock: Callable[[], float]
    ) -> None:
        self._access_token = access_token
        self._app_secret = app_secret
        self._timed = timed
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # Computed when the request is sent, so a timed proof is as fresh as it can be.
        params = {
            "access_token": self._access_token,
            **proof_params(
                self._app_secret, self._access_token, timed=self._timed, now_s=int(self._clock())
            ),
        }
        request.url = request.url.copy_merge_params(params)
        yield request


class GraphClient:
    """The Graph calls offpost makes. Raises only :class:`GraphError` subclasses."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        graph_url: str,
        version: str,
        app_id: str,
        app_secret: str,
        appsecret_time: bool = True,
        clock: Callable[[], float] = time.time,
        deadline_s: float | None = None,
    ) -> None:
        """``deadline_s`` bounds the time from sending a request to the last byte of its
        reply; by default it is ``http``'s read timeout."""
        self._http = http
        self._deadline_s = deadline_s or http.timeout.read or DEFAULT_TIMEOUT_S
        self._warned_headers: set[str] = set()
        self._warned_lock = threading.Lock()
        self._base_url = f"{graph_url.rstrip('/')}/{version.strip('/')}"
        self._app_id = app_id
        self._app_secret = app_secret
        self._timed = appsecret_time
        self._clock = clock

    @property
    def app_token(self) -> str:
        """The app access token, ``{app-id}|{app-secret}`` (docs/graph.md)."""
        return f"{self._app_id}|{self._app_secret}"

    # -- tokens ---------------------------------------------------------------

    def exchange_token(self, short_lived_token: str) -> TokenExchange:
        """Exchange a short-lived user token for a long-lived one (``fb_exchange_token``).

        Tolerates a missing ``expires_in``, the legacy ``expires`` key and a legacy
        form-encoded body. The call authenticates with ``client_secret``, as
        documented; it carries no ``access_token``, hence no proof.
        """
        body, usage = self._call(
            "GET",
            "oauth/access_token",
            params={
                "grant_type": "fb_exchange_token",
                "client_id": self._app_id,
                "client_secret": self._app_secret,
                "fb_exchange_token": short_lived_token,
            },
            secrets=(short_lived_token,),
            accept_form=True,
        )
        return TokenExchange(
            access_token=require_str(body, "access_token", "the token exchange", usage),
            token_type=opt_str(body.get("token_type")),
            expires_in=positive_int(body.get("expires_in", body.get("expires"))),
            usage=usage,
        )

    def debug_token(self, input_token: str) -> TokenInfo:
        """Inspect ``input_token`` with the app token. An invalid token is a normal
        result (``is_valid=False`` with ``error``); only a failed call raises."""
        body, usage = self._call(
            "GET",
            "debug_token",
            token=self.app_token,
            params={"input_token": input_token},
            secrets=(input_token,),
        )
        data = body.get("data")
        if not isinstance(data, dict):
            raise GraphMalformedResponseError(
                "debug_token answered without a data object", is_transient=True, usage=usage
            )
        return TokenInfo(
            is_valid=data.get("is_valid") is True,
            app_id=opt_id(data.get("app_id")),
            type=opt_str(data.get("type")),
            application=opt_str(data.get("application")),
            user_id=opt_id(data.get("user_id")),
            profile_id=opt_id(data.get("profile_id")),
            expires_at=unix_time(data.get("expires_at")),
            data_access_expires_at=unix_time(data.get("data_access_expires_at")),
            issued_at=unix_time(data.get("issued_at")),
            scopes=str_tuple(data.get("scopes")),
            granular_scopes=granular_scopes(data.get("granular_scopes")),
            error=token_info_error(data.get("error")),
            usage=usage,
        )

    def me(self, user_token: str) -> UserInfo:
        """The app-scoped user behind ``user_token`` (``/me?fields=id,name``)."""
        body, usage = self._call("GET", "me", token=user_token, params={"fields": "id,name"})
        return UserInfo(
            id=require_str(body, "id", "/me", usage), name=opt_str(body.get("name")), usage=usage
        )

    def accounts(self, user_token: str, *, max_pages: int = DEFAULT_MAX_PAGES) -> PageAccounts:
        """Every Page the user can act on, with its Page token (``/me/accounts``, all pages)."""
        items, usage = self._paged(
            "me/accounts",
            token=user_token,
            params={"fields": "id,name,access_token,tasks"},
            max_pages=max_pages,
        )
        pages = tuple(
            PageAccount(
                id=require_str(item, "id", "/me/accounts", usage),
                name=opt_str(item.get("name")),
                access_token=opt_str(item.get("access_token")),
                tasks=str_tuple(item.get("tasks")),
            )
            for item in items
        )
        return PageAccounts(pages=pages, usage=usage)

    def page_token(self, page_id: str, user_token: str) -> PageToken:
        """The Page token of one Page, derived from ``user_token``.

        Raises :class:`GraphPermissionError` when Graph lists the Page without a
        token (the user has no task on it, or it was not granted to the app).
        """
        body, usage = self._call(
            "GET", _path(page_id), token=user_token, params={"fields": "access_token"}
        )
        token = opt_str(body.get("access_token"))
        if token is None:
            raise GraphPermissionError(
                f"Graph gave no access_token for Page {page_id}: the user has no task on it "
                "or did not grant it to the app",
                usage=usage,
            )
        return PageToken(page_id=page_id, access_token=token, usage=usage)

    def client_code(self, user_token: str, redirect_uri: str) -> ClientCode:
        """A one-time code a client redeems for its own long-lived token (``oauth/client_code``)."""
        body, usage = self._call(
            "GET",
            "oauth/client_code",
            token=user_token,
            params={
                "client_id": self._app_id,
                "client_secret": self._app_secret,
                "redirect_uri": redirect_uri,
            },
        )
        return ClientCode(code=require_str(body, "code", "/oauth/client_code", usage), usage=usage)

    # -- publishing -----------------------------------------------------------

    def publish_feed(
        self, page_id: str, page_token: str, *, message: str | None = None, link: str | None = None
    ) -> PublishResult:
        """Publish a post on the Page's feed; at least one of ``message`` and ``link``.

        Not idempotent: on a :class:`GraphError` with ``outcome_unknown`` the post
        may exist — reconcile before retrying.
        """
        if not message and not link:
            raise ValueError("a feed post needs a message or a link")
        fields = {name: value for name, value in (("message", message), ("link", link)) if value}
        body, usage = self._call("POST", f"{_path(page_id)}/feed", token=page_token, data=fields)
        post_id = require_str(body, "id", "/feed", usage)
        return PublishResult(id=post_id, post_id=post_id, usage=usage)

    def publish_photo(
        self, page_id: str, page_token: str, *, url: str, caption: str | None = None
    ) -> PublishResult:
        """Publish a photo (fetched by Graph from ``url``) as a Page post.

        ``id`` is the photo id, ``post_id`` the Page post id. Not idempotent (see
        :meth:`publish_feed`).
        """
        fields = {"url": url, **({"caption": caption} if caption else {})}
        body, usage = self._call("POST", f"{_path(page_id)}/photos", token=page_token, data=fields)
        return PublishResult(
            id=require_str(body, "id", "/photos", usage),
            post_id=opt_id(body.get("post_id")),
            usage=usage,
        )

    def page_posts(
        self,
        page_id: str,
        page_token: str,
        *,
        since: datetime | None = None,
        limit: int = 100,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> PagePosts:
        """The Page's feed posts created at or after ``since`` (aware), all result pages.

        Used to reconcile: "did our lost call create the post?".
        """
        params = {"fields": "id,message,link,created_time,application", "limit": str(limit)}
        since_s: int | None = None
        if since is not None:
            if since.tzinfo is None:
                raise ValueError("since must be timezone-aware")
            since_s = int(since.timestamp())
            params["since"] = str(since_s)
        items, usage = self._paged(
            f"{_path(page_id)}/feed", token=page_token, params=params, max_pages=max_pages
        )
        posts = [
            FeedPost(
                id=require_str(item, "id", "/feed", usage),
                message=opt_str(item.get("message")),
                link=opt_str(item.get("link")),
                created_time=graph_time(item.get("created_time"), usage),
                application_id=_application_id(item.get("application")),
            )
            for item in items
        ]
        if since_s is not None:
            # Graph's own since filter is trusted but not relied on.
            posts = [p for p in posts if p.created_time.timestamp() >= since_s]
        return PagePosts(posts=tuple(posts), usage=usage)

    # -- the one request path -------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        accept_form: bool = False,
    ) -> tuple[JsonObject, GraphUsage]:
        """Send one request; return its JSON object and usage, or raise a :class:`GraphError`."""
        url = f"{self._base_url}/{path}"
        where = f"{method} /{path}"
        known_secrets = (*secrets, *((token,) if token else ()), self._app_secret)
        auth = (
            GraphTokenAuth(token, app_secret=self._app_secret, timed=self._timed, clock=self._clock)
            if token is not None
            else None
        )
        started = time.monotonic()
        try:
            request = self._http.build_request(method, url, params=params, data=data)
            response = self._http.send(request, auth=auth, stream=True)
        except httpx.RequestError as exc:  # nothing came back: no status line, no headers
            raise self._transport_error(exc, where, known_secrets) from exc
        try:
            content = self._read_body(response, where, started, known_secrets)
        finally:
            response.close()
        duration_ms = round((time.monotonic() - started) * 1000)
        logger.debug(
            "graph %s -> %s in %s ms",
            where,
            response.status_code,
            duration_ms,
            extra={
                "action": "graph_call",
                "method": method,
                "path": f"/{path}",
                "http_status": response.status_code,
                "duration_ms": duration_ms,
            },
        )
        usage, problems = read_usage(response.headers)
        if problems:
            self._warn_usage(where, problems)
        if accept_form and response.is_success:
            form = form_token_body(content)
            if form is not None:
                return form, usage
        error = classify_error(
            response.status_code,
            content,
            response.headers.get("content-type"),
            response.headers,
            call=where,
        )
        if error is not None:
            raise error
        # classify_error returns None only for a 2xx JSON object.
        body: JsonObject = json.loads(content)
        return body, usage

    def _read_body(
        self, response: httpx.Response, where: str, started: float, secrets: tuple[str, ...]
    ) -> bytes:
        """The whole body, read before the deadline; a reply cut off, late or huge raises."""
        deadline = started + self._deadline_s
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise GraphMalformedResponseError(
                        f"Graph's reply to {where} was larger than {MAX_REPLY_BYTES} bytes "
                        f"and was not read to the end{_may_have_acted(where)}",
                        http_status=response.status_code,
                        is_transient=True,
                    )
                if time.monotonic() > deadline:
                    raise GraphTimeoutError(
                        f"Graph's reply to {where} was still arriving after "
                        f"{self._deadline_s:g} s (it came a little at a time), so offpost "
                        f"stopped waiting{_may_have_acted(where)}",
                        http_status=response.status_code,
                        is_transient=True,
                    )
        except httpx.TimeoutException as exc:
            raise GraphTimeoutError(
                f"Graph's reply to {where} stalled for longer than "
                f"{self._http.timeout.read or 0:g} s after {size} bytes{_may_have_acted(where)}",
                http_status=response.status_code,
                is_transient=True,
            ) from exc
        except httpx.RequestError as exc:
            detail = scrub_secrets(str(exc), secrets) or "no detail"
            raise GraphMalformedResponseError(
                f"Graph's reply to {where} was cut off after {size} bytes "
                f"({type(exc).__name__}: {detail}){_may_have_acted(where)}",
                http_status=response.status_code,
                is_transient=True,
            ) from exc
        return b"".join(chunks)

    def _transport_error(
        self, exc: httpx.RequestError, where: str, secrets: tuple[str, ...]
    ) -> GraphError:
        """Our error for an httpx failure before any reply: a sentence naming only the call."""
        cause = f"{type(exc).__name__}: {scrub_secrets(str(exc), secrets) or 'no detail'}"
        timeouts = self._http.timeout
        # These fail before a byte of the request is sent, so the call surely did not run.
        if isinstance(exc, httpx.ConnectTimeout):
            return GraphTimeoutError(
                f"offpost could not connect to Graph for {where} within "
                f"{timeouts.connect or 0:g} s ({cause}); the call was not sent",
                is_transient=True,
                outcome_unknown=False,
            )
        if isinstance(exc, httpx.PoolTimeout):
            return GraphTimeoutError(
                f"no connection to Graph was free for {where} within {timeouts.pool or 0:g} s "
                f"({cause}); the call was not sent",
                is_transient=True,
                outcome_unknown=False,
            )
        if isinstance(exc, httpx.ConnectError):
            return GraphConnectionError(
                f"offpost could not connect to Graph for {where} ({cause}); the call was not sent",
                is_transient=True,
                outcome_unknown=False,
            )
        if isinstance(exc, httpx.WriteTimeout):
            return GraphTimeoutError(
                f"sending {where} to Graph took longer than {timeouts.write or 0:g} s "
                f"({cause}){_may_have_acted(where)}",
                is_transient=True,
            )
        if isinstance(exc, httpx.TimeoutException):
            return GraphTimeoutError(
                f"Graph did not answer {where} within {timeouts.read or 0:g} s "
                f"({cause}){_may_have_acted(where)}",
                is_transient=True,
            )
        if isinstance(exc, httpx.DecodingError):
            return GraphMalformedResponseError(
                f"Graph's reply to {where} could not be decoded ({cause}){_may_have_acted(where)}",
                is_transient=True,
            )
        if isinstance(exc, httpx.RemoteProtocolError):
            return GraphConnectionError(
                f"Graph closed the connection during {where} without replying "
                f"({cause}){_may_have_acted(where)}",
                is_transient=True,
            )
        return GraphConnectionError(
            f"the connection to Graph broke during {where} ({cause}){_may_have_acted(where)}",
            is_transient=True,
        )

    def _warn_usage(self, where: str, problems: tuple[str, ...]) -> None:
        """One warning per usage header per client; later ones go to the debug log."""
        headers = {problem.split(":", 1)[0] for problem in problems}
        with self._warned_lock:
            fresh = headers - self._warned_headers
            self._warned_headers |= fresh
        logger.log(
            logging.WARNING if fresh else logging.DEBUG,
            "Graph sent unusable usage headers with %s: %s",
            where,
            "; ".join(problems),
            extra={"action": "graph_usage_header_ignored", "headers": sorted(headers)},
        )

    def _paged(
        self, path: str, *, token: str, params: Mapping[str, str], max_pages: int
    ) -> tuple[list[JsonObject], GraphUsage]:
        """Every ``data`` item of a listing, following ``paging.next`` on our own base URL."""
        items: list[JsonObject] = []
        page_params = dict(params)
        seen: list[dict[str, str]] = []
        for _ in range(max_pages):
            body, usage = self._call("GET", path, token=token, params=page_params)
            data = body.get("data")
            if not isinstance(data, list):
                raise GraphMalformedResponseError(
                    f"/{path} answered without a data list", is_transient=True, usage=usage
                )
            items.extend(item for item in data if isinstance(item, dict))
            next_params = next_page_params(body.get("paging"), params)
            # An empty page does not end a listing: Graph may filter a page down to
            # nothing and still name the next one. Only a missing ``next`` ends it.
            if next_params is None:
                return items, usage
            if next_params in seen:
                raise GraphMalformedResponseError(
                    f"/{path} paging repeats itself", is_transient=True, usage=usage
                )
            seen.append(next_params)
            page_params = next_params
        raise GraphMalformedResponseError(
            f"/{path} paging did not end after {max_pages} pages", is_transient=True
        )


def _path(object_id: str) -> str:
    """A Graph object id as one path segment (ids are digits; anything else is quoted)."""
    return quote(object_id, safe="_")


def _may_have_acted(where: str) -> str:
    """How a message about a lost reply ends: whether the call may have had an effect."""
    if where.startswith("GET "):
        return ""
    return "; Graph may have acted on it"


def _application_id(value: object) -> str | None:
    """The ``id`` of a post's ``application`` object, if Graph gave one."""
    if isinstance(value, dict):
        return opt_id(value.get("id"))
    return None
