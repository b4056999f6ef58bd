"""Publishing a post with media: several photos, an uploaded photo, a video, a Reel.

Such a post takes several Graph calls, and each one is recorded before it is
made (``post_steps``), so that whatever is lost — a reply, a worker, a
database write — the next worker settles it *at that step*:

- **photos** (several): each is uploaded unpublished (``/photos
  published=false``), then one feed post attaches them all (``attached_media``).
  A photo whose id was recorded is reused, never uploaded again. A photo upload
  whose reply was lost cannot be found: Graph lists no unpublished photos
  (``/photos?type=uploaded`` shows what the Page shows). It stays unpublished,
  invisible on the Page, and is uploaded again; the step says so (``not_found``).
- **video**: by URL in one ``/videos`` request (it needs a text, by which a lost
  answer is found); an upload, whatever its size, in Graph's resumable protocol —
  start (video id and session recorded), the chunks Graph asks for (a lost chunk
  reply is sent again at the same offset: Graph takes it or names the offset it
  expects), finish.
- **reel**: start (video id recorded), the bytes or hosted URL to the upload
  host (a lost reply is settled by the video's ``bytes_transferred``), finish
  with ``video_state=PUBLISHED``. The Page's budget of 30 Reels a day is
  checked first (:mod:`offpost.media.budgets`).

The **final call** (the feed post, the video by URL, the finish) is the
post's attempt, as for any post: its ``sent_media`` names what it publishes
(``photos:<first photo id>``, ``video``, ``video:<id>``, ``reel:<id>``),
recorded before it is made. An unknown outcome there is reconciled by looking:
the feed's post whose attachments hold that photo, the Page's video with that
text in the attempt's window, or the video's own publishing status.

A post that fails for good (or runs out of attempts) removes what it left on
Graph — the unpublished photos, the unfinished video or Reel — after looking
once more for a final call that may have made the post after all. Nothing half-made
is ever visible on the Page. Uploads are read from the media store and their
SHA-256 checked before a byte goes to Graph.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, update

from offpost.graph.errors import GraphError, GraphTransientError
from offpost.graph.usage import GraphUsage
from offpost.media.budgets import reel_wait_until
from offpost.media.spec import spec_kind
from offpost.media.store import (
    MediaCorruptError,
    MediaStore,
    MediaStoreError,
    read_chunk,
    read_verified,
    verify,
)
from offpost.models.attempt import Attempt, AttemptOutcome, Sent, text_sha256
from offpost.models.media import Media, PostStep, StepKind, StepOutcome
from offpost.models.post import Post, PostStatus
from offpost.models.transitions import begin_attempt, extend_lease, leave_failed, leave_scheduled
from offpost.workers import ratelimit
from offpost.workers.decide import RECONCILE_SKEW, Action, action_for
from offpost.workers.leftovers import Remover, remove_leftovers
from offpost.workers.observe import Outcome

if TYPE_CHECKING:
    from offpost.workers.publish import PostPublisher

logger = logging.getLogger(__name__)

#: A reel or video found in these publishing states was published by the lost finish.
_PUBLISHED_STATES = frozenset({"published", "complete", "completed"})


class LeaseLostError(Exception):
    """The lease could not be extended between two steps: another worker may take over."""


class MediaPost:
    """One claimed post with media, through its steps and its final call."""

    def __init__(self, publisher: PostPublisher) -> None:
        self.p = publisher
        self.ctx = publisher.ctx
        self.spec: Mapping[str, Any] = publisher.post.media or {}
        self.kind = spec_kind(self.spec)
        self.steps: list[PostStep] = []
        if self.ctx.media is None:
            raise ValueError("publishing media needs the media store (PublishContext.media)")
        self.store: MediaStore = self.ctx.media

    @property
    def post(self) -> Any:
        return self.p.post

    @property
    def token(self) -> str:
        return self.p.page_token or ""

    # -- the attempt -------------------------------------------------------------------

    def attempt(self) -> Outcome:
        """One attempt: the Reels budget, the steps not done yet, the final call."""
        ctx, post = self.ctx, self.post
        now = ctx.clock()
        if self.kind == "reel":
            with ctx.sessions() as session:
                wait = reel_wait_until(session, post.target, now)
            if wait is not None:
                logger.info(
                    "the Page %s published 30 Reels in 24 hours: %s waits until %s",
                    post.target,
                    post.id,
                    wait.isoformat(),
                    extra={"action": "reel_budget_wait", "post_id": post.id},
                )
                return self.p._release(wait, Outcome.WAITING)
        with ctx.sessions.begin() as session:
            attempt = begin_attempt(
                session,
                post.id,
                ctx.worker,
                now,
                Sent(self._text_sha(), None, f"media:{self.kind}"),
            )
            attempt_id = attempt.id
        self._load_steps()
        try:
            graph_id = self._publish(attempt_id)
        except LeaseLostError:
            return Outcome.LEASE_LOST
        except MediaCorruptError as exc:
            return self._fail_for_good(attempt_id, "media_corrupt", str(exc))
        except MediaStoreError as exc:
            return self._store_failed(attempt_id, exc)
        except ValueError as exc:
            # Something no retry can change (a file Graph's upload host would not take
            # from here, a store not configured): failed, not left to loop on its lease.
            logger.exception(
                "publishing %s cannot go on", post.id, extra={"action": "media_invalid"}
            )
            return self._fail_for_good(attempt_id, "media_invalid", str(exc))
        except GraphError as exc:
            if action_for(exc) is Action.FAIL:
                if self._final_made(attempt_id):
                    # Refused, but an earlier final call may be live (a feed post that
                    # already attached these photos is refused so): look before cleaning.
                    found = self.reconcile(post.reconcile_since or now)
                    if found is not None:
                        return self.p._record_published(
                            attempt_id, found, AttemptOutcome.RECONCILED, counted=True
                        )
                # Before the post is failed, so that whoever sees it failed sees it clean.
                self.remove_leftovers()
            # A video by URL: Graph fetches the file first (it allows itself 5 minutes),
            # and lists the video only once it is published.
            settle = ctx.url_video_settle_s if self._by_url_video() else None
            return self.p.attempt_failed(attempt_id, now, exc, settle_s=settle)
        return self.p._record_published(
            attempt_id, graph_id, AttemptOutcome.PUBLISHED, counted=True
        )

    def _publish(self, attempt_id: str) -> str:
        """The steps and the final call; the Graph id of what was published."""
        if self.kind == "photos":
            return self._photos(attempt_id)
        if self.kind == "video":
            return self._video(attempt_id)
        if self.kind == "reel":
            return self._reel(attempt_id)
        raise ValueError(f"no media to publish in {self.post.id}")

    # -- photos ------------------------------------------------------------------------

    def _photos(self, attempt_id: str) -> str:
        photos = list(self.spec["photos"])
        text = self._text()
        if len(photos) == 1:
            # One uploaded photo: one published /photos call, reconciled as photo_url is.
            media = self._media(photos[0]["media_id"])
            data = read_verified(self.store, media)
            self._final(attempt_id, "photo")
            result = self.ctx.graph.upload_photo(
                self.post.target,
                self.token,
                data=data,
                content_type=media.content_type,
                caption=text,
            )
            self._usage(result.usage)
            return result.post_id or result.id
        ids = [self._photo_step(i, source) for i, source in enumerate(photos)]
        self._final(attempt_id, f"photos:{ids[0]}")
        result = self.ctx.graph.publish_feed(
            self.post.target, self.token, message=text, attached_media=ids
        )
        self._usage(result.usage)
        return result.id

    def _photo_step(self, item: int, source: Mapping[str, str]) -> str:
        made = self._made(StepKind.PHOTO, item)
        if made is not None:
            return made
        self._settle_lost(StepKind.PHOTO, item, "Graph lists no unpublished photos")
        data = media = None
        if "media_id" in source:
            media = self._media(source["media_id"])
            data = read_verified(self.store, media)
        step_id = self._begin(StepKind.PHOTO, item, {"source": _source_name(source)})
        with self._settled_on_error(step_id), self._heartbeat():
            result = self.ctx.graph.upload_photo(
                self.post.target,
                self.token,
                url=source.get("url"),
                data=data,
                content_type=media.content_type if media else None,
                published=False,
            )
        self._usage(result.usage)
        self._end(step_id, StepOutcome.DONE, graph_id=result.id)
        return result.id

    # -- video -------------------------------------------------------------------------

    def _video(self, attempt_id: str) -> str:
        video = self.spec["video"]
        title, description = video.get("title"), self._text()
        if "url" in video:
            self._final(attempt_id, "video")
            result = self.ctx.graph.publish_video(
                self.post.target,
                self.token,
                file_url=video["url"],
                title=title,
                description=description,
            )
            self._usage(result.usage)
            return result.id
        # An upload always goes the resumable way, whatever its size: Graph names the
        # video before a byte is sent, so a lost finish is settled by its own status.
        media = self._media(video["media_id"])
        verify(self.store, media)
        video_id, session_id = self._video_session(media)
        self._video_chunks(media, session_id)
        self._final(attempt_id, f"video:{video_id}")
        finished = self.ctx.graph.video_upload_finish(
            self.post.target,
            self.token,
            upload_session_id=session_id,
            title=title,
            description=description,
        )
        if not finished:
            raise _unsure("finishing the video upload")
        return video_id

    def _video_session(self, media: Media) -> tuple[str, str]:
        started = self._done_step(StepKind.VIDEO_START)
        if started is not None and started.graph_id and started.detail:
            return started.graph_id, str(started.detail["upload_session_id"])
        self._settle_lost(StepKind.VIDEO_START, 0, "an unfinished upload is never shown")
        step_id = self._begin(StepKind.VIDEO_START, 0, {"file_size": media.size_bytes})
        with self._settled_on_error(step_id):
            session = self.ctx.graph.video_upload_start(
                self.post.target, self.token, file_size=media.size_bytes
            )
        self._usage(session.usage)
        detail = {
            "file_size": media.size_bytes,
            "upload_session_id": session.upload_session_id,
            "start_offset": session.start_offset,
            "end_offset": session.end_offset,
        }
        self._end(step_id, StepOutcome.DONE, graph_id=session.video_id, detail=detail)
        return session.video_id, session.upload_session_id

    def _video_chunks(self, media: Media, session_id: str) -> None:
        start, end = self._next_chunk()
        while start < end:
            self._keep_lease()
            chunk = read_chunk(self.store, media, start, end)
            step_id = self._begin(
                StepKind.VIDEO_TRANSFER, 0, {"start_offset": start, "end_offset": end}
            )
            with self._settled_on_error(step_id), self._heartbeat():
                offsets = self.ctx.graph.video_upload_transfer(
                    self.post.target,
                    self.token,
                    upload_session_id=session_id,
                    start_offset=start,
                    chunk=chunk,
                )
            self._usage(offsets.usage)
            detail = {
                "start_offset": start,
                "end_offset": end,
                "accepted": offsets.accepted,
                "next_start": offsets.start_offset,
                "next_end": offsets.end_offset,
            }
            self._end(step_id, StepOutcome.DONE, detail=detail)
            start, end = offsets.start_offset, offsets.end_offset

    def _next_chunk(self) -> tuple[int, int]:
        """Where the upload goes on: after the last answered chunk, or the same chunk again
        when its reply was lost (Graph takes it again, or names the offsets it wants)."""
        started = self._done_step(StepKind.VIDEO_START)
        assert started is not None
        # Only this upload session's chunks: an earlier session (removed when its post
        # failed, then retried) has chunks of its own.
        transfers = [
            s
            for s in self.steps
            if s.kind is StepKind.VIDEO_TRANSFER
            and (s.started_at, s.id) > (started.started_at, started.id)
        ]
        source = transfers[-1] if transfers else started
        assert source is not None
        assert source.detail is not None
        detail = source.detail
        if transfers and source.outcome is StepOutcome.DONE:
            return int(detail["next_start"]), int(detail["next_end"])
        return int(detail["start_offset"]), int(detail["end_offset"])

    # -- reel --------------------------------------------------------------------------

    def _reel(self, attempt_id: str) -> str:
        reel = self.spec["reel"]
        media = self._media(reel["media_id"]) if "media_id" in reel else None
        if media is not None:
            verify(self.store, media)
        video_id, upload_url = self._reel_start()
        self._reel_upload(video_id, upload_url, reel, media)
        self._final(attempt_id, f"reel:{video_id}")
        finished = self.ctx.graph.reel_finish(
            self.post.target, self.token, video_id=video_id, description=self._text()
        )
        if not finished:
            raise _unsure("finishing the Reel")
        return video_id

    def _reel_start(self) -> tuple[str, str]:
        started = self._done_step(StepKind.REEL_START)
        if started is not None and started.graph_id and started.detail:
            return started.graph_id, str(started.detail["upload_url"])
        self._settle_lost(StepKind.REEL_START, 0, "an unfinished Reel is never shown")
        step_id = self._begin(StepKind.REEL_START, 0, None)
        with self._settled_on_error(step_id):
            reel = self.ctx.graph.reel_start(self.post.target, self.token)
        self._usage(reel.usage)
        self._end(
            step_id,
            StepOutcome.DONE,
            graph_id=reel.video_id,
            detail={"upload_url": reel.upload_url},
        )
        return reel.video_id, reel.upload_url

    def _reel_upload(
        self, video_id: str, upload_url: str, reel: Mapping[str, str], media: Media | None
    ) -> None:
        done = self._done_step(StepKind.REEL_UPLOAD)
        if done is not None and done.graph_id == video_id:
            return
        this_reel = [
            s for s in self.steps if s.kind is StepKind.REEL_UPLOAD and s.graph_id == video_id
        ]
        offset = 0
        if this_reel:
            # An earlier try, whatever came of it: ask the upload host what arrived.
            status = self.ctx.graph.video_status(video_id, self.token)
            self._usage(status.usage)
            received = status.bytes_transferred or 0
            size = media.size_bytes if media is not None else None
            complete = status.uploading_status in ("complete", "completed") or (
                size is not None and received >= size
            )
            for step in this_reel:
                if step.outcome in _OPEN:
                    self._end(step.id, StepOutcome.FOUND if complete else StepOutcome.NOT_FOUND)
            if complete:
                step_id = self._begin(
                    StepKind.REEL_UPLOAD, 0, {"found": received}, graph_id=video_id
                )
                self._end(step_id, StepOutcome.FOUND)
                return
            if media is None and status.uploading_status == "in_progress":
                # Graph is still fetching the hosted file: sending the URL again would
                # start a second fetch. Come back once it has finished, one way or another.
                raise _unsure("Graph fetching the Reel's file")
            offset = received if media is not None else 0
        data = None
        if media is not None:
            data = read_chunk(self.store, media, offset, media.size_bytes)
        step_id = self._begin(StepKind.REEL_UPLOAD, 0, {"offset": offset}, graph_id=video_id)
        with self._settled_on_error(step_id), self._heartbeat():
            self.ctx.graph.reel_upload(
                upload_url,
                self.token,
                file_url=reel.get("url"),
                data=data,
                offset=offset,
                file_size=media.size_bytes if media is not None else None,
            )
        self._end(step_id, StepOutcome.DONE)

    # -- reconciliation ----------------------------------------------------------------

    def reconcile(self, since: datetime) -> str | None:
        """The Graph id the final call of an attempt since ``since`` published, if any."""
        ctx, post = self.ctx, self.post
        with ctx.sessions() as session:
            attempts = session.execute(
                select(
                    Attempt.started_at, Attempt.finished_at, Attempt.sent_sha256, Attempt.sent_media
                ).where(
                    Attempt.post_id == post.id,
                    Attempt.started_at >= since,
                    (Attempt.outcome.is_(None)) | (Attempt.outcome == AttemptOutcome.RETRY),
                )
            ).all()
        now = ctx.clock()
        settle = timedelta(seconds=ctx.timeout_settle_s)
        for attempt in attempts:
            marker = attempt.sent_media or ""
            if marker.startswith("media:"):
                continue  # its final call was never made
            # A video by URL appears once Graph has fetched and published it.
            wait = timedelta(seconds=ctx.url_video_settle_s) if marker == "video" else settle
            window = (
                attempt.started_at - RECONCILE_SKEW,
                (attempt.finished_at or now) + wait + RECONCILE_SKEW,
            )
            found = self._find(marker, attempt.sent_sha256, window)
            if found is not None:
                return found
        return None

    def _find(
        self, marker: str, text_sha: str | None, window: tuple[datetime, datetime]
    ) -> str | None:
        kind, _, graph_id = marker.partition(":")
        graph, target = self.ctx.graph, self.post.target
        if kind in ("video", "reel") and graph_id:
            status = graph.video_status(graph_id, self.token)
            self._usage(status.usage)
            states = {status.publishing_status, status.publish_status}
            return graph_id if states & _PUBLISHED_STATES else None
        if kind == "video":
            videos = graph.page_videos(target, self.token, since=window[0] - timedelta(minutes=1))
            self._usage(videos.usage)
            for video in videos.videos:
                if (
                    video.created_time is not None
                    and window[0] <= video.created_time <= window[1]
                    and text_sha is not None
                    and text_sha256(video.description) == text_sha
                    and not self._taken(video.id)
                ):
                    return video.id
            return None
        feed = graph.page_posts(target, self.token, since=window[0] - timedelta(minutes=1))
        self._usage(feed.usage)
        for item in sorted(feed.posts, key=lambda p: p.created_time):
            if item.application_id != self.ctx.app_id:
                continue
            if not window[0] <= item.created_time <= window[1]:
                continue
            if kind == "photos" and graph_id not in item.media_ids:
                continue
            if kind == "photo" and text_sha256(item.message) != text_sha:
                continue
            if not self._taken(item.id):
                return item.id
        return None

    def _taken(self, graph_id: str) -> bool:
        with self.ctx.sessions() as session:
            return (
                session.scalar(
                    select(Post.id).where(Post.graph_post_id == graph_id, Post.id != self.post.id)
                )
                is not None
            )

    # -- what a failed post leaves behind ----------------------------------------------

    def remove_leftovers(self) -> int:
        """Delete the unpublished photos and unfinished videos this post made; how many."""
        remover = Remover(self.ctx.sessions, self.ctx.graph, self.ctx.worker, self.ctx.clock)
        held = and_(Post.status == PostStatus.PUBLISHING, Post.lease_owner == self.ctx.worker)
        return remove_leftovers(remover, self.post.id, self.token, while_=held)

    def _store_failed(self, attempt_id: str, exc: MediaStoreError) -> Outcome:
        """The media store failed (unreachable, refusing): the attempt is spent, and the
        post tried again after the usual backoff. Nothing was sent for the failed step."""
        ctx, post = self.ctx, self.post
        now = ctx.clock()
        message = f"the media store failed: {exc}"
        logger.warning(
            "post %s: %s",
            post.id,
            message,
            extra={"action": "media_store_failed", "post_id": post.id},
        )
        with ctx.sessions.begin() as session:
            session.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id)
                .values(
                    outcome=AttemptOutcome.RETRY,
                    finished_at=now,
                    error_code="media_store_unavailable",
                    error_message=message,
                )
            )
        attempts = post.attempts + 1
        return self.p._finish(
            Outcome.RETRY,
            leave_scheduled,
            due_at=now + timedelta(seconds=ctx.retry.delay_s(attempts, ctx.rng)),
            attempts=attempts,
            last_error={
                "code": "media_store_unavailable",
                "subcode": None,
                "message": message,
                "fbtrace_id": None,
            },
        )

    def _fail_for_good(self, attempt_id: str, code: str, message: str) -> Outcome:
        now = self.ctx.clock()
        with self.ctx.sessions.begin() as session:
            session.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id)
                .values(
                    outcome=AttemptOutcome.FAILED,
                    finished_at=now,
                    error_code=code,
                    error_message=message,
                )
            )
        self.remove_leftovers()
        return self.p._finish(
            Outcome.FAILED,
            leave_failed,
            attempts=self.post.attempts + 1,
            last_error={"code": code, "subcode": None, "message": message, "fbtrace_id": None},
            reconcile_since=None,
        )

    # -- steps -------------------------------------------------------------------------

    def _load_steps(self) -> None:
        with self.ctx.sessions() as session:
            self.steps = list(
                session.scalars(
                    select(PostStep)
                    .where(PostStep.post_id == self.post.id)
                    .order_by(PostStep.started_at, PostStep.id)
                )
            )
            session.expunge_all()

    def _removed(self) -> set[str]:
        # Any removal, even one in flight or refused: the object may be gone.
        return {s.graph_id for s in self.steps if s.kind is StepKind.REMOVE and s.graph_id}

    def _made(self, kind: StepKind, item: int) -> str | None:
        """The Graph id an earlier step of this kind and item made (and nobody removed)."""
        removed = self._removed()
        for step in reversed(self.steps):
            if (
                step.kind is kind
                and step.item == item
                and step.outcome in (StepOutcome.DONE, StepOutcome.FOUND)
                and step.graph_id
                and step.graph_id not in removed
            ):
                return step.graph_id
        return None

    def _done_step(self, kind: StepKind) -> PostStep | None:
        removed = self._removed()
        for step in reversed(self.steps):
            if (
                step.kind is kind
                and step.outcome in (StepOutcome.DONE, StepOutcome.FOUND)
                and (step.graph_id is None or step.graph_id not in removed)
            ):
                return step
        return None

    def _settle_lost(self, kind: StepKind, item: int, why: str) -> None:
        """Steps of ``kind``/``item`` left in flight or unknown: nothing Graph lets anyone
        find; the next call makes it again (what the lost one made stays unseen)."""
        for step in self.steps:
            if step.kind is kind and step.item == item and step.outcome in _OPEN:
                self._end(step.id, StepOutcome.NOT_FOUND, error=why)
                logger.info(
                    "post %s: the %s step's outcome was lost; %s, so it is made again",
                    self.post.id,
                    kind.value,
                    why,
                    extra={"action": "step_settled", "post_id": self.post.id},
                )

    def _begin(
        self,
        kind: StepKind,
        item: int,
        detail: dict[str, Any] | None,
        *,
        graph_id: str | None = None,
    ) -> str:
        """Record a step before its call (committed), after making sure of the lease."""
        self._keep_lease()
        now = self.ctx.clock()
        step = PostStep(
            post_id=self.post.id,
            kind=kind,
            item=item,
            started_at=now,
            detail=detail,
            graph_id=graph_id,
            worker=self.ctx.worker,
        )
        with self.ctx.sessions.begin() as session:
            session.add(step)
            session.flush()
            step_id = step.id
        return step_id

    def _end(
        self,
        step_id: str,
        outcome: StepOutcome,
        *,
        graph_id: str | None = None,
        detail: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"outcome": outcome, "finished_at": self.ctx.clock()}
        if graph_id is not None:
            values["graph_id"] = graph_id
        if detail is not None:
            values["detail"] = detail
        if error is not None:
            values["error"] = error
        with self.ctx.sessions.begin() as session:
            session.execute(update(PostStep).where(PostStep.id == step_id).values(**values))
        self._load_steps()

    @contextmanager
    def _heartbeat(self) -> Iterator[None]:
        """Around a call whose send time has no bound (an upload): the lease is extended
        every third of its length while the call runs, so that no other worker takes the
        post meanwhile. A worker that dies stops extending it, and the post is reaped."""
        stop = threading.Event()
        every_s = max(1.0, self.ctx.lease.total_seconds() / 3)

        def beat() -> None:
            while not stop.wait(every_s):
                try:
                    with self.ctx.sessions.begin() as session:
                        extended = extend_lease(
                            session, self.post.id, self.ctx.worker, self.ctx.clock(), self.ctx.lease
                        )
                except Exception:
                    logger.warning("could not extend the lease on %s", self.post.id, exc_info=True)
                    continue
                if extended is None:
                    return
                self.p.post = dataclasses.replace(self.post, lease_deadline=extended)

        thread = threading.Thread(target=beat, name=f"lease-{self.post.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _final_made(self, attempt_id: str) -> bool:
        """Whether this attempt got as far as its final call (its marker was set)."""
        with self.ctx.sessions() as session:
            marker = session.scalar(select(Attempt.sent_media).where(Attempt.id == attempt_id))
        return marker is not None and not marker.startswith("media:")

    def _by_url_video(self) -> bool:
        return self.kind == "video" and "url" in self.spec["video"]

    @contextmanager
    def _settled_on_error(self, step_id: str) -> Iterator[None]:
        """Around a step's call: a Graph error ends the step (``unknown`` when its outcome
        is, else ``failed``) and goes on up to the attempt."""
        try:
            yield
        except GraphError as exc:
            self._end(step_id, _lost_or_failed(exc), error=exc.message)
            raise

    def _final(self, attempt_id: str, marker: str) -> None:
        """Record what the final call publishes on the attempt, before making it."""
        self._keep_lease()
        with self.ctx.sessions.begin() as session:
            session.execute(
                update(Attempt).where(Attempt.id == attempt_id).values(sent_media=marker)
            )

    def _keep_lease(self) -> None:
        """Extend the lease when a call started now might outlive it; raises
        :class:`LeaseLostError` when another worker may have the post by now."""
        deadline = self.post.lease_deadline
        # Two calls' worth of margin: the next call, and recording what it made.
        if deadline is None or time.monotonic() + 2 * self.ctx.call_bound_s <= deadline:
            return
        with self.ctx.sessions.begin() as session:
            deadline = extend_lease(
                session, self.post.id, self.ctx.worker, self.ctx.clock(), self.ctx.lease
            )
        if deadline is None:
            logger.warning(
                "lost the lease on %s between two steps; the next worker goes on from them",
                self.post.id,
                extra={"action": "lease_lost", "post_id": self.post.id},
            )
            raise LeaseLostError(self.post.id)
        self.p.post = dataclasses.replace(self.post, lease_deadline=deadline)

    # -- helpers -----------------------------------------------------------------------

    def _media(self, media_id: str) -> Media:
        with self.ctx.sessions() as session:
            media = session.get(Media, media_id)
            if media is None:
                raise MediaCorruptError(f"the upload {media_id} is gone")
            session.expunge(media)
            return media

    def _text(self) -> str | None:
        """The post's text: a video's or Reel's description, else the message."""
        if self.kind in ("video", "reel"):
            described = self.spec[str(self.kind)].get("description")
            if described:
                return str(described)
        return self.post.message  # type: ignore[no-any-return]

    def _text_sha(self) -> str | None:
        return text_sha256(self._text())

    def _usage(self, usage: GraphUsage) -> None:
        ctx, post = self.ctx, self.post
        ctx.observer.graph_usage(usage, post.target)
        for key, wait_s in ratelimit.usage_blocks(usage, app_id=ctx.app_id, page_id=post.target):
            ctx.blocks.block(key, wait_s)


#: A step whose outcome nobody knows: in flight when its worker stopped, or a lost reply.
_OPEN = (None, StepOutcome.UNKNOWN)


def _unsure(what: str) -> GraphTransientError:
    """Graph answered, but not that it did it: the outcome is unknown, looked for next."""
    return GraphTransientError(f"Graph did not confirm {what}", outcome_unknown=True)


def _lost_or_failed(exc: GraphError) -> StepOutcome:
    return StepOutcome.UNKNOWN if action_for(exc) is Action.RETRY_RECONCILE else StepOutcome.FAILED


def _source_name(source: Mapping[str, str]) -> str:
    return "url" if "url" in source else str(source.get("media_id"))
