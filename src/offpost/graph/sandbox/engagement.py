"""After a post is published: comments, edits, its counts and its insights.

- ``POST /{post-id}/comments`` ``message``: a comment by the Page, with the Page's
  token (``pages_manage_engagement``, a person with ``MODERATE`` or ``CREATE_CONTENT``
  there); answers ``{"id": "<comment-id>"}``. A user token gets ``(#1705)`` (the
  Pages comments guide). Photos and videos take comments on their own post; a reel,
  which has no post in the sandbox, on its video id.
- ``GET /{post-id}/comments``: the comments, ``filter`` (``toplevel``, ``stream``:
  the same here, every comment is top-level), ``order`` (``chronological``, the
  default, or ``reverse_chronological``), ``since``/``until``, cursors; fields
  ``id``, ``message``, ``created_time``, ``from{id,name}``.
- ``POST /{post-id}`` ``message``: ``{"success": true}``; the message and
  ``updated_time`` change. Only the app that made the post may (the Posts guide:
  "An app can only update a Page post if the post was made using that app"), else
  ``(#200)``; a video's post is refused with ``(#100)``.
- ``GET /{post-id}?fields=…,reactions.summary(total_count).limit(0),comments.summary(…),shares``:
  Graph's field expansion; ``shares`` is left out while it is 0, as Graph does.
- ``GET /{post-id}/insights?metric=a,b``: ``{"data": [{"name", "period": "lifetime",
  "values": [{"value"}], "title", "description", "id"}]}``. One deprecated or
  unknown metric fails the whole call with ``(#100) The value must be a valid
  insights metric``; no metric at all is 3001/1504028 (Insights reference). A Page
  whose insights are off (under 100 likes) answers ``{"data": []}``.

**The audience model.** Counts grow with the sandbox clock since the post's
creation, the same for the same post id whatever else happens: a post reaches
``reach_max`` people (from the post id's hash) along ``1 - exp(-hours / tau)``;
views, reactions, shares and audience comments are fixed shares of that reach.
Every count is a floor of a non-decreasing function, so none ever goes down.
``comments.summary.total_count`` adds the comments actually made (the Page's and
people's, listed by ``/comments``) to the audience's (counted, never listed — as
Graph counts comments a caller cannot see).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from offpost.graph.sandbox import errors
from offpost.graph.sandbox.pages import (
    MAX_MESSAGE_CHARS,
    graph_time,
    post_view,
    require_publisher,
    require_reader,
    time_bounds,
)
from offpost.graph.sandbox.params import GraphRequest, field_expansions, paginate, select
from offpost.graph.sandbox.state import (
    Comment,
    Page,
    Photo,
    Post,
    Token,
    TokenKind,
    Video,
    World,
)

#: The tasks that let a person comment as the Page.
COMMENT_TASKS = ("MODERATE", "CREATE_CONTENT")
_COMMENT_FIELDS = ("created_time", "from", "message", "id")
_HOUR_S = 3600.0

#: Post metrics Meta lists as deprecated (an invalid-metric error on every version):
#: the Nov 15, 2025 Pages API changelog (``post_impressions``, ``_paid``, ``_fan``,
#: ``_organic``, ``_viral``, ``_nonviral``) and the deprecated-metrics page's
#: ``*_unique`` ones. Graph's refusal of them is the sandbox's default.
DEPRECATED_POST_METRICS = frozenset(
    {
        "post_impressions",
        "post_impressions_paid",
        "post_impressions_fan",
        "post_impressions_organic",
        "post_impressions_viral",
        "post_impressions_nonviral",
        "post_impressions_unique",
        "post_impressions_paid_unique",
        "post_impressions_fan_unique",
        "post_impressions_organic_unique",
        "post_impressions_viral_unique",
        "post_impressions_nonviral_unique",
    }
)


@dataclass(frozen=True)
class Audience:
    """What a post's audience did by a given moment (see the module's model)."""

    reach: int
    views: int
    reactions: int
    shares: int
    comments: int
    clicks: int


def _seed(post_id: str) -> int:
    return int.from_bytes(hashlib.sha256(post_id.encode()).digest()[:8], "big")


def audience(post_id: str, created_time: float, now: float) -> Audience:
    """The audience of ``post_id`` at ``now``: deterministic, non-decreasing in ``now``."""
    seed = _seed(post_id)
    reach_max = 200 + seed % 1800
    tau_h = 4.0 + (seed >> 12) % 20
    hours = max(0.0, (now - created_time) / _HOUR_S)
    reached = reach_max * (1.0 - math.exp(-hours / tau_h))
    views_per_person = 1.2 + ((seed >> 20) % 60) / 100
    return Audience(
        reach=math.floor(reached),
        views=math.floor(reached * views_per_person),
        reactions=math.floor(reached * (0.03 + ((seed >> 28) % 8) / 100)),
        shares=math.floor(reached * (0.002 + ((seed >> 36) % 10) / 1000)),
        comments=math.floor(reached * (0.005 + ((seed >> 44) % 15) / 1000)),
        clicks=math.floor(reached * (0.02 + ((seed >> 52) % 6) / 100)),
    )


#: Each post metric the sandbox knows: (title, description, value from the audience).
_METRICS: dict[str, tuple[str, str, Any]] = {
    "post_media_view": (
        "Lifetime Post Views",
        "Lifetime: The number of times your post was on screen.",
        lambda a: a.views,
    ),
    "post_total_media_view_unique": (
        "Lifetime Post Viewers",
        "Lifetime: The number of people who saw your post at least once.",
        lambda a: a.reach,
    ),
    "post_clicks": (
        "Lifetime Post Clicks",
        "Lifetime: The number of clicks anywhere in your post.",
        lambda a: a.clicks,
    ),
    "post_reactions_like_total": (
        "Lifetime Like Reactions",
        "Lifetime: Total like reactions of a post.",
        lambda a: a.reactions,
    ),
    "post_impressions": (
        "Lifetime Post Total Impressions",
        "Lifetime: The number of times your post was on screen.",
        lambda a: a.views,
    ),
    "post_impressions_unique": (
        "Lifetime Post Total Reach",
        "Lifetime: The number of people who had your post enter their screen.",
        lambda a: a.reach,
    ),
    "post_impressions_organic": (
        "Lifetime Post Organic Impressions",
        "Lifetime: The number of times your post was on screen through unpaid distribution.",
        lambda a: a.views,
    ),
    "post_impressions_organic_unique": (
        "Lifetime Post organic reach",
        "Lifetime: The number of people who had your post enter their screen through "
        "unpaid distribution.",
        lambda a: a.reach,
    ),
    "post_impressions_paid": (
        "Lifetime Post Paid Impressions",
        "Lifetime: The number of times your post was on screen through paid distribution.",
        lambda a: 0,
    ),
    "post_impressions_paid_unique": (
        "Lifetime Post Paid Reach",
        "Lifetime: The number of people who had your post enter their screen through paid "
        "distribution.",
        lambda a: 0,
    ),
    "post_impressions_fan": (
        "Lifetime Post Impressions by people who have liked your Page",
        "Lifetime: The number of times your post was on screen for people who follow your Page.",
        lambda a: a.views * 3 // 10,
    ),
    "post_impressions_fan_unique": (
        "Lifetime Post reach by people who like your Page",
        "Lifetime: The number of people who follow your Page who saw your post.",
        lambda a: a.reach * 3 // 10,
    ),
    "post_impressions_viral": (
        "Lifetime Post Viral Impressions",
        "Lifetime: The number of times your post was on screen through a story shared by a friend.",
        lambda a: a.views // 5,
    ),
    "post_impressions_viral_unique": (
        "Lifetime Post Viral Reach",
        "Lifetime: The number of people who saw your post through a story shared by a friend.",
        lambda a: a.reach // 5,
    ),
    "post_impressions_nonviral": (
        "Lifetime Post Nonviral Impressions",
        "Lifetime: The number of times your post was on screen not through a friend's story.",
        lambda a: a.views - a.views // 5,
    ),
    "post_impressions_nonviral_unique": (
        "Lifetime Post Nonviral Reach",
        "Lifetime: The number of people who saw your post not through a friend's story.",
        lambda a: a.reach - a.reach // 5,
    ),
}
#: Every post metric name the sandbox answers (when not deprecated for the Page).
KNOWN_POST_METRICS = frozenset(_METRICS)


def deprecated_metrics(page: Page) -> frozenset[str]:
    return DEPRECATED_POST_METRICS if page.deprecated_metrics is None else page.deprecated_metrics


# --- comments -------------------------------------------------------------------------


def comment_target(owner: Post | Photo | Video, world: World) -> str:
    """The id comments on ``owner`` are kept under: its own post for a photo or video."""
    if isinstance(owner, Post):
        return owner.post_id
    post = world.posts.get(owner.post_id or "")
    if post is not None:
        return post.post_id
    return owner.photo_id if isinstance(owner, Photo) else owner.video_id


def add_comment(
    world: World, target_id: str, *, message: str, from_id: str, from_name: str, token: Token | None
) -> Comment:
    """A new comment on ``target_id``; the caller holds ``world.lock``."""
    comment = Comment(
        comment_id=f"{target_id.rsplit('_', 1)[-1]}_{world.new_id(16)}",
        target_id=target_id,
        created_time=world.now(),
        message=message,
        from_id=from_id,
        from_name=from_name,
        app=world.apps.get(token.app_id) if token is not None else None,
    )
    world.comments.setdefault(target_id, []).append(comment)
    return comment


def comment_view(comment: Comment) -> dict[str, Any]:
    return {
        "id": comment.comment_id,
        "created_time": graph_time(comment.created_time),
        "from": {"name": comment.from_name, "id": comment.from_id},
        "message": comment.message,
    }


def _require_commenter(world: World, token: Token, page: Page) -> None:
    if token.kind is not TokenKind.PAGE:
        raise errors.comment_as_user()
    with world.lock:
        user = world.users.get(token.user_id or "")
        tasks = user.tasks_on(page.page_id) if user is not None else ()
    if (
        token.page_id != page.page_id
        or "pages_manage_engagement" not in token.scopes
        or not any(task in tasks for task in COMMENT_TASKS)
    ):
        raise errors.engagement_permission()


def post_comment(
    world: World, req: GraphRequest, token: Token, page: Page, owner: Post | Photo | Video
) -> dict[str, Any]:
    """``POST /{object-id}/comments``: a comment by the Page."""
    _require_commenter(world, token, page)
    message = req.params.get("message") or None
    if message is None:
        raise errors.invalid_param("Missing message or attachment")
    if len(message) > MAX_MESSAGE_CHARS:
        raise errors.invalid_param(
            f"Message is too long: the maximum is {MAX_MESSAGE_CHARS} characters"
        )
    with world.lock:
        comment = add_comment(
            world,
            comment_target(owner, world),
            message=message,
            from_id=page.page_id,
            from_name=page.name,
            token=token,
        )
    return {"id": comment.comment_id}


def list_comments(
    world: World, req: GraphRequest, token: Token, page: Page, owner: Post | Photo | Video
) -> dict[str, Any]:
    """``GET /{object-id}/comments``."""
    require_reader(token, page)
    order = req.params.get("order") or "chronological"
    if order not in ("chronological", "reverse_chronological", "ranked"):
        raise errors.invalid_param(
            "order must be one of chronological, reverse_chronological, ranked"
        )
    flt = req.params.get("filter") or "toplevel"
    if flt not in ("toplevel", "stream"):
        raise errors.invalid_param("filter must be one of toplevel, stream")
    within = time_bounds(req)
    with world.lock:
        comments = [
            comment
            for comment in world.comments.get(comment_target(owner, world), [])
            if within(comment.created_time)
        ]
    if order == "reverse_chronological":
        comments.reverse()
    chunk, paging = paginate(req, comments, key=lambda comment: comment.comment_id)
    fields = req.fields(_COMMENT_FIELDS)
    body: dict[str, Any] = {"data": [select(comment_view(c), fields) for c in chunk]}
    if paging:
        body["paging"] = paging
    return body


# --- edits ----------------------------------------------------------------------------


def edit_post(
    world: World, req: GraphRequest, token: Token, page: Page, post: Post
) -> dict[str, Any]:
    """``POST /{post-id}`` with ``message``: the post's text changes."""
    require_publisher(world, token, page)
    if post.app is None or post.app.app_id != token.app_id:
        raise errors.edit_not_own_post()
    if post.media_type == "video":
        raise errors.edit_media_post()
    message = req.params.get("message")
    if message is None:
        raise errors.missing_param("message")
    if len(message) > MAX_MESSAGE_CHARS:
        raise errors.invalid_param(
            f"Message is too long: the maximum is {MAX_MESSAGE_CHARS} characters"
        )
    with world.lock:
        post.message = message or None
        post.updated_time = world.now()
        if post.photo_id is not None and post.photo_id in world.photos:
            world.photos[post.photo_id].caption = post.message
    return {"success": True}


# --- counts and insights --------------------------------------------------------------


def _edge_summary(expansion: str, total: int, data: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"data", "summary"?}`` for ``reactions`` or ``comments`` with their modifiers."""
    shown = [] if ".limit(0)" in expansion.replace(" ", "") else data
    edge: dict[str, Any] = {"data": shown}
    if ".summary(" in expansion and ".summary(false)" not in expansion.replace(" ", ""):
        edge["summary"] = {"total_count": total}
    return edge


def post_node(
    world: World, req: GraphRequest, token: Token, page: Page, post: Post
) -> dict[str, Any]:
    """``GET /{post-id}``, with Graph's engagement fields when asked for."""
    require_reader(token, page)
    expansions = field_expansions(req.params.get("fields", ""))
    view = post_view(post)
    if expansions:
        with world.lock:
            now = world.now()
            made = list(world.comments.get(post.post_id, []))
        crowd = audience(post.post_id, post.created_time, now)
        if "reactions" in expansions:
            view["reactions"] = _edge_summary(expansions["reactions"], crowd.reactions, [])
        if "comments" in expansions:
            listed = [comment_view(comment) for comment in made[:25]]
            view["comments"] = _edge_summary(
                expansions["comments"], crowd.comments + len(made), listed
            )
        if "shares" in expansions and crowd.shares > 0:
            view["shares"] = {"count": crowd.shares}
    return select(view, req.fields(("created_time", "message", "id")))


def _metric_names(req: GraphRequest) -> list[str]:
    raw = req.params.get("metric", "")
    names = [name.strip() for name in raw.strip("[]").replace('"', "").split(",")]
    return [name for name in names if name]


def post_insights(
    world: World, req: GraphRequest, token: Token, page: Page, post: Post
) -> dict[str, Any]:
    """``GET /{post-id}/insights?metric=…``: lifetime values from the audience model.

    Needs what reading the Page needs, and a person with the ``ANALYZE`` task (the
    Insights reference asks for a Page token of someone who can ``ANALYZE``).
    """
    require_reader(token, page)
    with world.lock:
        user = world.users.get(token.user_id or "")
        may_analyze = user is not None and "ANALYZE" in user.tasks_on(page.page_id)
    if not may_analyze:
        raise errors.read_permission()
    names = _metric_names(req)
    if not names:
        raise errors.no_metric()
    refused = deprecated_metrics(page)
    if any(name not in _METRICS or name in refused for name in names):
        raise errors.invalid_metric()
    if not page.insights_available:
        return {"data": []}
    crowd = audience(post.post_id, post.created_time, world.now())
    data = []
    for name in dict.fromkeys(names):
        title, description, value = _METRICS[name]
        data.append(
            {
                "name": name,
                "period": "lifetime",
                "values": [{"value": value(crowd)}],
                "title": title,
                "description": description,
                "id": f"{post.post_id}/insights/{name}/lifetime",
            }
        )
    body: dict[str, Any] = {"data": data}
    return body


def insights_state(page: Page) -> dict[str, Any]:
    """What ``/_sandbox/pages/{id}/insights`` shows."""
    return {
        "page_id": page.page_id,
        "available": page.insights_available,
        "deprecated_metrics": sorted(deprecated_metrics(page)),
        "known_metrics": sorted(KNOWN_POST_METRICS),
    }
