"""The publish protocol and the dispatcher's tick, in one process, on in-memory twins.

The process-level tests run real workers and dispatchers through Celery; these
run the same code directly, so a failure points at the protocol rather than at
processes, brokers or timing: SQLite in a temporary folder for the database,
:class:`httpx.MockTransport` for Graph (a small Page that keeps its posts and can
lose a reply after acting), the in-memory rate-limit block store, and a list for
the broker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from offpost.graph.client import GraphClient, make_http_client
from offpost.models import (
    Attempt,
    AttemptOutcome,
    Client,
    Credential,
    CredentialPage,
    Post,
    PostStatus,
    make_engine,
    make_sessionmaker,
)
from offpost.models.base import utcnow
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key
from offpost.scheduler.dispatcher import Dispatcher, DispatcherConfig
from offpost.workers.batch import publish_batch
from offpost.workers.decide import RetryPolicy
from offpost.workers.observe import Outcome
from offpost.workers.publish import PublishContext
from offpost.workers.ratelimit import MemoryBlockStore

APP_ID = "1234"
PAGE = "777"


@dataclass
class PageTwin:
    """Graph's ``/{page}/feed`` for one Page: publish and list, as Graph answers them."""

    posts: list[dict[str, object]] = field(default_factory=list)
    #: Replies to lose after the post is made (the connection drops).
    lose_replies: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith(f"/{PAGE}/feed"):
            return httpx.Response(404, json={"error": {"message": "unknown path", "code": 803}})
        if request.method == "GET":
            with self.lock:
                data = list(reversed(self.posts))
            return httpx.Response(200, json={"data": data})
        form = parse_qs(request.content.decode())
        with self.lock:
            post = {
                "id": f"{PAGE}_{len(self.posts) + 1}",
                "message": form["message"][0],
                "created_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
                "application": {"id": APP_ID, "name": "offpost"},
            }
            self.posts.append(post)
            lose = self.lose_replies > 0
            self.lose_replies -= int(lose)
        if lose:
            raise httpx.ReadError("connection reset after the post was made", request=request)
        return httpx.Response(200, content=json.dumps({"id": post["id"]}).encode())


@dataclass
class Twins:
    sessions: sessionmaker[Session]
    page: PageTwin
    ctx: PublishContext
    sent: list[list[str]]
    dispatcher: Dispatcher
    client_id: str
    credential_id: str

    def add_post(self, message: str) -> str:
        now = utcnow()
        with self.sessions.begin() as session:
            post = Post(
                client_id=self.client_id,
                credential_id=self.credential_id,
                target=PAGE,
                message=message,
                publish_at=now,
                due_at=now,
            )
            session.add(post)
            session.flush()
            return post.id

    def dispatch_and_publish(self) -> dict[Outcome, int]:
        """One dispatcher tick, then the worker's batch for every message it sent."""
        self.dispatcher.tick()
        counts: dict[Outcome, int] = {}
        while self.sent:
            for outcome, n in publish_batch(self.ctx, self.sent.pop(0)).outcomes.items():
                counts[outcome] = counts.get(outcome, 0) + n
        return counts

    def post(self, post_id: str) -> Post:
        with self.sessions() as session:
            found = session.get(Post, post_id)
            assert found is not None
            return found

    def outcomes(self, post_id: str) -> list[AttemptOutcome | None]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Attempt.outcome)
                    .where(Attempt.post_id == post_id)
                    .order_by(Attempt.number)
                )
            )


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[Twins]:
    url = f"sqlite:///{tmp_path / 'offpost.db'}"
    upgrade_to_head(url)
    engine = make_engine(url, encryption_keys=[new_encryption_key()])
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        client = Client(name="twin", key_hash="0" * 64)
        session.add(client)
        session.flush()
        credential = Credential(client_id=client.id, fb_user_id="42", user_token="EAAuser")
        session.add(credential)
        session.flush()
        session.add(
            CredentialPage(
                credential_id=credential.id, page_id=PAGE, name="Twin", page_token="EAApage"
            )
        )
        client_id, credential_id = client.id, credential.id
    page = PageTwin()
    http = make_http_client(5.0, transport=httpx.MockTransport(page))
    graph = GraphClient(
        http,
        graph_url="https://graph.test",
        version="v25.0",
        app_id=APP_ID,
        app_secret="twin-secret-of-sixteen",
        appsecret_time=True,
    )
    pool = ThreadPoolExecutor(4)
    ctx = PublishContext(
        sessions=sessions,
        graph=graph,
        blocks=MemoryBlockStore(),
        app_id=APP_ID,
        worker="twin:1",
        lease=timedelta(seconds=60),
        retry=RetryPolicy(base_s=0.01, cap_s=0.02),
        pool=pool,
        call_bound_s=10.0,
    )
    sent: list[list[str]] = []
    dispatcher = Dispatcher(
        sessions,
        sent.append,
        config=DispatcherConfig(dispatch_batch=100, message_batch=50),
        clock=utcnow,
    )
    yield Twins(sessions, page, ctx, sent, dispatcher, client_id, credential_id)
    pool.shutdown()
    http.close()
    engine.dispose()


def test_a_tick_claims_due_posts_once_and_a_batch_publishes_each_once(twins: Twins) -> None:
    ids = [twins.add_post(f"hello {n}") for n in range(3)]
    assert twins.dispatch_and_publish() == {Outcome.PUBLISHED: 3}
    assert twins.dispatch_and_publish() == {}  # nothing due any more, nothing sent
    posts = [twins.post(i) for i in ids]
    assert {p.status for p in posts} == {PostStatus.PUBLISHED}
    assert sorted(p.graph_post_id or "" for p in posts) == sorted(
        str(p["id"]) for p in twins.page.posts
    )
    assert all(twins.outcomes(i) == [AttemptOutcome.PUBLISHED] for i in ids)


def test_a_lost_reply_is_adopted_on_the_next_try_not_published_again(twins: Twins) -> None:
    twins.page.lose_replies = 1
    post_id = twins.add_post("made, but the reply was lost")
    assert twins.dispatch_and_publish() == {Outcome.RETRY: 1}
    post = twins.post(post_id)
    assert (post.status, post.reconcile_since is not None) == (PostStatus.SCHEDULED, True)
    time.sleep(0.05)  # the retry's backoff
    assert twins.dispatch_and_publish() == {Outcome.RECONCILED: 1}
    post = twins.post(post_id)
    assert len(twins.page.posts) == 1
    assert post.graph_post_id == twins.page.posts[0]["id"]
    assert twins.outcomes(post_id) == [AttemptOutcome.RETRY, AttemptOutcome.RECONCILED]
    assert post.attempts == 1
