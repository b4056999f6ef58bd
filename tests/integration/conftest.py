"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from offpost.graph.sandbox import RunningSandbox, running_sandbox


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[RunningSandbox]:
    """One Graph sandbox over HTTP per test module (tests keep apart by minting their own users)."""
    with running_sandbox() as server:
        yield server
