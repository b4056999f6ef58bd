"""What the Graph client's calls return: frozen dataclasses, one per call.

Each carries the ``usage`` headers of its (last) reply. Fields holding a token
or code are left out of ``repr`` so that printing a result never leaks one.
Times are aware UTC datetimes; ``None`` where Graph says "never" or says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from offpost.graph.errors import AuthReason
from offpost.graph.usage import EMPTY_USAGE, GraphUsage


@dataclass(frozen=True, slots=True)
class TokenExchange:
    """A long-lived user token from ``fb_exchange_token``."""

    access_token: str = field(repr=False)
    token_type: str | None
    #: Seconds until expiry; ``None`` when Graph did not say (it sometimes omits it).
    expires_in: int | None
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class GranularScope:
    """One ``granular_scopes`` entry; ``target_ids`` is empty when the grant is not per asset."""

    scope: str
    target_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenInfoError:
    """Why ``debug_token`` finds a token invalid (``data.error``; note Graph's key ``subcode``)."""

    code: int | None
    subcode: int | None
    message: str
    reason: AuthReason


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """``debug_token``'s view of a token. An invalid token is a normal result, not an error."""

    is_valid: bool
    app_id: str | None
    type: str | None  # "USER", "PAGE", "APP", ...
    application: str | None
    user_id: str | None
    profile_id: str | None  # the Page id, for Page tokens
    expires_at: datetime | None  # None: never expires (Graph's 0)
    data_access_expires_at: datetime | None
    issued_at: datetime | None
    scopes: tuple[str, ...]
    granular_scopes: tuple[GranularScope, ...]
    error: TokenInfoError | None
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class UserInfo:
    """``/me``: the app-scoped user id behind a token."""

    id: str
    name: str | None
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class PageAccount:
    """One Page of ``/me/accounts``; ``access_token`` is ``None`` when Graph gave none."""

    id: str
    name: str | None
    access_token: str | None = field(repr=False)
    tasks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PageAccounts:
    """Every Page of ``/me/accounts``, all result pages followed."""

    pages: tuple[PageAccount, ...]
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class PageToken:
    """A Page access token from ``/{page-id}?fields=access_token``."""

    page_id: str
    access_token: str = field(repr=False)
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class ClientCode:
    """A single-use code from ``/oauth/client_code`` that a client redeems for its own token."""

    code: str = field(repr=False)
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class PublishResult:
    """A created post. ``id`` is what Graph returned first: the post id for ``/feed``, the
    photo id for ``/photos``; ``post_id`` is always the Page post id when Graph gave one."""

    id: str
    post_id: str | None
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class BatchPublish:
    """One publish of a batch request (:meth:`~offpost.graph.client.GraphClient.publish_batch`):
    a photo post when ``photo_url`` is given (``text`` its caption), else a feed post."""

    page_id: str
    page_token: str
    text: str | None = None
    link: str | None = None
    photo_url: str | None = None


@dataclass(frozen=True, slots=True)
class FeedPost:
    """One post of a Page's ``/feed``."""

    id: str
    message: str | None
    link: str | None
    created_time: datetime
    #: The id of the app that made the post (Graph's ``application``); ``None`` when
    #: a person made it in Facebook's own interface.
    application_id: str | None = None
    #: The photos or video the post shows (its ``attachments``), in order; ``()`` for none.
    media_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PagePosts:
    """The posts of a Page's ``/feed`` (newest first, as Graph lists them)."""

    posts: tuple[FeedPost, ...]
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class PagePhoto:
    """One photo of a Page's ``/photos?type=uploaded``."""

    id: str
    created_time: datetime
    #: The caption (Graph calls it ``name``).
    name: str | None
    #: ``None`` unless Graph said (it lists only photos the Page shows).
    published: bool | None = None


@dataclass(frozen=True, slots=True)
class PagePhotos:
    """The photos a Page has uploaded, newest first."""

    photos: tuple[PagePhoto, ...]
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class PageVideo:
    """One video of a Page's ``/videos``, or one reel of its ``/video_reels``."""

    id: str
    title: str | None
    description: str | None
    #: ``None`` when Graph gave no ``created_time`` (its reels listing may not).
    created_time: datetime | None
    #: ``status.video_status``: ``ready``, ``processing``, ``upload_complete``, ``error``…
    status: str | None


@dataclass(frozen=True, slots=True)
class PageVideos:
    """The published videos (or reels) of a Page, newest first."""

    videos: tuple[PageVideo, ...]
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class VideoUploadSession:
    """A resumable ``/videos`` upload, started: send ``[start_offset, end_offset)`` first."""

    video_id: str
    upload_session_id: str
    start_offset: int
    end_offset: int
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class VideoUploadOffsets:
    """The next chunk Graph wants, ``[start_offset, end_offset)``; equal offsets: all sent.

    ``accepted`` is ``False`` when Graph refused the chunk because it did not start
    where Graph expected (error subcode 1363037) and named these offsets instead:
    resume from them, as Meta's SDK does.
    """

    start_offset: int
    end_offset: int
    accepted: bool = True
    usage: GraphUsage = EMPTY_USAGE

    @property
    def done(self) -> bool:
        return self.start_offset >= self.end_offset


@dataclass(frozen=True, slots=True)
class ReelUpload:
    """A reel, started: send its bytes to ``upload_url`` (rupload), then finish it."""

    video_id: str
    upload_url: str
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class VideoStatus:
    """``GET /{video-id}?fields=status``: each phase's status, ``None`` where Graph said none.

    ``bytes_transferred`` is what the rupload host has received (Graph's
    ``uploading_phase.bytes_transfered``): the ``offset`` to resume an upload at.
    """

    video_status: str | None
    uploading_status: str | None
    bytes_transferred: int | None
    processing_status: str | None
    publishing_status: str | None
    #: ``publishing_phase.publish_status``: ``published``, ``draft``, ``scheduled``…
    publish_status: str | None = None
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class PostComment:
    """One comment of ``/{object-id}/comments``; ``from_id`` is the Page's id for the
    Page's own comments, a person's id otherwise (``None`` when Graph hid it)."""

    id: str
    message: str | None
    created_time: datetime
    from_id: str | None


@dataclass(frozen=True, slots=True)
class PostComments:
    """The comments on a post, oldest first (``order=chronological``)."""

    comments: tuple[PostComment, ...]
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class PostStats:
    """A post as it stands: its text and its counts (``summary.total_count`` of
    ``reactions`` and ``comments``, ``shares.count``; 0 where Graph gave none)."""

    id: str
    message: str | None
    #: ``None`` when Graph gave no ``updated_time``.
    updated_time: datetime | None
    reactions: int
    comments: int
    shares: int
    #: Always ``True``: a deleted post raises Graph's error (code 100) instead.
    exists: bool = True
    usage: GraphUsage = EMPTY_USAGE


@dataclass(frozen=True, slots=True)
class PostInsights:
    """Lifetime values of the metrics asked for, by name; ``None`` for a metric Graph
    answered nothing for (a Page without insights answers an empty list)."""

    values: dict[str, int | None]
    usage: GraphUsage = EMPTY_USAGE
