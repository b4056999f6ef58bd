"""The private servers of the chaos tests never outlive their fixture.

A server that will not stop the polite way (here: frozen with SIGSTOP, so it
cannot act on any signal but SIGKILL) is killed, and only then is its folder
removed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

import pytest

from tests.conftest import service_missing
from tests.integration import services_support
from tests.integration.services_support import (
    PrivatePostgres,
    PrivateRedis,
    ServiceError,
    _alive,
    _children,
    private_postgres,
    private_redis,
)

S = TypeVar("S")


@pytest.fixture(autouse=True)
def _short_stop_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services_support, "STOP_TIMEOUT_S", 2.0)


@contextmanager
def started(server: AbstractContextManager[S], what: str) -> Iterator[S]:
    """``server``, skipped as the chaos tests are when it cannot start; its exit must not fail."""
    inside = False
    try:
        with server as running:
            inside = True
            yield running
    except ServiceError as exc:
        if inside:
            raise
        service_missing(what, exc)


def test_a_postgres_that_ignores_pg_ctl_stop_is_killed_with_its_children() -> None:
    with started(private_postgres(), "a private PostgreSQL cluster") as server:
        pid = server._postmaster_pid()
        assert pid is not None
        children = _children(pid)
        assert children  # checkpointer, background writer, …
        os.kill(pid, signal.SIGSTOP)  # neither a fast nor an immediate shutdown stops it now
    assert not _alive(pid)
    assert not [child for child in children if _alive(child)]
    assert not server.root.exists()


def test_a_postgres_whose_fast_shutdown_fails_is_stopped_immediately(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    modes: list[str] = []
    original = PrivatePostgres.stop

    def stop(self: PrivatePostgres, mode: str = "fast") -> None:
        modes.append(mode)
        if mode == "fast":
            raise ServiceError("pg_ctl: server does not shut down")
        original(self, mode)

    with started(private_postgres(), "a private PostgreSQL cluster") as server:
        pid = server._postmaster_pid()
        assert pid is not None
        monkeypatch.setattr(PrivatePostgres, "stop", stop)
    assert modes == ["fast", "immediate"]
    assert not _alive(pid)
    assert not server.root.exists()


def test_a_redis_that_ignores_sigterm_is_killed() -> None:
    with started(private_redis(), "a private Redis server") as server:
        assert isinstance(server, PrivateRedis)
        assert server.proc is not None
        proc = server.proc
        os.kill(proc.pid, signal.SIGSTOP)
    assert proc.returncode == -signal.SIGKILL
    assert not server.root.exists()
