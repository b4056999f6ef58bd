"""Helpers for the fuzz and hostile-input tests: the API under uvicorn, with data in it.

The app runs in a real uvicorn server (in a thread) on a fresh PostgreSQL
database, against the Graph sandbox over HTTP, so requests cross a real socket
and a real HTTP parser. :func:`seed` gives it two clients with a credential,
posts in several states, a schedule and a webhook, so that routes taking an id
can be sent real ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from offpost.graph.sandbox import RunningSandbox
from offpost.models import Attempt, AttemptOutcome, Post, PostStatus
from offpost.models.migrate import upgrade_to_head
from offpost.models.post import error_document
from offpost.settings import Settings
from tests.conftest import fresh_postgres_database
from tests.integration.api_support import add_client, bearer, make_settings, running_api
from tests.integration.posts_support import db_session
from tests.integration.sandbox_support import SandboxClient, sandbox_client


@dataclass
class Tenant:
    """An API client with one credential for a sandbox user with one Page, and its objects."""

    key: str
    credential_id: str
    page_id: str
    post_ids: list[str] = field(default_factory=list)
    schedule_ids: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


@dataclass
class Served:
    """The running API, its settings and what :func:`seed` put in it."""

    url: str
    settings: Settings
    admin_key: str
    alice: Tenant
    bob: Tenant


def _tenant(http: httpx.Client, settings: Settings, graph: SandboxClient, name: str) -> Tenant:
    key = add_client(settings, name)
    user = graph.mint_user(pages=1)
    response = http.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    tenant = Tenant(key, response.json()["id"], user["pages"][0]["id"])
    later = datetime.now(UTC) + timedelta(days=30)
    posts = [
        {"credential_id": tenant.credential_id, "target": tenant.page_id, "message": f"{name} {i}"}
        | {"publish_at": (later + timedelta(hours=i)).isoformat()}
        for i in range(6)
    ]
    response = http.post("/v1/posts/batch", json={"posts": posts}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    tenant.post_ids = [p["id"] for p in response.json()["posts"]]
    schedule = {
        "credential_id": tenant.credential_id,
        "target": tenant.page_id,
        "message": f"{name} weekly",
        "cron": "0 9 * * 1",
        "timezone": "Europe/Berlin",
    }
    response = http.post("/v1/schedules", json=schedule, headers=tenant.headers)
    assert response.status_code == 201, response.text
    tenant.schedule_ids = [response.json()["id"]]
    response = http.put(
        "/v1/webhook", json={"url": "https://hooks.example.com/offpost"}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return tenant


def seed(url: str, settings: Settings, graph: SandboxClient) -> Served:
    """Two tenants with data; one post of each failed and one published (as a worker would)."""
    admin_key = add_client(settings, "operator", admin=True)
    with httpx.Client(base_url=url, timeout=10) as http:
        alice = _tenant(http, settings, graph, "alice")
        bob = _tenant(http, settings, graph, "bob")
    now = datetime.now(UTC)
    with db_session(settings) as session:
        for tenant in (alice, bob):
            failed = tenant.post_ids[0]
            session.execute(
                update(Post)
                .where(Post.id == failed)
                .values(
                    status=PostStatus.FAILED,
                    attempts=1,
                    last_error=error_document(100, "Invalid parameter", fbtrace_id="AbC"),
                )
            )
            session.add(
                Attempt(
                    post_id=failed,
                    number=1,
                    started_at=now,
                    finished_at=now,
                    outcome=AttemptOutcome.FAILED,
                    error_code="100",
                    error_message="Invalid parameter",
                    fbtrace_id="AbC",
                )
            )
            session.execute(
                update(Post)
                .where(Post.id == tenant.post_ids[1])
                .values(
                    status=PostStatus.PUBLISHED,
                    graph_post_id=f"1_{tenant.post_ids[1]}",
                    published_at=now,
                    attempts=1,
                )
            )
        session.commit()
    return Served(url, settings, admin_key, alice, bob)


@contextlib.contextmanager
def served_api(
    postgres_server_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> Iterator[Served]:
    """A fresh database, the API serving it over HTTP, and :func:`seed`'s data."""
    with (
        fresh_postgres_database(postgres_server_url) as database_url,
        sandbox_client(sandbox_server) as graph,
    ):
        # Thousands of requests per key in a minute are the point here, not a flood.
        settings = make_settings(
            database_url, sandbox_server, redis_url, rate_limit_per_minute=1_000_000
        )
        upgrade_to_head(database_url)
        with running_api(settings) as url:
            yield seed(url, settings, graph)
