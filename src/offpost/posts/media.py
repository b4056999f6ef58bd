"""A post's media: several photos, a video or a Reel, each from a URL or an upload.

What a client sends (``photos``, ``video``, ``reel`` beside ``message`` and
``link``) is checked here and kept on the post as one JSON document, its
*media spec*, of exactly one of the shapes::

    {"photos": [{"url": "https://…"} | {"media_id": "med_…"}, …]}      # 1 to 10
    {"video": {"url" | "media_id": …, "title"?: …, "description"?: …}}
    {"reel": {"url" | "media_id": …, "description"?: …}}

``photo_url`` stays what it was: one photo by URL, published as a photo post.
The rules that need no database are :func:`spec_problems`; those that need the
client's uploads (:func:`check_uploads`) and the Page's Reels
(:mod:`offpost.posts.budgets`) run when the post is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from offpost.media.inspect import check_for_reel
from offpost.media.spec import spec_kind, spec_media_ids
from offpost.media.uses import MediaNotUsableError, media_for_post
from offpost.models.media import Media, MediaKind
from offpost.posts.input import MediaSource, PhotoIn, ReelIn, VideoIn
from offpost.posts.rules import FieldProblem


def media_spec(
    photos: Sequence[PhotoIn] | None, video: VideoIn | None, reel: ReelIn | None
) -> dict[str, Any] | None:
    """The media spec kept on the post (``None`` for a post without these fields)."""
    if photos:
        return {"photos": [_source(p) for p in photos]}
    if video is not None:
        return {"video": _source(video) | _text(title=video.title, description=video.description)}
    if reel is not None:
        return {"reel": _source(reel) | _text(description=reel.description)}
    return None


def _source(source: MediaSource) -> dict[str, str]:
    return {"url": source.url} if source.url is not None else {"media_id": str(source.media_id)}


def _text(**fields: str | None) -> dict[str, str]:
    return {name: value for name, value in fields.items() if value is not None}


#: Why a video by URL needs a text: Graph names the video only in its answer; when that
#: answer is lost, the video is found on the Page by its text (docs/media.md).
URL_VIDEO_TEXT = (
    "a video by URL needs a text (message or description): if Graph's answer is lost, "
    "it is how offpost finds the video on the Page instead of publishing it twice"
)


def needs_text(spec: Mapping[str, Any] | None) -> bool:
    """Whether the post's text must stay: a video by URL without a description."""
    video = spec.get("video") if spec else None
    return video is not None and "url" in video and not video.get("description")


def spec_problems(
    *,
    message: str | None,
    link: str | None,
    photo_url: str | None,
    photos: Sequence[PhotoIn] | None,
    video: VideoIn | None,
    reel: ReelIn | None,
    prefix: str = "",
) -> list[FieldProblem]:
    """What is wrong with a post's combination of content fields (no database needed)."""
    given = [
        name
        for name, value in (
            ("photo_url", photo_url),
            ("photos", photos),
            ("video", video),
            ("reel", reel),
        )
        if value is not None
    ]
    problems: list[FieldProblem] = []
    if len(given) > 1:
        problems.append(FieldProblem(f"{prefix}{given[1]}", f"give only one of {', '.join(given)}"))
        return problems
    kind = given[0] if given else None
    if link is not None and (
        kind in ("video", "reel") or (kind == "photos" and photos and len(photos) > 1)
    ):
        what = "several photos" if kind == "photos" else f"a {kind}"
        problems.append(
            FieldProblem(
                f"{prefix}link", f"a post with {what} cannot carry a link; put it in the text"
            )
        )
    if (
        video is not None
        and video.url is not None
        and message is None
        and video.description is None
    ):
        problems.append(FieldProblem(f"{prefix}video.description", URL_VIDEO_TEXT))
    described = (video.description if video else None) or (reel.description if reel else None)
    if message is not None and described is not None:
        problems.append(
            FieldProblem(
                f"{prefix}{kind}.description",
                "give the text once: in message or in the description",
            )
        )
    return problems


def check_uploads(
    session: Session,
    client_id: str,
    spec: Mapping[str, Any] | None,
    *,
    prefix: str = "",
) -> tuple[dict[str, Media], list[FieldProblem]]:
    """The uploads ``spec`` names, each the client's, ready, and of the right kind (and a
    Reel's within Graph's Reels limits); the problems found, by field."""
    kind = spec_kind(spec)
    ids = spec_media_ids(spec)
    if not ids or kind is None:
        return {}, []
    problems: list[FieldProblem] = []
    try:
        found = media_for_post(session, client_id, ids)
    except MediaNotUsableError as exc:
        return {}, [FieldProblem(_field_of(spec, exc.media_id, prefix), str(exc))]
    want = MediaKind.IMAGE if kind == "photos" else MediaKind.VIDEO
    for media_id in ids:
        media = found[media_id]
        where = _field_of(spec, media_id, prefix)
        if media.kind is not want:
            problems.append(
                FieldProblem(where, f"{media_id} is {media.kind.value}, not {want.value}")
            )
        elif kind == "reel":
            problems += [FieldProblem(where, why) for why in check_for_reel(media)]
    return found, problems


def _field_of(spec: Mapping[str, Any] | None, media_id: str, prefix: str) -> str:
    kind = spec_kind(spec)
    if kind == "photos" and spec is not None:
        for i, source in enumerate(spec["photos"]):
            if source.get("media_id") == media_id:
                return f"{prefix}photos[{i}].media_id"
    return f"{prefix}{kind}.media_id"
