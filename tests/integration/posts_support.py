"""Helpers for the posts API tests: a client with a credential, rows written directly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offpost.models import Client, Post, PostStatus, make_engine, make_sessionmaker
from offpost.settings import Settings
from tests.integration.api_support import add_client, bearer
from tests.integration.sandbox_support import SandboxClient

PROBLEM = "application/problem+json"
POST_KEYS = {
    "id",
    "status",
    "credential_id",
    "target",
    "message",
    "link",
    "photo_url",
    "photos",
    "video",
    "reel",
    "first_comment",
    "publish_at",
    "schedule_id",
    "attempts",
    "graph_post_id",
    "published_at",
    "last_error",
    "created_at",
    "updated_at",
    "insights",
}


@dataclass
class Account:
    """An API client with one credential for a sandbox user with one Page."""

    name: str
    headers: dict[str, str]
    client_id: str
    credential_id: str
    page_id: str
    user: dict[str, Any]

    def body(self, **fields: Any) -> dict[str, Any]:
        """A valid ``POST /v1/posts`` body, changed by ``fields`` (``None`` removes a field)."""
        body: dict[str, Any] = {
            "credential_id": self.credential_id,
            "target": self.page_id,
            "message": "hello",
        }
        body.update(fields)
        return {k: v for k, v in body.items() if v is not None}


def make_account(
    api: TestClient, settings: Settings, graph: SandboxClient, name: str, pages: int = 1
) -> Account:
    headers = bearer(add_client(settings, name))
    user = graph.mint_user(pages=pages)
    response = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=headers
    )
    assert response.status_code == 201, response.text
    with db_session(settings) as session:
        client_id = session.scalars(select(Client.id).where(Client.name == name)).one()
    return Account(name, headers, client_id, response.json()["id"], user["pages"][0]["id"], user)


@contextlib.contextmanager
def db_session(settings: Settings) -> Iterator[Session]:
    """A session on its own engine, disposed afterwards (the app's pool is not ours)."""
    engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
    try:
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


def count_posts(settings: Settings) -> int:
    with db_session(settings) as session:
        return int(session.scalar(select(func.count()).select_from(Post)) or 0)


def load(settings: Settings, post_id: str) -> Post:
    with db_session(settings) as session:
        return session.scalars(select(Post).where(Post.id == post_id)).one()


def set_fields(settings: Settings, post_id: str, **values: Any) -> None:
    """Change a post's row directly, as a worker or the dispatcher would."""
    with db_session(settings) as session:
        post = session.scalars(select(Post).where(Post.id == post_id)).one()
        for name, value in values.items():
            setattr(post, name, value)
        session.commit()


def add_posts(settings: Settings, account: Account, count: int, **values: Any) -> list[str]:
    """Insert posts directly (any status, any time); returns their ids."""
    now = datetime.now(UTC)
    defaults: dict[str, Any] = {
        "client_id": account.client_id,
        "credential_id": account.credential_id,
        "target": account.page_id,
        "message": "direct",
        "publish_at": now + timedelta(days=1),
        "due_at": now + timedelta(days=1),
        "status": PostStatus.SCHEDULED,
    }
    with db_session(settings) as session:
        posts = [Post(**{**defaults, **values}) for _ in range(count)]
        session.add_all(posts)
        session.commit()
        return [p.id for p in posts]


def assert_problem(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """A problem+json answer with ``status`` and ``code`` (and an error about ``field``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body


def iso(moment: datetime) -> str:
    return moment.isoformat()
