"""Helpers for API tests: a migrated database, API clients, and the app on a real sandbox."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi.testclient import TestClient

from offpost.api.app import create_app
from offpost.graph.sandbox import RunningSandbox
from offpost.models import Client, hash_api_key, make_engine, make_sessionmaker, new_api_key
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key
from offpost.settings import Settings
from tests.conftest import free_port


def make_settings(
    database_url: str, sandbox: RunningSandbox, redis_url: str, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": redis_url,
        "graph_url": sandbox.url,
        "app_id": sandbox.app_id,
        "app_secret": sandbox.app_secret,
        "encryption_keys": new_encryption_key(),
        "graph_timeout_s": 2.0,
        # Uploads in a folder of their own, never in the working directory.
        "media_dir": tempfile.mkdtemp(prefix="offpost-media-"),
    }
    values.update(extra)
    return Settings(**values)


def add_client(settings: Settings, name: str, *, admin: bool = False) -> str:
    """Create an API client directly in the database; returns its key."""
    key = new_api_key()
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as session:
        session.add(Client(name=name, key_hash=hash_api_key(key), is_admin=admin))
    engine.dispose()
    return key


@contextlib.contextmanager
def api_client(settings: Settings, *, migrate: bool = True) -> Iterator[TestClient]:
    """The API app for ``settings``, with its lifespan running."""
    if migrate:
        upgrade_to_head(settings.database_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def running_api(settings: Settings) -> Iterator[str]:
    """The API app under a real uvicorn server in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
