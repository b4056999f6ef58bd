"""A post's media spec, as stored (``posts.media``, ``schedules.media``): what the posts
code checks it into (``offpost.posts.media``) and what the worker publishes from it.

Exactly one of::

    {"photos": [{"url": "https://…"} | {"media_id": "med_…"}, …]}      # 1 to 10
    {"video": {"url" | "media_id": …, "title"?: …, "description"?: …}}
    {"reel": {"url" | "media_id": …, "description"?: …}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def spec_kind(spec: Mapping[str, Any] | None) -> str | None:
    """``photos``, ``video`` or ``reel``; ``None`` without media."""
    return next(iter(spec), None) if spec else None


def spec_sources(spec: Mapping[str, Any] | None) -> list[Mapping[str, str]]:
    """The spec's sources, in order (photos: each photo; video, reel: the one file)."""
    kind = spec_kind(spec)
    if kind is None or spec is None:
        return []
    return list(spec["photos"]) if kind == "photos" else [spec[kind]]


def spec_media_ids(spec: Mapping[str, Any] | None) -> list[str]:
    """The uploads the spec uses."""
    return [s["media_id"] for s in spec_sources(spec) if "media_id" in s]


def is_multi_step(spec: Mapping[str, Any] | None) -> bool:
    """Whether publishing takes several Graph calls (or an upload): every media post
    except one photo by URL, which is one ``/photos`` call like ``photo_url``."""
    kind = spec_kind(spec)
    if kind is None or spec is None:
        return False
    return not (kind == "photos" and len(spec["photos"]) == 1 and "url" in spec["photos"][0])
