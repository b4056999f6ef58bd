"""The whole publishing pipeline as a user runs it: real processes on real services.

``offpost worker`` and ``offpost dispatcher`` run as subprocesses (a real Celery
worker on Redis, never eager mode) against a fresh PostgreSQL database; the
Graph sandbox serves over HTTP from a thread of the test process. Tests create
credentials through the HTTP API (in-process), and posts through it or directly.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from offpost.api.app import create_app
from offpost.graph.sandbox import RunningSandbox
from offpost.models import Attempt, Client, Post, PostStatus, make_engine, make_sessionmaker
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key
from offpost.settings import Settings
from tests.conftest import fresh_postgres_database
from tests.integration.api_support import add_client, bearer
from tests.integration.sandbox_support import SandboxClient

T = TypeVar("T")
OFFPOST = str(Path(sys.executable).with_name("offpost"))

#: Short timings so that retries, leases and re-sends happen within a test.
FAST_TIMINGS = {
    "OFFPOST_GRAPH_TIMEOUT_S": "3",
    "OFFPOST_LEASE_S": "10",
    "OFFPOST_RETRY_BASE_S": "0.5",
    "OFFPOST_RETRY_CAP_S": "2",
    "OFFPOST_REQUEUE_AFTER_S": "4",
    "OFFPOST_DISPATCHER_MAX_SLEEP_S": "0.5",
    # The sandbox publishes a video by URL as it answers: no need to wait minutes for it.
    "OFFPOST_URL_VIDEO_SETTLE_S": "3",
}


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Pipeline:
    """Processes, database and sandbox of one pipeline test module."""

    env: dict[str, str]
    settings: Settings
    sessions: sessionmaker[Session]
    sandbox: RunningSandbox
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self, name: str, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``offpost <args>`` as process ``name`` (its own process group), with the
        pipeline's environment plus ``env``."""
        # The child keeps its own copy of the file descriptor.
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [OFFPOST, *args],
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_worker(
        self, name: str = "worker", *extra: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.start(
            name,
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"{name}@%h",
            *extra,
            env=env,
        )

    def start_webhooks(self, name: str = "webhooks") -> subprocess.Popen[bytes]:
        """``offpost webhooks``: the deliveries' own worker, on their own queue."""
        return self.start(
            name,
            "webhooks",
            "--concurrency",
            "4",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"{name}@%h",
        )

    def start_dispatcher(self, name: str = "dispatcher") -> subprocess.Popen[bytes]:
        return self.start(name, "dispatcher")

    def start_api(self, port: int, name: str = "api") -> subprocess.Popen[bytes]:
        """``offpost api`` on 127.0.0.1:``port`` (uvicorn in a process of its own)."""
        return self.start(name, "api", "--host", "127.0.0.1", "--port", str(port))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self, name: str, timeout_s: float = 30) -> int:
        """SIGTERM and wait: the graceful path."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout=timeout_s)

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name, timeout_s=20)
            except subprocess.TimeoutExpired:
                self.kill(name)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    # -- objects ---------------------------------------------------------------------

    @contextmanager
    def api(self) -> Iterator[TestClient]:
        with TestClient(create_app(self.settings), raise_server_exceptions=False) as client:
            yield client

    def credential(self, api: TestClient, key: dict[str, str], user: dict[str, Any]) -> str:
        response = api.post(
            "/v1/credentials", json={"access_token": user["access_token"]}, headers=key
        )
        assert response.status_code in (200, 201), response.text
        return str(response.json()["id"])

    def add_posts(
        self,
        client_id: str,
        credential_id: str,
        target: str,
        messages: list[str],
        *,
        due_in_s: float = 0.0,
        at: datetime | None = None,
        **extra: Any,
    ) -> list[str]:
        """Posts due ``due_in_s`` from now, or ``at``."""
        publish_at = at or datetime.now(UTC) + timedelta(seconds=due_in_s)
        posts = [
            Post(
                client_id=client_id,
                credential_id=credential_id,
                target=target,
                message=m,
                publish_at=publish_at,
                due_at=publish_at,
                **extra,
            )
            for m in messages
        ]
        with self.sessions.begin() as session:
            session.add_all(posts)
        return [p.id for p in posts]

    def posts(self, ids: list[str] | None = None) -> list[Post]:
        with self.sessions() as session:
            query = select(Post)
            if ids is not None:
                query = query.where(Post.id.in_(ids))
            return list(session.scalars(query))

    def attempts(self, post_id: str) -> list[Attempt]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Attempt).where(Attempt.post_id == post_id).order_by(Attempt.number)
                )
            )

    def wait_status(
        self, ids: list[str], statuses: set[PostStatus], timeout_s: float = 40
    ) -> list[Post]:
        def done() -> list[Post] | None:
            posts = self.posts(ids)
            return posts if all(p.status in statuses for p in posts) else None

        return wait_for(
            done, timeout_s=timeout_s, what=f"posts {ids[:3]}... to reach {sorted(statuses)}"
        )

    def client_id(self, name: str) -> str:
        with self.sessions() as session:
            return str(session.scalars(select(Client.id).where(Client.name == name)).one())


@contextmanager
def running_pipeline(
    database_url: str, redis_url: str, sandbox: RunningSandbox, logs: Path, **env_extra: str
) -> Iterator[Pipeline]:
    """A migrated database and the environment of the processes; stops them all at exit."""
    upgrade_to_head(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFPOST_")}
    env.update(FAST_TIMINGS)
    env.update(
        {
            "OFFPOST_DATABASE_URL": database_url,
            "OFFPOST_BROKER_URL": redis_url,
            "OFFPOST_GRAPH_URL": sandbox.url,
            "OFFPOST_APP_ID": sandbox.app_id,
            "OFFPOST_APP_SECRET": sandbox.app_secret,
            "OFFPOST_ENCRYPTION_KEYS": new_encryption_key(),
            "PYTHONUNBUFFERED": "1",
            # A queue of its own: other runs sharing this Redis cannot take its messages.
            "OFFPOST_QUEUE": f"test-{secrets.token_hex(6)}",
            # Uploads beside the logs, never in the working directory.
            "OFFPOST_MEDIA_DIR": str(logs / "media"),
        }
    )
    env.update(env_extra)
    settings = Settings(
        **{
            k.removeprefix("OFFPOST_").lower(): v
            for k, v in env.items()
            if k.startswith("OFFPOST_")
        }
    )
    engine = make_engine(database_url, encryption_keys=settings.encryption_key_list())
    logs.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(
        env=env, settings=settings, sessions=make_sessionmaker(engine), sandbox=sandbox, logs=logs
    )
    try:
        yield pipeline
    finally:
        pipeline.stop_all()
        engine.dispose()


@contextmanager
def serving_pipeline(
    server_url: str,
    redis_url: str,
    sandbox: RunningSandbox,
    logs: Path,
    *,
    webhooks: bool = False,
    **env_extra: str,
) -> Iterator[Pipeline]:
    """A fresh database with one worker and one dispatcher serving it (and a webhook
    worker with ``webhooks``): what a module of pipeline tests shares."""
    with (
        fresh_postgres_database(server_url) as db,
        running_pipeline(db, redis_url, sandbox, logs, **env_extra) as pipeline,
    ):
        pipeline.start_worker()
        pipeline.start_dispatcher()
        if webhooks:
            pipeline.start_webhooks()
        yield pipeline


@contextmanager
def checked_pipeline(
    server_url: str,
    redis_url: str,
    sandbox: RunningSandbox,
    logs: Path,
    *,
    webhooks: bool = False,
    **env_extra: str,
) -> Iterator[Pipeline]:
    """:func:`serving_pipeline` for a module of tests, and at its end the check that no
    process's log holds a token or the app secret."""
    with serving_pipeline(
        server_url, redis_url, sandbox, logs, webhooks=webhooks, **env_extra
    ) as running:
        yield running
        text = running.log_text()
        assert sandbox.app_secret not in text
        assert "EAA" not in text.replace("[redacted]", "")


def handed_over_page(pipeline: Pipeline, graph: SandboxClient, name: str) -> dict[str, str]:
    """A fresh sandbox user with one Page, handed to offpost by a new client ``name``:
    ids of the client, credential, Page and user, and the client's auth header value."""
    client_id, key = new_client(pipeline, name[:90])
    user = graph.mint_user(pages=1)
    with pipeline.api() as api:
        credential_id = pipeline.credential(api, key, user)
    return {
        "client_id": client_id,
        "key": key["Authorization"],
        "credential_id": credential_id,
        "page_id": user["pages"][0]["id"],
        "user_id": user["user_id"],
    }


def new_client(pipeline: Pipeline, name: str) -> tuple[str, dict[str, str]]:
    """An API client: (its id, its auth header)."""
    key = add_client(pipeline.settings, name)
    return pipeline.client_id(name), bearer(key)


# -- the chaos tests' posts and their proof --------------------------------------------


def posts_across_pages(
    pipeline: Pipeline,
    graph: SandboxClient,
    client_id: str,
    key: dict[str, str],
    *,
    pages: int,
    per_page: int,
    label: str,
    window_s: float,
    rng: random.Random,
    users: dict[str, dict[str, Any]] | None = None,
    media: Callable[[random.Random], dict[str, Any] | None] | None = None,
    comment_share: float = 0.0,
) -> dict[str, list[str]]:
    """``pages`` fresh users of one Page each, ``per_page`` posts on each due at random
    within ``window_s`` from 3 s on; the post ids by Page id (and, into ``users``, each
    Page's sandbox user). ``media`` gives a post its photos or video (or none)."""
    post_ids: dict[str, list[str]] = {}
    with pipeline.api() as api:
        for n in range(pages):
            user = graph.mint_user(pages=1)
            credential_id = pipeline.credential(api, key, user)
            page_id = user["pages"][0]["id"]
            if users is not None:
                users[page_id] = user
            post_ids[page_id] = []
            for i in range(per_page):
                spec = media(rng) if media is not None else None
                comment = f"{label} {n}-{i}: more below" if rng.random() < comment_share else None
                post_ids[page_id] += pipeline.add_posts(
                    client_id,
                    credential_id,
                    page_id,
                    [f"{label} {n}-{i}"],
                    due_in_s=3 + rng.random() * window_s,
                    media=spec,
                    media_kind=next(iter(spec)) if spec else None,
                    first_comment=comment,
                    first_comment_status="pending" if comment else None,
                )
    return post_ids


#: A Graph batch request: ``POST /`` or ``POST /v26.0/``.
BATCH_REQUEST_PATH = r"^/(v\d+\.\d+/?)?$"


def lose_publish_replies(
    graph: SandboxClient,
    rate: float,
    times: int,
    paths: tuple[str, ...] = (r"/feed$",),
    *,
    batches: bool = True,
) -> None:
    """Graph makes the post (or the photo, or the video), then the reply is lost (the
    connection dropped), at ``rate``, on each of ``paths``: a call of its own loses its
    reply, a call in a batch request its answer (``null``). With ``batches``, whole
    batch requests lose their reply at ``rate`` too, after Graph ran every call."""
    for path in (*paths, *((BATCH_REQUEST_PATH,) if batches else ())):
        graph.fault(
            path=path,
            method="POST",
            times=times,
            probability=rate,
            after_effect=True,
            drop_response=True,
        )


@dataclass
class PostLedger:
    """What a client was told about one post: the promise its post must keep."""

    #: The message the post was created with.
    original: str
    #: The content the client last set successfully: the last edit answered 200, else
    #: ``original``.
    content: str
    #: Every text the client ever asked for (original, edits answered 200 or 409): none
    #: of them may be on the Page except ``content``, once.
    texts: set[str]
    #: Whether a cancel answered 200 (the post was then ``canceled``).
    canceled: bool = False

    @classmethod
    def of(cls, message: str) -> PostLedger:
        return cls(message, message, {message})


@dataclass
class Verdict:
    """How the posts ended, against their ledgers; ``broken`` lists each promise broken."""

    published: int = 0
    canceled: int = 0
    failed: int = 0
    #: Page posts beyond the first of one offpost post (any of its texts).
    duplicates: int = 0
    #: Posts neither canceled nor failed that are not on their Page with their content.
    lost: int = 0
    broken: list[str] = field(default_factory=list)


def check_promise(
    pipeline: Pipeline,
    graph: SandboxClient,
    post_ids: dict[str, list[str]],
    ledgers: dict[str, PostLedger],
) -> Verdict:
    """Each post exactly one of: ``published`` once, under its Graph id, with the content
    its client last set; ``canceled`` (a cancel answered 200) and absent from the Page;
    ``failed`` with a clear error (code and message, not ``outcome_unknown``) and absent.

    Every Page post must be one of these posts' texts. Nothing is asserted: the
    verdict counts and lists, so that a caller can report the numbers first.
    """
    posts = {p.id: p for p in pipeline.posts([i for ids in post_ids.values() for i in ids])}
    verdict = Verdict()
    broken = verdict.broken
    for page_id, ids in post_ids.items():
        owner = {text: i for i in ids for text in ledgers[i].texts}
        on_page: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        # A video's Graph id is the video's; the Page post that shows it has its own.
        shown_by = {
            v["id"]: v["post_id"]
            for v in graph.control("GET", f"/pages/{page_id}/videos")["data"]
            if v["post_id"]
        }
        for page_post in graph.posts(page_id):
            text = page_post.get("message")
            if text in owner:
                on_page[owner[text]].append(page_post)
            else:
                broken.append(f"{page_id}: a Page post no post of it asked for: {page_post}")
        for i in ids:
            post, ledger, found = posts[i], ledgers[i], on_page[i]
            if post.message != ledger.content:  # a 409 changed it, or a 200 did not
                broken.append(f"{i} holds {post.message!r}, the client set {ledger.content!r}")
            verdict.duplicates += max(0, len(found) - 1)
            if len(found) > 1:
                shown = [(f["id"], f["message"]) for f in found]
                broken.append(f"{i} is on {page_id} {len(found)} times: {shown}")
            if post.status is PostStatus.PUBLISHED:
                verdict.published += 1
                if ledger.canceled:
                    broken.append(f"{i} is published, but its cancel answered 200")
                if not found:
                    verdict.lost += 1
                    broken.append(f"{i} is published as {post.graph_post_id}, not on {page_id}")
                elif not any(
                    f["id"] in (post.graph_post_id, shown_by.get(post.graph_post_id or ""))
                    and f["message"] == ledger.content
                    for f in found
                ):
                    shown = [(f["id"], f["message"]) for f in found]
                    broken.append(
                        f"{i} is published as {post.graph_post_id} with {ledger.content!r}; "
                        f"the Page holds {shown}"
                    )
                continue
            if found:
                shown = [(f["id"], f["message"]) for f in found]
                broken.append(f"{i} is {post.status.value}, yet on {page_id}: {shown}")
            if post.status is PostStatus.CANCELED:
                verdict.canceled += 1
                if not ledger.canceled:
                    broken.append(f"{i} is canceled, but no cancel of it answered 200")
            elif post.status is PostStatus.FAILED:
                verdict.failed += 1
                if ledger.canceled:
                    broken.append(f"{i} failed, but its cancel answered 200")
                error = post.last_error or {}
                if not error.get("code") or not error.get("message"):
                    broken.append(f"{i} failed without a clear error: {post.last_error}")
                elif error["code"] == "outcome_unknown":
                    broken.append(f"{i} failed with its outcome unknown: {post.last_error}")
            else:
                broken.append(f"{i} ended {post.status.value}")
            if not ledger.canceled and post.status is not PostStatus.FAILED and not found:
                verdict.lost += 1
    return verdict


def assert_each_published_once(
    pipeline: Pipeline, graph: SandboxClient, post_ids: dict[str, list[str]]
) -> None:
    """Each post ``published``, on its Page exactly once, under the Graph id and with the
    message offpost holds (posts never edited nor canceled: :func:`check_promise`)."""
    posts = pipeline.posts([i for ids in post_ids.values() for i in ids])
    ledgers = {p.id: PostLedger.of(p.message or "") for p in posts}
    verdict = check_promise(pipeline, graph, post_ids, ledgers)
    assert not verdict.broken, "\n".join(verdict.broken[:20])
    assert verdict.published == len(posts), verdict


class ChangingClient:
    """A client editing and canceling its posts through the HTTP API while chaos runs.

    One request at a time (so "the last edit answered 200" is well defined), each
    answer entered into the posts' :class:`PostLedger`. A target is drawn at
    random among the posts falling due within a few seconds (an edit or cancel
    then usually lands), those falling due right now (racing the dispatchers and
    the workers) and, at ``unknown_share``, those owing reconciliation (their last
    Graph call may have published them). Edits make unique texts
    (``"<original> (edit <n>)"``), so a wrong or second publication shows.
    ``answers`` counts ``"edit ok"``, ``"edit outcome_unknown"``, ``"edit conflict"``
    and the same of ``cancel``; any other answer goes to ``unexpected``.
    """

    #: Seconds from now between which a post "falls due soon", and "falls due now".
    SOON = (0.5, 6.0)
    NOW = (-4.0, 0.5)

    def __init__(
        self,
        pipeline: Pipeline,
        api: TestClient,
        key: dict[str, str],
        post_ids: list[str],
        rng: random.Random,
        *,
        cancel_share: float,
        unknown_share: float,
        soon_share: float,
    ) -> None:
        posts = pipeline.posts(post_ids)
        self.pipeline = pipeline
        self.api = api
        self.key = key
        self.rng = rng
        self.cancel_share = cancel_share
        self.unknown_share = unknown_share
        self.soon_share = soon_share
        self.ledgers = {p.id: PostLedger.of(p.message or "") for p in posts}
        self.due = sorted((p.due_at, p.id) for p in posts)
        self.answers: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.edits = 0

    def fire_until(self, deadline: float, pause_s: float) -> None:
        """Edit or cancel a random post, pause up to ``2 * pause_s``, until ``deadline``
        (:func:`time.monotonic`)."""
        while time.monotonic() < deadline:
            self.fire()
            left = deadline - time.monotonic()
            if left > 0:
                time.sleep(min(left, self.rng.random() * 2 * pause_s))

    def fire(self) -> None:
        post_id = self._pick()
        if not self.ledgers[post_id].canceled and self.rng.random() < self.cancel_share:
            self._cancel(post_id)
        else:
            self._edit(post_id)

    def _pick(self) -> str:
        draw = self.rng.random()
        if draw < self.unknown_share and (owing := self._owing_reconciliation()):
            return self.rng.choice(owing)
        lo, hi = self.SOON if draw < self.unknown_share + self.soon_share else self.NOW
        now = datetime.now(UTC)
        start, end = now + timedelta(seconds=lo), now + timedelta(seconds=hi)
        window = [i for due, i in self.due if start <= due <= end]
        return self.rng.choice(window or [i for _, i in self.due])

    def _owing_reconciliation(self) -> list[str]:
        with self.pipeline.sessions() as session:
            return list(
                session.scalars(
                    select(Post.id).where(
                        Post.id.in_(list(self.ledgers)),
                        Post.reconcile_since.is_not(None),
                        Post.status.in_([PostStatus.SCHEDULED, PostStatus.QUEUED]),
                    )
                )
            )

    def _edit(self, post_id: str) -> None:
        ledger = self.ledgers[post_id]
        self.edits += 1
        text = f"{ledger.original} (edit {self.edits})"
        ledger.texts.add(text)
        response = self.api.patch(f"/v1/posts/{post_id}", json={"message": text}, headers=self.key)
        if response.status_code == 202:
            # Published: the new text goes to Facebook as an edit follow-up.
            body = response.json()
            if ledger.canceled or body.get("kind") != "edit" or body.get("message") != text:
                self._unexpected("edit", post_id, response)
            ledger.content = text
            self.answers["edit on facebook"] += 1
        elif response.status_code == 422 and "does not let an app change" in response.text:
            # A published video's text stays: Graph does not let an app change it.
            self.answers["edit refused (video)"] += 1
        elif response.status_code == 200:
            body = response.json()
            if (
                ledger.canceled
                or body.get("message") != text
                or body.get("status")
                not in (
                    "scheduled",
                    "failed",
                    "needs_reauth",
                )
            ):
                self._unexpected("edit", post_id, response)
            ledger.content = text
            self.answers["edit ok"] += 1
        else:
            self._refused("edit", post_id, response)

    def _cancel(self, post_id: str) -> None:
        response = self.api.delete(f"/v1/posts/{post_id}", headers=self.key)
        if response.status_code == 200:
            if response.json().get("status") != "canceled":
                self._unexpected("cancel", post_id, response)
            self.ledgers[post_id].canceled = True
            self.answers["cancel ok"] += 1
        else:
            self._refused("cancel", post_id, response)

    def _refused(self, action: str, post_id: str, response: Any) -> None:
        """A 409 ``conflict``, or ``outcome_unknown`` with ``Retry-After``: counted."""
        try:
            code = response.json().get("code")
        except ValueError:
            code = None
        retry_after = response.headers.get("Retry-After", "")
        # Without Retry-After only while the post waits for a fresh token: nobody can
        # say when that comes.
        parked = not retry_after and self._parked(post_id)
        if response.status_code == 409 and (
            code == "conflict" or (code == "outcome_unknown" and (retry_after.isdigit() or parked))
        ):
            self.answers[f"{action} {code}"] += 1
        else:
            self._unexpected(action, post_id, response)

    def _parked(self, post_id: str) -> bool:
        [post] = self.pipeline.posts([post_id])
        return post.status is PostStatus.NEEDS_REAUTH

    def _unexpected(self, action: str, post_id: str, response: Any) -> None:
        self.unexpected.append(
            f"{action} {post_id}: {response.status_code} "
            f"Retry-After={response.headers.get('Retry-After')} {response.text[:300]}"
        )
