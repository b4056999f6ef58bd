"""Reading Graph's JSON defensively: any field may be missing or of another type.

Pure functions the client uses to turn reply bodies into :mod:`offpost.graph.types`.
A value a caller cannot do without raises :class:`GraphMalformedResponseError`
(outcome unknown: for a POST, the effect may exist although the reply is useless).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from offpost.graph.classify import auth_reason
from offpost.graph.errors import GraphMalformedResponseError, scrub_secrets
from offpost.graph.types import GranularScope, TokenInfoError, VideoStatus
from offpost.graph.usage import GraphUsage

JsonObject = dict[str, Any]
# Query parameters a ``paging.next`` URL carries that the client attaches itself.
AUTH_PARAMS = frozenset({"access_token", "appsecret_proof", "appsecret_time"})


def form_token_body(content: bytes) -> JsonObject | None:
    """A legacy ``access_token=...&expires=...`` body, or ``None`` when it is not one."""
    text = content.decode("utf-8", errors="replace").strip()
    if not text or text.startswith(("{", "[")):
        return None
    fields = dict(parse_qsl(text, keep_blank_values=False))
    return dict(fields) if "access_token" in fields else None


def next_page_params(paging: object, base: Mapping[str, str]) -> dict[str, str] | None:
    """The query for the next result page, or ``None`` at the end.

    Graph's ``next`` URL holds the token and may point at graph.facebook.com, so
    only its non-auth query parameters are reused, on our own base URL.
    """
    if not isinstance(paging, dict) or not isinstance(paging.get("next"), str):
        return None
    try:
        next_query = httpx.URL(paging["next"]).params
    except httpx.InvalidURL:
        next_query = httpx.QueryParams()
    carried = {k: v for k, v in next_query.items() if k not in AUTH_PARAMS}
    if carried:
        return {**base, **carried}
    cursors = paging.get("cursors")
    after = cursors.get("after") if isinstance(cursors, dict) else None
    return {**base, "after": after} if isinstance(after, str) and after else None


def require_str(body: Mapping[str, Any], key: str, what: str, usage: GraphUsage) -> str:
    value = opt_id(body.get(key))
    if value is None:
        # The call succeeded but its answer is unusable: for a POST the effect may exist.
        raise GraphMalformedResponseError(
            f"{what} answered without {key!r}", is_transient=True, usage=usage
        )
    return value


def opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def opt_id(value: object) -> str | None:
    """Ids are strings in Graph's JSON, but tolerate numbers."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return opt_str(value)


def opt_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def offset_int(value: object) -> int | None:
    """A byte offset: a non-negative integer, which Graph sends as a string or a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and value >= 0 else None


def require_offset(body: Mapping[str, Any], key: str, what: str, usage: GraphUsage) -> int:
    value = offset_int(body.get(key))
    if value is None:
        raise GraphMalformedResponseError(
            f"{what} answered without a usable {key!r}", is_transient=True, usage=usage
        )
    return value


def attachment_media_ids(value: object) -> tuple[str, ...]:
    """The photo and video ids of a post's ``attachments``, in order: an album's
    ``subattachments``, or a single photo's or video's ``target``."""
    data = value.get("data") if isinstance(value, dict) else None
    if not isinstance(data, list):
        return ()
    ids: list[str] = []
    for attachment in data:
        if not isinstance(attachment, dict):
            continue
        sub = attachment.get("subattachments")
        parts = sub.get("data") if isinstance(sub, dict) else None
        for part in parts if isinstance(parts, list) else [attachment]:
            media_id = _media_target_id(part)
            if media_id is not None:
                ids.append(media_id)
    return tuple(ids)


def _media_target_id(attachment: object) -> str | None:
    if not isinstance(attachment, dict):
        return None
    media_type = opt_str(attachment.get("media_type")) or ""
    if media_type != "photo" and not media_type.startswith("video"):
        return None
    target = attachment.get("target")
    return opt_id(target.get("id")) if isinstance(target, dict) else None


def video_status_name(value: object) -> str | None:
    """``status.video_status`` of a video object."""
    return opt_str(value.get("video_status")) if isinstance(value, dict) else None


def _phase(status: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    phase = status.get(name)
    return phase if isinstance(phase, dict) else {}


def parse_video_status(value: object, usage: GraphUsage) -> VideoStatus:
    """``/{video-id}?fields=status``; the bytes received are ``bytes_transfered`` in
    Meta's Reels guide (sic) and ``bytes_transferred`` in replies seen: both are read."""
    status: Mapping[str, Any] = value if isinstance(value, dict) else {}
    uploading = _phase(status, "uploading_phase")
    publishing = _phase(status, "publishing_phase")
    transferred = uploading.get("bytes_transferred", uploading.get("bytes_transfered"))
    return VideoStatus(
        video_status=opt_str(status.get("video_status")),
        uploading_status=opt_str(uploading.get("status")),
        bytes_transferred=offset_int(transferred),
        processing_status=opt_str(_phase(status, "processing_phase").get("status")),
        publishing_status=opt_str(publishing.get("status")),
        publish_status=opt_str(publishing.get("publish_status")),
        usage=usage,
    )


def positive_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def unix_time(value: object) -> datetime | None:
    """A unix timestamp as an aware datetime; Graph's ``0`` means "never"."""
    seconds = positive_int(value)
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def graph_time(value: object, usage: GraphUsage) -> datetime:
    """Graph's ``2026-11-28T17:00:00+0000`` as an aware UTC datetime."""
    if isinstance(value, str):
        parsed: datetime | None
        try:
            parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            parsed = _iso_time(value)
        if parsed is not None:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    raise GraphMalformedResponseError(
        f"unreadable created_time {value!r}", is_transient=True, usage=usage
    )


def _iso_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def str_tuple(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def granular_scopes(value: object) -> tuple[GranularScope, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        GranularScope(scope=item["scope"], target_ids=str_tuple(item.get("target_ids")))
        for item in value
        if isinstance(item, dict) and isinstance(item.get("scope"), str)
    )


def token_info_error(value: object) -> TokenInfoError | None:
    if not isinstance(value, dict):
        return None
    code = value.get("code")
    subcode = value.get("subcode", value.get("error_subcode"))
    message = scrub_secrets(opt_str(value.get("message")) or "")
    code_int = code if isinstance(code, int) and not isinstance(code, bool) else None
    subcode_int = subcode if isinstance(subcode, int) and not isinstance(subcode, bool) else None
    return TokenInfoError(
        code=code_int,
        subcode=subcode_int,
        message=message,
        reason=auth_reason(subcode_int, message),
    )


def count(value: object) -> int:
    """A non-negative count Graph sends as a number (or a digit string); 0 otherwise."""
    return offset_int(value) or 0


def summary_total(edge: object) -> int:
    """``{"data": [], "summary": {"total_count": N}}`` -> N (0 when absent)."""
    summary = edge.get("summary") if isinstance(edge, dict) else None
    return count(summary.get("total_count")) if isinstance(summary, dict) else 0


def share_count(shares: object) -> int:
    """``{"count": K}`` -> K; Graph leaves ``shares`` out while there are none."""
    return count(shares.get("count")) if isinstance(shares, dict) else 0


def opt_graph_time(value: object, usage: GraphUsage) -> datetime | None:
    return None if value is None else graph_time(value, usage)


def insights_values(data: object, names: tuple[str, ...]) -> dict[str, int | None]:
    """``{"data": [{"name", "values": [{"value"}, …]}]}`` as the newest value of each
    metric asked for; ``None`` for a metric missing or not a count."""
    values: dict[str, int | None] = dict.fromkeys(names)
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict) or item.get("name") not in values:
            continue
        points = item.get("values")
        last = points[-1] if isinstance(points, list) and points else None
        value = last.get("value") if isinstance(last, dict) else None
        values[item["name"]] = offset_int(value)
    return values
