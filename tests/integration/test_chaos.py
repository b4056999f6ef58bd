"""The promise under fire: edits, cancels and a lost role while processes die and replies
are lost.

A few hundred posts fall due over some twenty seconds, across several Pages. Two
dispatchers and three workers run; every second or so one of them is killed with
SIGKILL at a random instant and restarted. A tenth of the publish replies are
lost after Graph created the post; publishes go in Graph batch requests (as
shipped), and a tenth of those requests lose their whole reply too. All the
while a client edits and cancels random posts through the HTTP API, one request
at a time: posts falling due within seconds, posts falling due right now, and
posts whose last Graph call may have published them (those must answer ``409
outcome_unknown``). Each answer goes into the post's ledger: the content of its
last edit answered 200 (else its first message), and whether a cancel answered
200; a 409 changes nothing. Meanwhile one Page's user loses their role on it:
that Page's token dies, its posts are parked (``needs_reauth``), including any
whose outcome is unknown; then the role comes back, the user logs in again, the
client hands the fresh token over and the parked posts resume. A quarter of the
posts carry several photos or a video, fetched by Graph from a local HTTP
server; replies of photo uploads and videos are lost too.

Afterwards every post is exactly one of: ``published`` once, on its Page, under
its Graph id, with the content the client last set; ``canceled`` after a cancel
answered 200, and none of its texts on the Page; ``failed`` with a clear error
and absent from the Page. Nothing in between, nothing twice, nothing lost. And
nothing left behind: every photo offpost uploaded is attached to its published post,
or deleted; the only others are photos whose upload reply was lost, which no reply
named and Graph never shows.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from offpost.graph.sandbox import RunningSandbox
from offpost.models import (
    Attempt,
    AttemptOutcome,
    Followup,
    FollowupKind,
    FollowupStatus,
    PostStatus,
    PostStep,
    StepKind,
)
from offpost.workers.leftovers import posts_with_leftovers
from tests.conftest import fresh_postgres_database
from tests.integration.media_files import FileServer, mp4, png, serving_files
from tests.integration.pipeline_support import (
    ChangingClient,
    Pipeline,
    check_promise,
    lose_publish_replies,
    new_client,
    posts_across_pages,
    running_pipeline,
    wait_for,
)
from tests.integration.sandbox_support import TIMEOUT, SandboxClient

logger = logging.getLogger(__name__)

PAGES = 6
POSTS_PER_PAGE = 50
#: Posts fall due over most of the chaos, so that edits and cancels meet every state.
DUE_WINDOW_S = 20.0
CHAOS_S = 25.0
LOST_REPLY_RATE = 0.1
#: The client's pause between two requests: at random, up to twice this.
CLIENT_PAUSE_S = 0.08
#: Of the client's requests: cancels (the rest are edits); and the targets drawn
#: among posts owing reconciliation, and among posts falling due soon (the rest
#: among those falling due now).
CANCEL_SHARE = 0.2
#: When, into the chaos, one Page's role is taken away, and when it comes back.
ROLE_LOST_AT_S = 6.0
ROLE_BACK_AT_S = 14.0
UNKNOWN_SHARE = 0.25
SOON_SHARE = 0.45
TERMINAL = {PostStatus.PUBLISHED, PostStatus.CANCELED, PostStatus.FAILED}
#: Of the posts: several photos, and a video (the rest are text).
PHOTOS_SHARE = 0.15
VIDEO_SHARE = 0.10
#: Of the posts: those with a first comment (a follow-up once published).
COMMENT_SHARE = 0.2


def chaos_media(files: FileServer) -> Callable[[random.Random], dict[str, Any] | None]:
    """A post's media for the chaos: 2 to 4 photos, or a video, by URL (or none)."""
    photos = [files.put(f"chaos-{i}.png", png()) for i in range(6)]
    video = files.put("chaos.mp4", mp4(width=1280, height=720))

    def pick(rng: random.Random) -> dict[str, Any] | None:
        draw = rng.random()
        if draw < PHOTOS_SHARE:
            return {"photos": [{"url": url} for url in rng.sample(photos, rng.randint(2, 4))]}
        if draw < PHOTOS_SHARE + VIDEO_SHARE:
            return {"video": {"url": video}}
        return None

    return pick


def check_comments(
    pipeline: Pipeline, graph: SandboxClient, post_ids: dict[str, list[str]]
) -> list[str]:
    """Every published post with a first comment has it on Facebook once, by its Page,
    under the id its follow-up recorded; a post not published has none."""
    broken: list[str] = []
    every = [i for ids in post_ids.values() for i in ids]
    with pipeline.sessions() as session:
        done = {
            f.post_id: f
            for f in session.scalars(
                select(Followup).where(
                    Followup.post_id.in_(every), Followup.kind == FollowupKind.COMMENT
                )
            )
        }
    for page_id, ids in post_ids.items():
        shown_by = {
            v["id"]: v["post_id"]
            for v in graph.control("GET", f"/pages/{page_id}/videos")["data"]
            if v["post_id"]
        }
        for post in pipeline.posts(ids):
            if post.first_comment is None or post.graph_post_id is None:
                continue
            # A video's comments may be read through the video or its post: once each.
            by_id: dict[str, dict[str, Any]] = {}
            for object_id in {post.graph_post_id, shown_by.get(post.graph_post_id)} - {None}:
                response = graph.http.get(f"/_sandbox/posts/{object_id}/comments")
                if response.status_code == 200:
                    by_id |= {
                        c["id"]: c
                        for c in response.json()["data"]
                        if c["message"] == post.first_comment and c["from"]["id"] == page_id
                    }
            found = list(by_id.values())
            followup = done.get(post.id)
            if post.status is PostStatus.PUBLISHED:
                if len(found) != 1:
                    broken.append(f"{post.id}: its first comment is there {len(found)} times")
                elif followup is None or followup.graph_id != found[0]["id"]:
                    broken.append(f"{post.id}: the comment is not the one its follow-up names")
    return broken


def left_behind(pipeline: Pipeline, graph: SandboxClient, post_ids: dict[str, list[str]]) -> Any:
    """Photos offpost uploaded and named that are neither attached to a live post nor
    deleted (must be none), and the unnamed ones lost replies made (unpublished)."""
    every = [i for ids in post_ids.values() for i in ids]
    with pipeline.sessions() as session:
        named = set(
            session.scalars(
                select(PostStep.graph_id).where(
                    PostStep.post_id.in_(every),
                    PostStep.kind == StepKind.PHOTO,
                    PostStep.graph_id.is_not(None),
                )
            )
        )
    kept, unnamed = [], []
    for page_id in post_ids:
        live = {p["id"] for p in graph.posts(page_id) if not p.get("deleted")}
        for photo in graph.control("GET", f"/pages/{page_id}/photos")["data"]:
            if photo["deleted"] or photo["attached_to"] in live:
                continue
            (kept if photo["id"] in named else unnamed).append(photo)
    return kept, unnamed


@pytest.mark.timeout(420)
def test_promise_kept_through_kills_lost_replies_edits_and_cancels(
    postgres_server_url: str, redis_url: str, sandbox_server: RunningSandbox, tmp_path: Path
) -> None:
    started = time.monotonic()
    rng = random.Random(20261128)
    with (
        fresh_postgres_database(postgres_server_url) as db,
        running_pipeline(db, redis_url, sandbox_server, tmp_path / "logs") as pipeline,
        httpx.Client(base_url=sandbox_server.url, timeout=TIMEOUT) as http,
        pipeline.api() as api,
        serving_files() as files,
    ):
        graph = SandboxClient(sandbox_server, http)
        client_id, key = new_client(pipeline, "chaos")
        users: dict[str, dict[str, Any]] = {}
        post_ids = posts_across_pages(
            pipeline,
            graph,
            client_id,
            key,
            pages=PAGES,
            per_page=POSTS_PER_PAGE,
            label="chaos",
            window_s=DUE_WINDOW_S,
            rng=rng,
            users=users,
            media=chaos_media(files),
            comment_share=COMMENT_SHARE,
        )
        lost_page = rng.choice(sorted(post_ids))
        lost_user = users[lost_page]["user_id"]
        parked_at_relogin = -1
        every = [i for ids in post_ids.values() for i in ids]
        client = ChangingClient(
            pipeline,
            api,
            key,
            every,
            random.Random(rng.random()),
            cancel_share=CANCEL_SHARE,
            unknown_share=UNKNOWN_SHARE,
            soon_share=SOON_SHARE,
        )
        lose_publish_replies(
            graph,
            LOST_REPLY_RATE,
            times=10_000,
            paths=(r"/feed$", r"/photos$", r"/videos$", r"/comments$", r"/[0-9]+_[0-9]+$"),
        )

        roles = {
            "dispatcher-1": pipeline.start_dispatcher,
            "dispatcher-2": pipeline.start_dispatcher,
            "worker-1": pipeline.start_worker,
            "worker-2": pipeline.start_worker,
            "worker-3": pipeline.start_worker,
            # Follow-ups (first comments, edits on Facebook) run on the webhooks role.
            "webhooks-1": pipeline.start_webhooks,
        }
        for name, start in roles.items():
            start(name)
        kills = 0
        chaos_started = time.monotonic()
        deadline = chaos_started + CHAOS_S
        role_lost = False
        while time.monotonic() < deadline:
            elapsed = time.monotonic() - chaos_started
            if not role_lost and elapsed >= ROLE_LOST_AT_S:
                graph.remove_role(lost_user, lost_page)
                role_lost = True
            elif role_lost and parked_at_relogin < 0 and elapsed >= ROLE_BACK_AT_S:
                parked_at_relogin = sum(
                    1
                    for p in pipeline.posts(post_ids[lost_page])
                    if p.status is PostStatus.NEEDS_REAUTH
                )
                graph.restore_role(lost_user, lost_page)
                fresh = graph.control("POST", f"/users/{lost_user}/tokens")
                renewed = api.post(
                    "/v1/credentials", json={"access_token": fresh["access_token"]}, headers=key
                )
                assert renewed.status_code == 200, renewed.text
            client.fire_until(time.monotonic() + 0.5 + rng.random() * 1.5, CLIENT_PAUSE_S)
            victim = rng.choice(sorted(roles))
            pipeline.kill(victim, signal.SIGKILL)
            kills += 1
            client.fire_until(time.monotonic() + rng.random() * 0.5, CLIENT_PAUSE_S)
            roles[victim](victim)
        faults_fired = sum(
            10_000 - int(f["times"]) for f in graph.control("GET", "/faults")["data"]
        )
        graph.control("DELETE", "/faults")
        logger.info("chaos over after %d kills; waiting for the rest", kills)

        def all_done() -> bool:
            return all(p.status in TERMINAL for p in pipeline.posts(every))

        wait_for(all_done, timeout_s=180, interval_s=0.5, what="every post settled")

        def followed_up() -> bool:
            with pipeline.sessions() as session:
                return not session.scalar(
                    select(func.count()).where(
                        Followup.post_id.in_(every), Followup.status == FollowupStatus.PENDING
                    )
                )

        wait_for(followed_up, timeout_s=120, interval_s=1, what="every follow-up settled")
        comments_broken = check_comments(pipeline, graph, post_ids)

        def cleaned_up() -> bool:
            with pipeline.sessions() as session:
                return not posts_with_leftovers(session, 1)

        # Canceled posts' photos go in the dispatchers' housekeeping.
        wait_for(cleaned_up, timeout_s=120, interval_s=1, what="media left on Graph removed")
        kept, unnamed = left_behind(pipeline, graph, post_ids)
        with_media = [p for p in pipeline.posts(every) if p.media is not None]

        verdict = check_promise(pipeline, graph, post_ids, client.ledgers)
        lost_replies = sum(1 for c in graph.control("GET", "/calls")["data"] if c.get("dropped"))
        answers = client.answers
        edited = {
            p.id
            for p in pipeline.posts(every)
            if p.status is PostStatus.PUBLISHED and p.message != client.ledgers[p.id].original
        }
        with pipeline.sessions() as session:
            adopted = set(
                session.scalars(
                    select(Attempt.post_id).where(
                        Attempt.post_id.in_(every), Attempt.outcome == AttemptOutcome.RECONCILED
                    )
                )
            )
        summary = (
            f"chaos: posts={len(every)} kills={kills} lost_replies={lost_replies} "
            f"(faults fired={faults_fired}, rate={LOST_REPLY_RATE}) "
            f"edits ok={answers['edit ok']} "
            f"refused outcome_unknown={answers['edit outcome_unknown']} "
            f"refused conflict={answers['edit conflict']} "
            f"cancels ok={answers['cancel ok']} "
            f"refused outcome_unknown={answers['cancel outcome_unknown']} "
            f"refused conflict={answers['cancel conflict']} "
            f"unexpected answers={len(client.unexpected)} "
            f"parked by the lost role={parked_at_relogin} "
            f"published={verdict.published} (edited={len(edited)}, "
            f"adopted by reconciliation={len(adopted)}, both={len(edited & adopted)}) "
            f"canceled={verdict.canceled} "
            f"failed={verdict.failed} duplicates={verdict.duplicates} lost={verdict.lost} "
            f"broken={len(verdict.broken)} "
            f"media posts={len(with_media)} (published="
            f"{sum(p.status is PostStatus.PUBLISHED for p in with_media)}) "
            f"photos left behind={len(kept)} unnamed by lost replies={len(unnamed)} "
            f"edits on facebook={answers['edit on facebook']} "
            f"first comments broken={len(comments_broken)} "
            f"in {time.monotonic() - started:.0f} s"
        )
        logger.info("%s", summary)
        print(f"\n{summary}")

        assert not client.unexpected, "\n".join(client.unexpected[:20])
        assert not verdict.broken, "\n".join(verdict.broken[:20])
        assert verdict.duplicates == 0
        assert verdict.lost == 0
        assert verdict.published + verdict.canceled + verdict.failed == len(every)
        # Nothing offpost uploaded and knew of is left behind; what lost replies made
        # is unpublished, never on the Page.
        assert kept == []
        # Each published post's first comment is on it once, as the Page.
        assert not comments_broken, "\n".join(comments_broken[:20])
        assert answers["edit on facebook"] > 0
        assert not any(photo["published"] for photo in unnamed)
        assert sum(p.status is PostStatus.PUBLISHED for p in with_media) > 0
        # The chaos did what it is for: kills, lost replies, and every kind of answer.
        assert kills >= 10
        assert lost_replies > 0
        assert answers["edit ok"] > 0
        assert answers["cancel ok"] > 0
        assert answers["edit conflict"] + answers["cancel conflict"] > 0
        assert answers["edit outcome_unknown"] + answers["cancel outcome_unknown"] > 0
        # The lost role parked that Page's posts, and the fresh token brought them back.
        assert parked_at_relogin > 0
