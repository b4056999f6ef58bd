"""Graph's error envelope, with the exact messages the sandbox answers (docs/graph.md).

Every Graph-side failure is a :class:`GraphError`; the routes turn it into

    {"error": {"message", "type", "code", "error_subcode"?, "is_transient"?,
               "error_data"?, "fbtrace_id"}}

with the HTTP status Graph uses (400 mostly, 403 for permission codes 10 and
200-299, 500 for codes 1 and 2). Messages carry the ``(#code)`` prefix except
token errors (190) and the messages docs/graph.md quotes without one (proof errors,
authorization-code errors, "Unsupported get request").

Where docs/graph.md quotes no text, the message is the one real Graph is widely
reported to send; those are marked *derived* below.
"""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from offpost.errors import OffpostError

_PACIFIC = ZoneInfo("America/Los_Angeles")
_TRACE_ALPHABET = string.ascii_letters + string.digits + "_-"
GRAPH_DOCS = "https://developers.facebook.com/docs/graph-api"
RATE_LIMIT_DOCS = "https://developers.facebook.com/docs/graph-api/overview/rate-limiting"


def new_fbtrace_id() -> str:
    """A support id shaped like Graph's (23 characters of base64url)."""
    return "".join(secrets.choice(_TRACE_ALPHABET) for _ in range(23))


def status_for_code(code: int) -> int:
    """The HTTP status Graph pairs with an error code (docs/graph.md)."""
    if code in (1, 2):
        return 500
    if code == 10 or 200 <= code <= 299:
        return 403
    return 400


class GraphError(OffpostError):
    """A Graph API error the sandbox answers with; never carries a token."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        type_: str = "OAuthException",
        subcode: int | None = None,
        status: int | None = None,
        is_transient: bool | None = None,
        error_data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.type = type_
        self.subcode = subcode
        self.status = status if status is not None else status_for_code(code)
        self.is_transient = is_transient
        self.error_data = error_data

    def body(self, fbtrace_id: str | None = None) -> dict[str, Any]:
        """The ``{"error": {...}}`` envelope."""
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.is_transient is not None:
            error["is_transient"] = self.is_transient
        if self.error_data is not None:
            error["error_data"] = self.error_data
        error["fbtrace_id"] = fbtrace_id or new_fbtrace_id()
        return {"error": error}

    def debug_error(self) -> dict[str, Any]:
        """The ``data.error`` object of debug_token (key ``subcode``, docs/graph.md)."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.subcode is not None:
            error["subcode"] = self.subcode
        return error


def complete_error(error: dict[str, Any], status: int | None) -> tuple[int, dict[str, Any]]:
    """Fill a fault's partial error into a full envelope and pick its status.

    Without an error, a 5xx becomes code 2 (transient) and anything else code 1;
    without a status, the status follows the code.
    """
    filled = dict(error)
    if "code" not in filled:
        filled["code"] = 2 if status is None or status >= 500 else 1
    code = int(filled["code"])
    if "message" not in filled:
        filled["message"] = (
            "An unexpected error has occurred. Please retry your request later."
            if code == 2
            else "An unknown error has occurred."
        )
        if code == 2:
            filled.setdefault("is_transient", True)
    filled.setdefault("type", "OAuthException")
    filled.setdefault("fbtrace_id", new_fbtrace_id())
    return (status if status is not None else status_for_code(code)), {"error": filled}


# --- token errors (190, no "(#190)" prefix) ------------------------------------------------


def _pacific(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone(_PACIFIC).strftime("%A, %d-%b-%y %H:%M:%S %Z")


def token_expired(expires_at: float, now: float) -> GraphError:
    """190/463 with Graph's wording and Pacific-time stamps (docs/graph.md)."""
    return GraphError(
        f"Error validating access token: Session has expired on {_pacific(expires_at)}. "
        f"The current time is {_pacific(now)}.",
        code=190,
        subcode=463,
    )


def password_changed() -> GraphError:
    """190/460 (docs/graph.md)."""
    return GraphError(
        "Error validating access token: The session has been invalidated because the user "
        "changed their password or Facebook has changed the session for security reasons.",
        code=190,
        subcode=460,
    )


def app_not_authorized(app_id: str) -> GraphError:
    """190/458, the user removed the app (derived wording)."""
    return GraphError(
        f"Error validating access token: The user has not authorized application {app_id}.",
        code=190,
        subcode=458,
    )


def logged_out() -> GraphError:
    """190/467 (derived wording)."""
    return GraphError(
        "Error validating access token: The session is invalid because the user logged out.",
        code=190,
        subcode=467,
    )


def role_lost() -> GraphError:
    """190/492, a Page token whose user no longer has a role on the Page (derived wording).

    docs/graph.md lists 492 as "the user no longer has a role on the Page"; the
    message is the one Graph is widely reported to send when a token impersonates a
    Page its person cannot manage any more (older replies carried it without a
    subcode). It has no "Error validating access token" prefix: the token is
    sound, the person's role is what is missing.
    """
    return GraphError(
        "The user must be an administrator, editor, or moderator of the page in order to "
        "impersonate it. If the page business requires Two Factor Authentication, the user "
        "also needs to enable Two Factor Authentication.",
        code=190,
        subcode=492,
    )


def invalidation_error(subcode: int, app_id: str) -> GraphError:
    """The 190 error for a token invalidated with ``subcode``."""
    if subcode == 460:
        return password_changed()
    if subcode == 458:
        return app_not_authorized(app_id)
    if subcode == 492:
        return role_lost()
    return logged_out()


def cannot_parse_token() -> GraphError:
    return GraphError("Invalid OAuth access token - Cannot parse access token", code=190)


def bad_app_token_signature() -> GraphError:
    return GraphError("Invalid OAuth access token signature.", code=190)


def token_required() -> GraphError:
    return GraphError("An access token is required to request this resource.", code=104)


def active_token_required() -> GraphError:
    return GraphError(
        "An active access token must be used to query information about the current user.",
        code=2500,
    )


# --- appsecret_proof (GraphMethodException 100, messages exactly as docs/graph.md) ----------


def proof_missing() -> GraphError:
    return GraphError(
        "API calls from the server require an appsecret_proof argument",
        code=100,
        type_="GraphMethodException",
    )


def proof_invalid() -> GraphError:
    return GraphError(
        "Invalid appsecret_proof provided in the API argument",
        code=100,
        type_="GraphMethodException",
    )


# --- parameters and objects ----------------------------------------------------------------


def missing_param(name: str) -> GraphError:
    return GraphError(f"(#100) The parameter {name} is required", code=100)


def invalid_param(text: str) -> GraphError:
    return GraphError(f"(#100) {text}", code=100)


def unsupported_request(method: str, object_id: str) -> GraphError:
    """Unknown object or method: Graph's GraphMethodException 100/33."""
    return GraphError(
        f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
        "cannot be loaded due to missing permissions, or does not support this operation. "
        f"Please read the Graph API documentation at {GRAPH_DOCS}",
        code=100,
        subcode=33,
        type_="GraphMethodException",
    )


def nonexisting_field(name: str, node_type: str) -> GraphError:
    return GraphError(
        f"(#100) Tried accessing nonexisting field ({name}) on node type ({node_type})", code=100
    )


def unknown_path(component: str) -> GraphError:
    return GraphError(f"Unknown path components: /{component}", code=2500)


# --- OAuth endpoints -----------------------------------------------------------------------


def invalid_client_id() -> GraphError:
    return GraphError("Error validating application. Invalid application ID.", code=101)


def invalid_client_secret() -> GraphError:
    # Code 1 but HTTP 400: a caller error, not an outage (derived).
    return GraphError("Error validating client secret.", code=1, status=400)


def code_used() -> GraphError:
    return GraphError("This authorization code has been used.", code=100)


def code_expired() -> GraphError:
    return GraphError("This authorization code has expired.", code=100)


def code_invalid() -> GraphError:
    return GraphError("Invalid verification code format.", code=100)


def redirect_uri_mismatch() -> GraphError:
    return GraphError(
        "Error validating verification code. Please make sure your redirect_uri is identical "
        "to the one you used in the OAuth dialog request",
        code=100,
    )


def debug_caller_required() -> GraphError:
    """debug_token without an app token of the app (docs/graph.md)."""
    return GraphError(
        "(#100) You must provide an app access token, or a user access token that is an "
        "owner or developer of the app",
        code=100,
    )


def redirect_uri_not_allowed() -> GraphError:
    """``/oauth/client_code`` with a redirect URI the app does not list (derived)."""
    return GraphError(
        "Invalid redirect_uri: Given URL is not allowed by the Application configuration.",
        code=191,
    )


# --- permissions, publishing, throttling ---------------------------------------------------


def publish_permission() -> GraphError:
    """Publishing without the Page's token or ``pages_manage_posts`` (F9), HTTP 403.

    Also the answer when the token is right but its person lacks the
    ``CREATE_CONTENT`` task on the Page: the message's "as an admin with sufficient
    administrative permission" names that case, and no separate text for it is
    captured (*derived*).
    """
    return GraphError(
        "(#200) If posting to a page, requires both pages_read_engagement and "
        "pages_manage_posts as an admin with sufficient administrative permission",
        code=200,
    )


def read_permission() -> GraphError:
    return GraphError(
        "(#10) This endpoint requires the 'pages_read_engagement' permission or the "
        "'Page Public Content Access' feature.",
        code=10,
    )


def accounts_permission() -> GraphError:
    return GraphError("(#200) Requires pages_show_list permission to manage the object", code=200)


def photo_required() -> GraphError:
    return GraphError("(#324) Requires upload file", code=324)


def duplicate_post() -> GraphError:
    return GraphError("(#506) Duplicate status message", code=506)


def app_throttled() -> GraphError:
    return GraphError("(#4) Application request limit reached", code=4, is_transient=True)


def page_throttled_user_token() -> GraphError:
    return GraphError("(#32) Page request limit reached", code=32)


def page_throttled_page_token() -> GraphError:
    return GraphError(
        "(#80001) There have been too many calls to this Page account. Wait a bit and try "
        f"again. For more info, please refer to {RATE_LIMIT_DOCS}.",
        code=80001,
    )


def unknown_error() -> GraphError:
    return GraphError("An unknown error has occurred.", code=1)


# --- media (photos, videos, reels) ---------------------------------------------------------


def invalid_image() -> GraphError:
    """``url`` Graph could not fetch, or a ``source`` that is empty (code 324)."""
    return GraphError("(#324) Missing or invalid image file", code=324)


def video_required() -> GraphError:
    """``/videos`` without ``source``, ``file_url`` or an upload phase (code 353, derived)."""
    return GraphError("(#353) You must select a video file to upload.", code=353)


def video_fetch_failed() -> GraphError:
    """``file_url`` Graph could not download (code 389, the Video reference's text)."""
    return GraphError("(#389) Unable to fetch video file from URL.", code=389)


def bad_attached_media(index: int, media_fbid: str, why: str) -> GraphError:
    """An ``attached_media`` entry that is not an unattached unpublished photo of the Page.

    Code 100 as Graph answers bad parameters; the wording is *derived*.
    """
    return GraphError(f"(#100) attached_media[{index}] media_fbid {media_fbid} {why}", code=100)


def chunk_offset_mismatch(start_offset: int, end_offset: int) -> GraphError:
    """A resumable chunk at an offset other than the expected one (*derived* wording).

    Subcode 1363037 with ``error_data`` naming the expected window is what Meta's own
    facebook-business ``VideoUploader`` reads to resume (code 6001 is derived).
    """
    return GraphError(
        "(#6001) There was a problem uploading your video file: the chunk does not start "
        f"at the expected offset {start_offset}.",
        code=6001,
        subcode=1363037,
        error_data={"start_offset": start_offset, "end_offset": end_offset},
    )


def upload_session_invalid() -> GraphError:
    return GraphError("(#100) Invalid upload_session_id", code=100)


def upload_incomplete(received: int, file_size: int | None) -> GraphError:
    """finish before every byte arrived (*derived*)."""
    expected = "an unknown size" if file_size is None else f"{file_size} bytes"
    return GraphError(
        f"(#100) The upload is not complete: {received} of {expected} received", code=100
    )


def rupload_error(kind: str, message: str) -> GraphError:
    """A rupload (``/video-upload/…``) failure, named as the Reels guide names them:
    ``OffsetInvalidError`` "Request starting offset is invalid", ``PartialRequestError``
    "Partial request (did not match length of file)". Graph's envelope with that type and
    code 100 (the envelope is *derived*; the guide gives only the names and texts)."""
    return GraphError(message, code=100, type_=kind)


def reels_limit(limit: int) -> GraphError:
    """The Reels publishing limit ("30 API-published posts within a 24-hour moving
    period", enforced on ``POST /{page}/video_reels``). Code and wording *derived*:
    Meta documents the limit, not its error."""
    return GraphError(
        f"(#9) The Page has reached the limit of {limit} reels published through the API "
        "within 24 hours. Please try again later.",
        code=9,
    )


# --- after publishing: comments, edits, insights -------------------------------------------


def comment_as_user() -> GraphError:
    """Commenting with a user token: the Pages comments guide's exact text and code."""
    return GraphError("(#1705) There was an error posting to this wall", code=1705)


def engagement_permission() -> GraphError:
    """A comment with a token lacking ``pages_manage_engagement`` or the Page's role
    (code 200 as Graph's permission errors; the wording is *derived*)."""
    return GraphError(
        "(#200) Commenting as a Page requires the Page's access token with "
        "pages_manage_engagement, of a person who can moderate or create content on it",
        code=200,
    )


def edit_not_own_post() -> GraphError:
    """``POST /{post-id}`` on a post another app (or a person) made. The guide's
    limitation ("An app can only update a Page post if the post was made using that
    app"); code 200 and wording *derived*."""
    return GraphError(
        "(#200) An app can only update a Page post if the post was made using that app",
        code=200,
    )


def edit_media_post() -> GraphError:
    """``POST /{post-id}`` on a video's post (*derived*: the sandbox keeps a video's text
    on the video, whose own update it does not emulate)."""
    return GraphError(
        "(#100) The message of a video post cannot be changed through the post", code=100
    )


def invalid_metric() -> GraphError:
    """A deprecated or unknown insights metric, for the whole request: the message Graph
    is reported to send (captured replies), code 100, HTTP 400."""
    return GraphError("(#100) The value must be a valid insights metric", code=100)


def no_metric() -> GraphError:
    """``/insights`` without ``metric``: the Insights reference's code, subcode and text."""
    return GraphError(
        "No metric was specified to be fetched. Please specify one or more metrics to be "
        "fetched and try again.",
        code=3001,
        subcode=1504028,
    )
