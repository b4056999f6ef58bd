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
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime
from urllib.parse import quote, urlencode

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
    attachment_media_ids,
    form_token_body,
    granular_scopes,
    graph_time,
    insights_values,
    next_page_params,
    opt_bool,
    opt_graph_time,
    opt_id,
    opt_str,
    parse_video_status,
    positive_int,
    require_offset,
    require_str,
    share_count,
    str_tuple,
    summary_total,
    token_info_error,
    unix_time,
    video_status_name,
)
from offpost.graph.proof import proof_params
from offpost.graph.types import (
    BatchPublish,
    ClientCode,
    FeedPost,
    PageAccount,
    PageAccounts,
    PagePhoto,
    PagePhotos,
    PagePosts,
    PageToken,
    PageVideo,
    PageVideos,
    PostComment,
    PostComments,
    PostInsights,
    PostStats,
    PublishResult,
    ReelUpload,
    TokenExchange,
    TokenInfo,
    UserInfo,
    VideoStatus,
    VideoUploadOffsets,
    VideoUploadSession,
)
from offpost.graph.usage import GraphUsage, read_usage

logger = logging.getLogger(__name__)

#: One multipart file: (file name, bytes, content type).
FileField = tuple[str, bytes, str]

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_POOL_TIMEOUT_S = 5.0
#: Enough result pages for thousands of Pages or posts; a guard against a paging loop.
DEFAULT_MAX_PAGES = 50
#: Graph's replies are kilobytes; a body beyond this is not one of them.
MAX_REPLY_BYTES = 8 * 1024 * 1024
#: Where reels' bytes go (``upload_url``s must point here, or at a sandbox's own origin).
DEFAULT_RUPLOAD_URL = "https://rupload.facebook.com"
#: offpost attaches at most this many photos to one feed post (Graph documents no limit).
MAX_ATTACHED_MEDIA = 10
#: Graph's error subcode for a resumable chunk at the wrong offset; ``error_data``
#: names the window it expects (read by Meta's facebook-business ``VideoUploader``).
CHUNK_OFFSET_SUBCODE = 1363037
#: Graph runs at most this many calls in one batch request (Meta: Batch Requests).
MAX_BATCH_CALLS = 50


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
    """Attaches ``access_token`` and its ``appsecret_proof`` to the query of one request.

    ``in_header`` sends the token as ``Authorization: OAuth <token>`` instead, as the
    rupload host wants it; the proof still goes in the query.
    """

    def __init__(
        self,
        access_token: str,
        *,
        app_secret: str,
        timed: bool,
        clock: Callable[[], float],
        in_header: bool = False,
    ) -> None:
        self._access_token = access_token
        self._app_secret = app_secret
        self._timed = timed
        self._clock = clock
        self._in_header = in_header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # Computed when the request is sent, so a timed proof is as fresh as it can be.
        params = proof_params(
            self._app_secret, self._access_token, timed=self._timed, now_s=int(self._clock())
        )
        if self._in_header:
            request.headers["Authorization"] = f"OAuth {self._access_token}"
        else:
            params = {"access_token": self._access_token, **params}
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
        rupload_url: str | None = None,
    ) -> None:
        """``deadline_s`` bounds the time from sending a request to the last byte of its
        reply; by default it is ``http``'s read timeout.

        ``rupload_url`` is the host reels' bytes may go to (default
        ``https://rupload.facebook.com``); see :meth:`reel_upload`. Video uploads go
        to ``graph-video.facebook.com`` when ``graph_url`` is ``graph.facebook.com``,
        as Meta's video upload guide asks, else to ``graph_url`` (a sandbox).
        """
        self._http = http
        self._deadline_s = deadline_s or http.timeout.read or DEFAULT_TIMEOUT_S
        self._warned_headers: set[str] = set()
        self._warned_lock = threading.Lock()
        self._base_url = f"{graph_url.rstrip('/')}/{version.strip('/')}"
        self._video_base_url = f"{_video_graph_url(graph_url)}/{version.strip('/')}"
        self._upload_origins = _upload_origins(graph_url, rupload_url or DEFAULT_RUPLOAD_URL)
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
        self,
        page_id: str,
        page_token: str,
        *,
        message: str | None = None,
        link: str | None = None,
        attached_media: Sequence[str] = (),
    ) -> PublishResult:
        """Publish a post on the Page's feed: a ``message``, a ``link``, and/or photos.

        ``attached_media`` are ids of the Page's unpublished photos
        (:meth:`upload_photo` with ``published=False``), at most
        :data:`MAX_ATTACHED_MEDIA`, shown in this order; Graph refuses (100) one that is
        not the Page's, is published, or is already attached.

        Not idempotent: on a :class:`GraphError` with ``outcome_unknown`` the post
        may exist — reconcile before retrying.
        """
        media = _media_ids(attached_media)
        if not message and not link and not media:
            raise ValueError("a feed post needs a message or a link (or attached media)")
        fields = {name: value for name, value in (("message", message), ("link", link)) if value}
        for index, media_id in enumerate(media):
            fields[f"attached_media[{index}]"] = json.dumps({"media_fbid": media_id})
        body, usage = self._call("POST", f"{_path(page_id)}/feed", token=page_token, data=fields)
        return _published(body, "feed", usage)

    def publish_photo(
        self, page_id: str, page_token: str, *, url: str, caption: str | None = None
    ) -> PublishResult:
        """Publish a photo (fetched by Graph from ``url``) as a Page post.

        ``id`` is the photo id, ``post_id`` the Page post id. Not idempotent (see
        :meth:`publish_feed`).
        """
        fields = {"url": url, **({"caption": caption} if caption else {})}
        body, usage = self._call("POST", f"{_path(page_id)}/photos", token=page_token, data=fields)
        return _published(body, "photos", usage)

    def page_posts(
        self,
        page_id: str,
        page_token: str,
        *,
        since: datetime | None = None,
        limit: int = 100,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> PagePosts:
        """The Page's feed posts created at or after ``since`` (aware), all result pages,
        each with the ids of the photos or video it shows (``attachments``).

        Used to reconcile: "did our lost call create the post?".
        """
        params = {"fields": _FEED_FIELDS, "limit": str(limit)}
        since_s = _since_s(since)
        if since_s is not None:
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
                media_ids=attachment_media_ids(item.get("attachments")),
            )
            for item in items
        ]
        if since_s is not None:
            # Graph's own since filter is trusted but not relied on.
            posts = [p for p in posts if p.created_time.timestamp() >= since_s]
        return PagePosts(posts=tuple(posts), usage=usage)

    def publish_batch(self, items: Sequence[BatchPublish]) -> list[PublishResult | GraphError]:
        """Publish up to :data:`MAX_BATCH_CALLS` posts, on any Pages, in one HTTP request.

        Graph's batch API (docs/graph.md, "Batch requests"): ``POST /`` with ``batch``,
        a JSON array of calls, and ``include_headers=true``. Each call carries its own
        Page token with that token's ``appsecret_proof`` in its ``relative_url`` query,
        as a single call does; the request's own ``access_token`` (Graph requires one)
        is the first item's, with its proof. One answer per item, in order: what
        :meth:`publish_feed` or :meth:`publish_photo` would have returned, or the
        :class:`GraphError` it would have raised, classified from that item's own
        status, headers and body. An item Graph left unfinished (``null``) is a
        timeout whose outcome is unknown.

        Raises a :class:`GraphError` when the request as a whole failed: no reply (the
        outcome of every item is then unknown), a top-level error, or a reply that is
        not one answer per item.
        """
        if not 0 < len(items) <= MAX_BATCH_CALLS:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_CALLS} calls, not {len(items)}")
        now_s = int(self._clock())
        calls = [self._batch_call(item, now_s) for item in items]
        where = f"POST / (a batch of {len(items)})"
        first = items[0].page_token
        secrets = (*{item.page_token for item in items}, self._app_secret)
        auth = GraphTokenAuth(
            first, app_secret=self._app_secret, timed=self._timed, clock=self._clock
        )
        response, content = self._exchange(
            self._http.build_request(
                "POST",
                f"{self._base_url}/",
                data={"batch": json.dumps(calls, separators=(",", ":")), "include_headers": "true"},
            ),
            where,
            auth,
            secrets,
        )
        usage, problems = read_usage(response.headers)
        if problems:
            self._warn_usage(where, problems)
        decoded: object = None
        if response.is_success:
            try:
                decoded = json.loads(content)
            except ValueError:
                decoded = None
        if not isinstance(decoded, list):
            error = classify_error(
                response.status_code,
                content,
                response.headers.get("content-type"),
                response.headers,
                call=where,
            )
            raise error or GraphMalformedResponseError(
                f"Graph's reply to {where} is not a list of answers; "
                "the posts may have been published",
                http_status=response.status_code,
                is_transient=True,
                outcome_unknown=True,
                usage=usage,
            )
        if len(decoded) != len(items):
            raise GraphMalformedResponseError(
                f"Graph answered {len(decoded)} of the {len(items)} calls of {where}; "
                "the posts may have been published",
                http_status=response.status_code,
                is_transient=True,
                outcome_unknown=True,
                usage=usage,
            )
        return [
            self._batch_answer(item, answer, secrets)
            for item, answer in zip(items, decoded, strict=True)
        ]

    def _batch_call(self, item: BatchPublish, now_s: int) -> dict[str, str]:
        """One element of ``batch``: the call, its token and proof, its fields."""
        if item.photo_url:
            edge = "photos"
            fields = {"url": item.photo_url, **({"caption": item.text} if item.text else {})}
        else:
            if not item.text and not item.link:
                raise ValueError("a feed post needs a message or a link")
            edge = "feed"
            fields = {k: v for k, v in (("message", item.text), ("link", item.link)) if v}
        query = {
            "access_token": item.page_token,
            **proof_params(self._app_secret, item.page_token, timed=self._timed, now_s=now_s),
        }
        return {
            "method": "POST",
            "relative_url": f"{_path(item.page_id)}/{edge}?{urlencode(query)}",
            "body": urlencode(fields),
        }

    def _batch_answer(
        self, item: BatchPublish, answer: object, secrets: tuple[str, ...]
    ) -> PublishResult | GraphError:
        """What one element of a batch reply says about ``item``'s publish."""
        edge = "photos" if item.photo_url else "feed"
        where = f"POST /{_path(item.page_id)}/{edge} (in a batch)"
        if answer is None:
            return GraphTimeoutError(
                f"Graph did not finish {where} before the batch ended; the post may have "
                "been published",
                is_transient=True,
                outcome_unknown=True,
            )
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            return GraphMalformedResponseError(
                f"Graph's answer to {where} has no status; the post may have been published",
                is_transient=True,
                outcome_unknown=True,
            )
        headers = _batch_headers(answer.get("headers"))
        body = answer.get("body")
        content = scrub_secrets(body, secrets).encode() if isinstance(body, str) else b""
        usage, problems = read_usage(headers)
        if problems:
            self._warn_usage(where, problems)
        error = classify_error(answer["code"], content, "application/json", headers, call=where)
        if error is not None:
            return error
        try:
            return _published(json.loads(content), edge, usage)
        except GraphError as exc:
            return exc

    # -- media ----------------------------------------------------------------

    def upload_photo(
        self,
        page_id: str,
        page_token: str,
        *,
        url: str | None = None,
        data: bytes | None = None,
        filename: str = "photo",
        content_type: str | None = None,
        caption: str | None = None,
        published: bool = True,
        temporary: bool = False,
    ) -> PublishResult:
        """Upload a photo to the Page: fetched by Graph from ``url``, or ``data`` sent as
        the multipart ``source``. Exactly one of the two.

        Published, it is a photo post (``post_id`` set). With ``published=False`` no
        story is made (``post_id`` is ``None``): the id is for ``attached_media`` of
        :meth:`publish_feed`; ``temporary`` marks such a photo as meant for a later
        (scheduled) post. Not idempotent: a lost reply may leave an invisible
        unpublished photo behind, which is harmless.
        """
        if (url is None) == (data is None):
            raise ValueError("upload_photo needs exactly one of url and data")
        fields: dict[str, str] = {"url": url} if url is not None else {}
        if caption:
            fields["caption"] = caption
        if not published:
            fields["published"] = "false"
        if temporary:
            fields["temporary"] = "true"
        files = _file("source", data, filename, content_type)
        body, usage = self._call(
            "POST", f"{_path(page_id)}/photos", token=page_token, data=fields, files=files
        )
        return PublishResult(
            id=require_str(body, "id", "/photos", usage),
            post_id=opt_id(body.get("post_id")),
            usage=usage,
        )

    def page_photos(
        self,
        page_id: str,
        page_token: str,
        *,
        since: datetime | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> PagePhotos:
        """The photos the Page has uploaded (``/photos?type=uploaded``) since ``since``.

        Graph lists the photos the Page shows; unpublished uploads are not listed, so
        this cannot find the photo of a lost :meth:`upload_photo` reply.
        """
        params = {"type": "uploaded", "fields": "id,created_time,name", "limit": "100"}
        since_s = _since_s(since)
        if since_s is not None:
            params["since"] = str(since_s)
        items, usage = self._paged(
            f"{_path(page_id)}/photos", token=page_token, params=params, max_pages=max_pages
        )
        photos = [
            PagePhoto(
                id=require_str(item, "id", "/photos", usage),
                created_time=graph_time(item.get("created_time"), usage),
                name=opt_str(item.get("name")),
                published=opt_bool(item.get("published")),
            )
            for item in items
        ]
        if since_s is not None:
            photos = [p for p in photos if p.created_time.timestamp() >= since_s]
        return PagePhotos(photos=tuple(photos), usage=usage)

    def publish_video(
        self,
        page_id: str,
        page_token: str,
        *,
        file_url: str | None = None,
        data: bytes | None = None,
        filename: str = "video.mp4",
        title: str | None = None,
        description: str | None = None,
    ) -> PublishResult:
        """Publish a Page video in one request: fetched by Graph from ``file_url``, or
        ``data`` sent as the multipart ``source`` (Graph: up to 1 GB and 20 minutes;
        larger ones go through :meth:`video_upload_start`). ``id`` is the video id;
        ``post_id`` is ``None`` (Graph does not give it). Not idempotent.
        """
        if (file_url is None) == (data is None):
            raise ValueError("publish_video needs exactly one of file_url and data")
        fields = _present(file_url=file_url, title=title, description=description)
        files = _file("source", data, filename, "video/mp4")
        body, usage = self._video_call(page_id, page_token, fields, files=files)
        return PublishResult(
            id=require_str(body, "id", "/videos", usage), post_id=None, usage=usage
        )

    def video_upload_start(
        self, page_id: str, page_token: str, *, file_size: int
    ) -> VideoUploadSession:
        """Start a resumable Page video upload of ``file_size`` bytes; Graph names the
        first chunk to send. A lost reply leaves only an unfinished, invisible upload."""
        if file_size <= 0:
            raise ValueError("file_size must be positive")
        fields = {"upload_phase": "start", "file_size": str(file_size)}
        body, usage = self._video_call(page_id, page_token, fields)
        return VideoUploadSession(
            video_id=require_str(body, "video_id", "/videos start", usage),
            upload_session_id=require_str(body, "upload_session_id", "/videos start", usage),
            start_offset=require_offset(body, "start_offset", "/videos start", usage),
            end_offset=require_offset(body, "end_offset", "/videos start", usage),
            usage=usage,
        )

    def video_upload_transfer(
        self,
        page_id: str,
        page_token: str,
        *,
        upload_session_id: str,
        start_offset: int,
        chunk: bytes,
    ) -> VideoUploadOffsets:
        """Send the bytes at ``start_offset``; returns the next chunk Graph wants.

        Safe to repeat after a lost reply: Graph either takes the same chunk again or
        refuses it for its offset (subcode 1363037) naming the offsets it expects, which
        come back here with ``accepted=False`` instead of an error.
        """
        if not chunk:
            raise ValueError("a chunk must not be empty")
        fields = {
            "upload_phase": "transfer",
            "upload_session_id": upload_session_id,
            "start_offset": str(start_offset),
        }
        files = _file("video_file_chunk", chunk, "chunk", "application/octet-stream")
        body, usage = self._video_call(
            page_id, page_token, fields, files=files, recover=_expected_offsets
        )
        return VideoUploadOffsets(
            start_offset=require_offset(body, "start_offset", "/videos transfer", usage),
            end_offset=require_offset(body, "end_offset", "/videos transfer", usage),
            accepted=body.get(_REFUSED_KEY) is not True,
            usage=usage,
        )

    def video_upload_finish(
        self,
        page_id: str,
        page_token: str,
        *,
        upload_session_id: str,
        title: str | None = None,
        description: str | None = None,
    ) -> bool:
        """Finish a resumable upload: the video is published. ``True`` when Graph says
        ``success``."""
        fields = {
            "upload_phase": "finish",
            "upload_session_id": upload_session_id,
            **_present(title=title, description=description),
        }
        body, _ = self._video_call(page_id, page_token, fields)
        return body.get("success") is True

    def page_videos(
        self,
        page_id: str,
        page_token: str,
        *,
        since: datetime | None = None,
        reels: bool = False,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> PageVideos:
        """The Page's published videos (``/videos``), or with ``reels`` its reels
        (``/video_reels``), created at or after ``since``, newest first."""
        params = {"fields": "id,title,description,created_time,status", "limit": "100"}
        since_s = _since_s(since)
        if since_s is not None:
            params["since"] = str(since_s)
        edge = "video_reels" if reels else "videos"
        items, usage = self._paged(
            f"{_path(page_id)}/{edge}", token=page_token, params=params, max_pages=max_pages
        )
        videos = [
            PageVideo(
                id=require_str(item, "id", f"/{edge}", usage),
                title=opt_str(item.get("title")),
                description=opt_str(item.get("description")),
                created_time=(
                    graph_time(item["created_time"], usage) if "created_time" in item else None
                ),
                status=video_status_name(item.get("status")),
            )
            for item in items
        ]
        if since_s is not None:
            videos = [
                v for v in videos if v.created_time is None or v.created_time.timestamp() >= since_s
            ]
        return PageVideos(videos=tuple(videos), usage=usage)

    def reel_start(self, page_id: str, page_token: str) -> ReelUpload:
        """Start a reel: Graph gives its video id and the rupload URL for its bytes."""
        body, usage = self._call(
            "POST",
            f"{_path(page_id)}/video_reels",
            token=page_token,
            data={"upload_phase": "start"},
        )
        return ReelUpload(
            video_id=require_str(body, "video_id", "/video_reels start", usage),
            upload_url=require_str(body, "upload_url", "/video_reels start", usage),
            usage=usage,
        )

    def reel_upload(
        self,
        upload_url: str,
        page_token: str,
        *,
        file_url: str | None = None,
        data: bytes | None = None,
        offset: int = 0,
        file_size: int | None = None,
    ) -> None:
        """Send a reel's bytes to its ``upload_url``: Graph fetches ``file_url``, or
        ``data`` (the file from byte ``offset`` on, of ``file_size`` bytes in all;
        default ``offset + len(data)``) goes as the raw body.

        The Page token travels in the ``Authorization`` header, so ``upload_url`` must
        be on the rupload host (``rupload_url``) or, when the client's ``graph_url``
        is not Facebook's (a sandbox), on that same origin; anything else raises
        :class:`ValueError` before a byte is sent. To resume after a lost reply or a
        broken connection, read :meth:`video_status` and send the rest from its
        ``bytes_transferred``.
        """
        if (file_url is None) == (data is None):
            raise ValueError("reel_upload needs exactly one of file_url and data")
        path = self._upload_path(upload_url)
        headers: dict[str, str]
        if file_url is not None:
            headers = {"file_url": file_url}
        else:
            assert data is not None
            total = offset + len(data) if file_size is None else file_size
            headers = {
                "offset": str(offset),
                "file_size": str(total),
                "Content-Type": "application/octet-stream",
            }
        body, usage = self._call(
            "POST",
            path,
            token=page_token,
            url=upload_url,
            token_in_header=True,
            headers=headers,
            content=data if data is not None else b"",
        )
        if body.get("success") is not True:
            raise GraphMalformedResponseError(
                f"POST /{path} answered without success", is_transient=True, usage=usage
            )

    def reel_finish(
        self, page_id: str, page_token: str, *, video_id: str, description: str | None = None
    ) -> bool:
        """Publish an uploaded reel (``video_state=PUBLISHED``). ``True`` on ``success``.

        Counts against the Page's 30 API-published reels a day; after a lost reply,
        read :meth:`video_status` (``publish_status``) rather than finishing again.
        """
        fields = {
            "upload_phase": "finish",
            "video_id": video_id,
            "video_state": "PUBLISHED",
            **_present(description=description),
        }
        body, _ = self._call("POST", f"{_path(page_id)}/video_reels", token=page_token, data=fields)
        return body.get("success") is True

    def video_status(self, video_id: str, page_token: str) -> VideoStatus:
        """A video's or reel's phases (``/{video-id}?fields=status``)."""
        body, usage = self._call(
            "GET", _path(video_id), token=page_token, params={"fields": "status"}
        )
        return parse_video_status(body.get("status"), usage)

    def delete_object(self, object_id: str, page_token: str) -> bool:
        """Delete a post, photo or video of the Page. ``True`` when Graph says ``success``."""
        body, _ = self._call("DELETE", _path(object_id), token=page_token)
        return body.get("success") is True

    # -- after publishing -------------------------------------------------------

    def comment(self, object_id: str, page_token: str, *, message: str) -> PublishResult:
        """Comment on a post (or photo, video, reel) as the Page: ``id`` is the comment's id,
        ``post_id`` is ``None``. Needs ``pages_manage_engagement``.

        Not idempotent: after a lost reply (``outcome_unknown``) read :meth:`comments`
        and look for a comment ``from_id`` the Page with this text before commenting
        again — a person may have written the same words.
        """
        if not message:
            raise ValueError("a comment needs a message")
        body, usage = self._call(
            "POST", f"{_path(object_id)}/comments", token=page_token, data={"message": message}
        )
        return PublishResult(
            id=require_str(body, "id", "/comments", usage), post_id=None, usage=usage
        )

    def comments(
        self,
        object_id: str,
        page_token: str,
        *,
        since: datetime | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> PostComments:
        """Every comment on the object created at or after ``since`` (aware), oldest first,
        all result pages (``filter=stream``, ``order=chronological``)."""
        params = {
            "fields": "id,message,created_time,from",
            "filter": "stream",
            "order": "chronological",
            "limit": "100",
        }
        since_s = _since_s(since)
        if since_s is not None:
            params["since"] = str(since_s)
        items, usage = self._paged(
            f"{_path(object_id)}/comments", token=page_token, params=params, max_pages=max_pages
        )
        found = [
            PostComment(
                id=require_str(item, "id", "/comments", usage),
                message=opt_str(item.get("message")),
                created_time=graph_time(item.get("created_time"), usage),
                from_id=_application_id(item.get("from")),
            )
            for item in items
        ]
        if since_s is not None:
            found = [c for c in found if c.created_time.timestamp() >= since_s]
        return PostComments(comments=tuple(found), usage=usage)

    def edit_post(self, post_id: str, page_token: str, *, message: str) -> bool:
        """Replace a post's text (``POST /{post-id}``). ``True`` when Graph says ``success``.

        Only posts this app made can be edited (Graph: "An app can only update a Page
        post if the post was made using that app"). Idempotent: safe to repeat after a
        lost reply.
        """
        if not message:
            raise ValueError("an edit needs a message")
        body, _ = self._call("POST", _path(post_id), token=page_token, data={"message": message})
        return body.get("success") is True

    def post_stats(self, post_id: str, page_token: str) -> PostStats:
        """A post's text and counts: reactions and comments (``summary.total_count``) and
        shares. A deleted post raises Graph's error (code 100, subcode 33), classified."""
        body, usage = self._call(
            "GET", _path(post_id), token=page_token, params={"fields": _STATS_FIELDS}
        )
        return PostStats(
            id=require_str(body, "id", f"/{post_id}", usage),
            message=opt_str(body.get("message")),
            updated_time=opt_graph_time(body.get("updated_time"), usage),
            reactions=summary_total(body.get("reactions")),
            comments=summary_total(body.get("comments")),
            shares=share_count(body.get("shares")),
            usage=usage,
        )

    def post_insights(
        self, post_id: str, page_token: str, *, metrics: Sequence[str]
    ) -> PostInsights:
        """Lifetime values of ``metrics`` for a post (``/{post-id}/insights``).

        One deprecated or unknown metric fails the whole call with Graph's 100 "The
        value must be a valid insights metric" (see :func:`is_invalid_metric`), which
        does not say which one: ask again without the suspects. A Page without
        insights (under 100 likes) gives ``None`` for every metric.
        """
        if isinstance(metrics, str):
            raise ValueError("metrics is a sequence of metric names, not one string")
        names = tuple(dict.fromkeys(metrics))
        if not names or not all(names):
            raise ValueError("post_insights needs at least one metric name")
        body, usage = self._call(
            "GET",
            f"{_path(post_id)}/insights",
            token=page_token,
            params={"metric": ",".join(names)},
        )
        return PostInsights(values=insights_values(body.get("data"), names), usage=usage)

    def _video_call(
        self,
        page_id: str,
        page_token: str,
        fields: Mapping[str, str],
        *,
        files: Mapping[str, FileField] | None = None,
        recover: Callable[[JsonObject], JsonObject | None] | None = None,
    ) -> tuple[JsonObject, GraphUsage]:
        """``POST /{page-id}/videos`` on the video host."""
        path = f"{_path(page_id)}/videos"
        return self._call(
            "POST",
            path,
            token=page_token,
            data=fields,
            files=files,
            url=f"{self._video_base_url}/{path}",
            recover=recover,
        )

    def _upload_path(self, upload_url: str) -> str:
        """The path of an ``upload_url`` the Page token may go to; raises ValueError if none."""
        if _origin(upload_url) not in self._upload_origins:
            raise ValueError(
                "upload_url is not on the rupload host this client sends Page tokens to"
            )
        path = httpx.URL(upload_url).path
        if not path.startswith("/video-upload/"):
            raise ValueError("upload_url is not a rupload /video-upload/ URL")
        return path.lstrip("/")

    # -- the one request path -------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, FileField] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        url: str | None = None,
        token_in_header: bool = False,
        recover: Callable[[JsonObject], JsonObject | None] | None = None,
        secrets: tuple[str, ...] = (),
        accept_form: bool = False,
    ) -> tuple[JsonObject, GraphUsage]:
        """Send one request; return its JSON object and usage, or raise a :class:`GraphError`.

        ``url`` replaces ``{graph_url}/{version}/{path}`` (video and rupload hosts);
        ``path`` still names the call in messages. ``files`` (multipart) and
        ``content`` (a raw body) are uploads: their reply's deadline starts once the
        request is sent, so a large body does not eat the time its reply has.
        ``recover`` may turn a Graph error envelope (the ``error`` object) into a
        body to return instead of raising.
        """
        url = url or f"{self._base_url}/{path}"
        where = f"{method} /{path}"
        known_secrets = (*secrets, *((token,) if token else ()), self._app_secret)
        auth = (
            GraphTokenAuth(
                token,
                app_secret=self._app_secret,
                timed=self._timed,
                clock=self._clock,
                in_header=token_in_header,
            )
            if token is not None
            else None
        )
        response, content_bytes = self._exchange(
            self._http.build_request(
                method, url, params=params, data=data, files=files, content=content, headers=headers
            ),
            where,
            auth,
            known_secrets,
            upload=files is not None or content is not None,
        )
        usage, problems = read_usage(response.headers)
        if problems:
            self._warn_usage(where, problems)
        if accept_form and response.is_success:
            form = form_token_body(content_bytes)
            if form is not None:
                return form, usage
        error = classify_error(
            response.status_code,
            content_bytes,
            response.headers.get("content-type"),
            response.headers,
            call=where,
        )
        if error is not None:
            recovered = _recovered(recover, content_bytes)
            if recovered is not None:
                return recovered, usage
            raise error
        # classify_error returns None only for a 2xx JSON object.
        body: JsonObject = json.loads(content_bytes)
        return body, usage

    def _exchange(
        self,
        request: httpx.Request,
        where: str,
        auth: httpx.Auth | None,
        secrets: tuple[str, ...],
        *,
        upload: bool = False,
    ) -> tuple[httpx.Response, bytes]:
        """Send ``request`` and read its whole reply within the deadline (closed after).

        An ``upload``'s deadline starts once its body is sent.
        """
        started = time.monotonic()
        try:
            response = self._http.send(request, auth=auth, stream=True)
        except httpx.RequestError as exc:  # nothing came back: no status line, no headers
            raise self._transport_error(exc, where, secrets) from exc
        if upload:
            started = time.monotonic()
        try:
            content_bytes = self._read_body(response, where, started, secrets)
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
                "method": request.method,
                "path": where.partition(" ")[2],
                "http_status": response.status_code,
                "duration_ms": duration_ms,
            },
        )
        return response, content_bytes

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


def _recovered(
    recover: Callable[[JsonObject], JsonObject | None] | None, content: bytes
) -> JsonObject | None:
    """What ``recover`` makes of an error reply's ``error`` object, if anything."""
    if recover is None:
        return None
    try:
        body = json.loads(content)
    except ValueError:
        return None
    envelope = body.get("error") if isinstance(body, dict) else None
    return recover(envelope) if isinstance(envelope, dict) else None


def _published(body: JsonObject, edge: str, usage: GraphUsage) -> PublishResult:
    """What ``POST /{page}/{edge}`` created: a feed post (its id is the post's), or a
    photo (its id, and the post's id as ``post_id``)."""
    created = require_str(body, "id", f"/{edge}", usage)
    if edge == "feed":
        return PublishResult(id=created, post_id=created, usage=usage)
    return PublishResult(id=created, post_id=opt_id(body.get("post_id")), usage=usage)


def _batch_headers(value: object) -> dict[str, str]:
    """A batch answer's ``headers`` (a list of ``{"name", "value"}``) as a mapping."""
    if not isinstance(value, list):
        return {}
    return {
        header["name"]: header["value"]
        for header in value
        if isinstance(header, dict)
        and isinstance(header.get("name"), str)
        and isinstance(header.get("value"), str)
    }


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host.lower()
    except httpx.InvalidURL:
        return ""


def _is_facebook(url: str) -> bool:
    host = _host(url)
    return host == "facebook.com" or host.endswith(".facebook.com")


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with default ports as ``None``; an unparsable URL matches nothing."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return ("", "", None)
    return (parsed.scheme.lower(), parsed.host.lower(), parsed.port)


def _video_graph_url(graph_url: str) -> str:
    """``graph-video.facebook.com`` for Facebook's Graph (Meta's video guide), else the same."""
    if _host(graph_url) == "graph.facebook.com":
        return str(httpx.URL(graph_url).copy_with(host="graph-video.facebook.com")).rstrip("/")
    return graph_url.rstrip("/")


def _upload_origins(graph_url: str, rupload_url: str) -> frozenset[tuple[str, str, int | None]]:
    """Where :meth:`GraphClient.reel_upload` may send a Page token: the rupload host, plus
    the Graph host itself when that is not Facebook's (a sandbox serves rupload there)."""
    origins = {_origin(rupload_url)}
    if not _is_facebook(graph_url):
        origins.add(_origin(graph_url))
    return frozenset(origins)


_FEED_FIELDS = (
    "id,message,link,created_time,application,"
    "attachments{media_type,target,subattachments{media_type,target}}"
)
_STATS_FIELDS = (
    "id,message,created_time,updated_time,is_published,shares,"
    "reactions.summary(total_count).limit(0),comments.summary(total_count).limit(0)"
)
#: Graph's answer, for the whole call, when one metric asked for is deprecated or unknown.
INVALID_METRIC_MESSAGE = "The value must be a valid insights metric"


def is_invalid_metric(error: GraphError) -> bool:
    """Whether :meth:`GraphClient.post_insights` failed for a deprecated or unknown metric."""
    return error.code == 100 and INVALID_METRIC_MESSAGE in error.message


#: Marks a transfer reply made from Graph's 1363037 refusal (see ``_expected_offsets``).
_REFUSED_KEY = "_offpost_refused"


def _since_s(since: datetime | None) -> int | None:
    if since is None:
        return None
    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    return int(since.timestamp())


def _media_ids(attached_media: Sequence[str]) -> tuple[str, ...]:
    if isinstance(attached_media, str):
        raise ValueError("attached_media is a sequence of photo ids, not one string")
    media = tuple(attached_media)
    if len(media) > MAX_ATTACHED_MEDIA:
        raise ValueError(f"at most {MAX_ATTACHED_MEDIA} photos can be attached to a post")
    if not all(media):
        raise ValueError("attached_media holds an empty id")
    return media


def _file(
    name: str, data: bytes | None, filename: str, content_type: str | None
) -> dict[str, FileField] | None:
    if data is None:
        return None
    return {name: (filename, data, content_type or "application/octet-stream")}


def _present(**values: str | None) -> dict[str, str]:
    """The given form fields that have a value."""
    return {name: value for name, value in values.items() if value}


def _expected_offsets(error: JsonObject) -> JsonObject | None:
    """Graph's refusal of a chunk at the wrong offset, as the window it expects instead."""
    if error.get("error_subcode") != CHUNK_OFFSET_SUBCODE:
        return None
    window = error.get("error_data")
    if not isinstance(window, dict) or "start_offset" not in window:
        return None
    return {
        "start_offset": window.get("start_offset"),
        "end_offset": window.get("end_offset"),
        _REFUSED_KEY: True,
    }


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
