"""A populated database for the operators' views: rows written directly, numbers known.

:func:`populate` writes clients, credentials, posts and attempts whose stats are
exactly :data:`EXPECTED_STATS` (``queue_depth`` aside, which the broker decides).
:func:`add_page_health` then gives the credentials Pages, tokens and health.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from offpost.models import (
    CREATE_CONTENT,
    Attempt,
    AttemptOutcome,
    Client,
    Credential,
    CredentialPage,
    CredentialStatus,
    PageTokenStatus,
    Post,
    PostStatus,
    hash_api_key,
    make_engine,
    make_sessionmaker,
    new_api_key,
)
from offpost.models.types import new_encryption_key
from offpost.settings import Settings
from tests.conftest import sibling_redis_url

#: Lateness of the posts published in the last hour: 1 s ... 10 s.
RECENT_LATENESS_S = [float(s) for s in range(1, 11)]

EXPECTED_STATS: dict[str, Any] = {
    "posts": {
        "scheduled": 6,
        "queued": 1,
        "publishing": 1,
        "published": 13,
        "failed": 3,
        "needs_reauth": 1,
        "canceled": 0,
        "deleted": 0,
    },
    "last_hour": {
        "published": 10,
        "failed": 2,
        # percentile_cont over 1..10: 5.5, 9 + 0.55, 9 + 0.91.
        "lateness_seconds": {"p50": 5.5, "p95": 9.55, "p99": 9.91},
    },
    "top_errors": [
        {"code": "190", "count": 3},
        {"code": "2", "count": 2},
        {"code": "368", "count": 2},
        {"code": "timeout", "count": 1},
    ],
    "credentials": {"active": 2, "expiring": 1, "user_token_expired": 0, "needs_reauth": 1},
    "due_not_dispatched": 3,
}
TOTAL_POSTS = sum(EXPECTED_STATS["posts"].values())
#: Posts created more than an hour before :func:`populate` ran.
OLD_POSTS = 4


def private_redis_url(redis_url: str) -> str:
    """Another database of the test Redis: no worker of a pipeline test drains its queue."""
    return sibling_redis_url(redis_url, 13)


def make_admin_settings(database_url: str, redis_url: str, **extra: Any) -> Settings:
    """Settings for an API that never calls Graph (the admin views only read the database).

    The broker is :func:`private_redis_url`, where tests put fake messages.
    """
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": private_redis_url(redis_url),
        "graph_url": "http://127.0.0.1:9",
        "app_id": "1234",
        "app_secret": "not-a-real-secret",
        "encryption_keys": new_encryption_key(),
        "graph_timeout_s": 2.0,
        # The 401 tests fail authentication on purpose, many times a minute.
        "auth_failures_per_minute": 10_000,
    }
    values.update(extra)
    return Settings(**values)


@contextlib.contextmanager
def session_for(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
    try:
        with make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


@dataclass
class Population:
    """Keys and ids of what :func:`populate` wrote."""

    admin_key: str
    client_key: str
    acme_id: str
    globex_id: str
    globex_page: str
    expiring_credential: str
    failed_post: str
    scheduled_post: str
    published_post: str
    now: datetime


def populate(settings: Settings, now: datetime | None = None) -> Population:
    """Write the rows behind :data:`EXPECTED_STATS`, relative to ``now`` (default: the clock)."""
    now = now or datetime.now(UTC)
    admin_key, client_key = new_api_key(), new_api_key()
    with session_for(settings) as s:
        ops = Client(name="ops", key_hash=hash_api_key(admin_key), is_admin=True)
        acme = Client(name="acme", key_hash=hash_api_key(client_key))
        globex = Client(name="globex", key_hash=hash_api_key(new_api_key()))
        s.add_all([ops, acme, globex])
        s.flush()

        def credential(client: Client, user: str, status: CredentialStatus, **kw: Any) -> str:
            cred = Credential(client_id=client.id, fb_user_id=user, status=status, **kw)
            s.add(cred)
            s.flush()
            return cred.id

        active = credential(
            acme, "u1", CredentialStatus.ACTIVE, expires_at=now + timedelta(days=10)
        )
        expiring = credential(
            acme, "u2", CredentialStatus.EXPIRING, expires_at=now + timedelta(hours=5)
        )
        reauth = credential(
            acme, "u3", CredentialStatus.NEEDS_REAUTH, expires_at=now + timedelta(days=100)
        )
        globex_cred = credential(globex, "u4", CredentialStatus.ACTIVE)
        credential(globex, "u5", CredentialStatus.DELETED, expires_at=now + timedelta(hours=1))

        def post(
            client: Client,
            cred: str,
            status: PostStatus,
            *,
            publish_at: datetime,
            target: str = "page-acme",
            created_at: datetime | None = None,
            **kw: Any,
        ) -> Post:
            row = Post(
                client_id=client.id,
                credential_id=cred,
                target=target,
                message=f"{status.value} post",
                publish_at=publish_at,
                due_at=kw.pop("due_at", publish_at),
                status=status,
                created_at=created_at or now,
                updated_at=kw.pop("updated_at", created_at or now),
                **kw,
            )
            s.add(row)
            return row

        hour_ago, three_hours_ago = now - timedelta(hours=1), now - timedelta(hours=3)
        for _ in range(2):
            post(acme, active, PostStatus.SCHEDULED, publish_at=now + timedelta(hours=1))
        due = [
            post(acme, active, PostStatus.SCHEDULED, publish_at=now - timedelta(minutes=5))
            for _ in range(3)
        ]
        post(acme, active, PostStatus.QUEUED, publish_at=now, queued_at=now)
        post(
            acme,
            active,
            PostStatus.PUBLISHING,
            publish_at=now,
            lease_owner="w:1",
            lease_expires_at=now + timedelta(minutes=2),
        )
        published = []
        for lateness_s in RECENT_LATENESS_S:
            done = now - timedelta(minutes=10)
            published.append(
                post(
                    acme,
                    active,
                    PostStatus.PUBLISHED,
                    publish_at=done - timedelta(seconds=lateness_s),
                    published_at=done,
                    graph_post_id=f"g{lateness_s}",
                )
            )
        for _ in range(2):
            post(
                acme,
                active,
                PostStatus.PUBLISHED,
                publish_at=three_hours_ago - timedelta(seconds=1000),
                published_at=three_hours_ago,
                created_at=three_hours_ago - timedelta(hours=1),
            )
        failed = [
            post(
                acme,
                active,
                PostStatus.FAILED,
                publish_at=hour_ago,
                created_at=hour_ago + timedelta(minutes=1),
                updated_at=now - timedelta(minutes=20),
                attempts=1,
                last_error={"code": 368, "subcode": None, "message": "blocked", "fbtrace_id": None},
            )
            for _ in range(2)
        ]
        post(
            acme,
            active,
            PostStatus.FAILED,
            publish_at=three_hours_ago,
            created_at=three_hours_ago - timedelta(hours=1),
            updated_at=now - timedelta(hours=2),
        )
        post(acme, reauth, PostStatus.NEEDS_REAUTH, publish_at=now)
        post(
            globex,
            globex_cred,
            PostStatus.PUBLISHED,
            target="page-globex",
            publish_at=three_hours_ago - timedelta(seconds=1000),
            published_at=three_hours_ago,
            created_at=three_hours_ago - timedelta(hours=1),
        )
        post(
            globex,
            globex_cred,
            PostStatus.SCHEDULED,
            target="page-globex",
            publish_at=now + timedelta(days=1),
        )
        s.flush()

        # Attempts: 190 x3, 2 x2, 368 x2, timeout x1 within the day; 100 x5 two days ago.
        numbers: dict[str, int] = {}

        def attempt(p: Post, code: str, finished_at: datetime) -> None:
            numbers[p.id] = numbers.get(p.id, 0) + 1
            s.add(
                Attempt(
                    post_id=p.id,
                    number=numbers[p.id],
                    started_at=finished_at - timedelta(seconds=1),
                    finished_at=finished_at,
                    outcome=AttemptOutcome.RETRY,
                    error_code=code,
                    error_message="boom",
                )
            )

        recent = now - timedelta(hours=2)
        for code, times, target in (
            ("190", 3, due[0]),
            ("2", 2, due[1]),
            ("368", 2, failed[0]),
            ("timeout", 1, due[2]),
            ("100", 5, failed[1]),
        ):
            when = now - timedelta(days=2) if code == "100" else recent
            for _ in range(times):
                attempt(target, code, when)
        # A successful attempt has no error code.
        s.add(
            Attempt(
                post_id=published[0].id,
                number=1,
                started_at=now,
                finished_at=now,
                outcome=AttemptOutcome.PUBLISHED,
            )
        )
        return Population(
            admin_key=admin_key,
            client_key=client_key,
            acme_id=acme.id,
            globex_id=globex.id,
            globex_page="page-globex",
            expiring_credential=expiring,
            failed_post=failed[0].id,
            scheduled_post=due[0].id,
            published_post=published[0].id,
            now=now,
        )


@contextlib.contextmanager
def queued_messages(redis_url: str, count: int) -> Iterator[None]:
    """``count`` fake messages in the Celery queue's Redis list, removed afterwards."""
    broker = redis.Redis.from_url(private_redis_url(redis_url))
    broker.delete("offpost")
    if count:
        broker.rpush("offpost", *[b"{}"] * count)
    try:
        yield
    finally:
        broker.delete("offpost")
        broker.close()


@dataclass
class PageHealthPopulation:
    """Ids and tokens of what :func:`add_page_health` wrote."""

    #: acme's ``u1``: ``active``, two valid Pages, one without ``CREATE_CONTENT``.
    active_credential: str
    #: acme's ``u3``: ``needs_reauth``, :attr:`dead_page` dead, one Page still valid.
    reauth_credential: str
    #: globex's ``u4``: ``active``, one Page whose tasks are not known yet.
    globex_credential: str
    #: globex's new ``u6``: ``user_token_expired``, its Page token still valid.
    expired_credential: str
    dead_page: str
    #: The ``needs_reauth`` post of :attr:`reauth_credential`, aimed at :attr:`dead_page`.
    parked_post: str
    #: Every token stored: no page may ever show one.
    tokens: list[str]
    #: Posts per credential id in the states that wait on it, by status.
    waiting: dict[str, dict[str, int]]


#: The name of acme's third Page, with what HTML must escape.
TRICKY_PAGE_NAME = "Acme <b>Blog</b> & Co"


def add_page_health(settings: Settings, now: datetime) -> PageHealthPopulation:
    """Give :func:`populate`'s credentials Pages and tokens, plus one whose user token ended.

    Adds no post and changes no status, so :data:`EXPECTED_STATS` still holds but for
    ``credentials`` (one more ``user_token_expired``).
    """
    tokens: list[str] = []

    def token(kind: str) -> str:
        value = f"EAAG{kind}{new_api_key().removeprefix('opk_')}"
        tokens.append(value)
        return value

    with session_for(settings) as s:
        ids = {user: cid for user, cid in s.execute(select(Credential.fb_user_id, Credential.id))}
        active, reauth, globex_cred = ids["u1"], ids["u3"], ids["u4"]
        globex = s.scalars(select(Client).where(Client.name == "globex")).one()
        checked = now - timedelta(hours=1)

        def page(
            credential_id: str,
            page_id: str,
            name: str,
            *,
            status: PageTokenStatus = PageTokenStatus.VALID,
            tasks: list[str] | None = None,
        ) -> None:
            s.add(
                CredentialPage(
                    credential_id=credential_id,
                    page_id=page_id,
                    name=name,
                    page_token=token("page") if status is PageTokenStatus.VALID else None,
                    token_status=status,
                    tasks=tasks,
                    checked_at=checked,
                )
            )

        for credential_id in (active, reauth, globex_cred):
            s.execute(
                update(Credential)
                .where(Credential.id == credential_id)
                .values(user_token=token("user"), last_checked_at=checked)
            )
        page(active, "page-acme", "Acme", tasks=[CREATE_CONTENT, "MODERATE"])
        page(active, "page-acme-shop", "Acme Shop", tasks=["ANALYZE"])
        page(reauth, "page-acme", "Acme", status=PageTokenStatus.DEAD, tasks=[CREATE_CONTENT])
        page(reauth, "page-acme-blog", TRICKY_PAGE_NAME, tasks=[CREATE_CONTENT])
        page(globex_cred, "page-globex", "Globex")
        expired = Credential(
            client_id=globex.id,
            fb_user_id="u6",
            status=CredentialStatus.USER_TOKEN_EXPIRED,
            user_token=token("user"),
            expires_at=now - timedelta(days=2),
            user_token_dead_at=now - timedelta(days=2),
            data_access_expires_at=now + timedelta(days=30),
            last_checked_at=checked,
        )
        s.add(expired)
        s.flush()
        page(expired.id, "page-globex-news", "Globex News", tasks=[CREATE_CONTENT])
        parked = s.scalars(
            select(Post.id).where(
                Post.credential_id == reauth, Post.status == PostStatus.NEEDS_REAUTH
            )
        ).one()
        return PageHealthPopulation(
            active_credential=active,
            reauth_credential=reauth,
            globex_credential=globex_cred,
            expired_credential=expired.id,
            dead_page="page-acme",
            parked_post=parked,
            tokens=tokens,
            # populate's posts: u1 has 2 future and 3 due scheduled ones, one queued and
            # one publishing; u3 the parked one; u4 globex's scheduled one.
            waiting={
                active: {"scheduled": 5, "queued": 1, "publishing": 1},
                reauth: {"needs_reauth": 1},
                globex_cred: {"scheduled": 1},
                expired.id: {},
            },
        )
