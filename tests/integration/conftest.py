"""Fixtures shared by the integration tests.

Each module gets one Graph sandbox over HTTP; a module may override any fixture here
(``settings`` most often) where its tests need something else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from offpost.graph.sandbox import RunningSandbox, running_sandbox
from offpost.settings import Settings
from tests.integration.api_support import api_client, make_settings
from tests.integration.media_support import s3_server  # noqa: F401 - the S3 media store's server
from tests.integration.pipeline_support import Pipeline, checked_pipeline, handed_over_page
from tests.integration.sandbox_support import (
    SandboxClient,
    sandbox_client,
    shared_sandbox_client,
)


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[RunningSandbox]:
    """One Graph sandbox over HTTP per test module (tests keep apart by minting their own users)."""
    with running_sandbox() as server:
        yield server


@pytest.fixture
def graph(
    sandbox_server: RunningSandbox, request: pytest.FixtureRequest
) -> Iterator[SandboxClient]:
    """A client of the module's sandbox. Where a pipeline's processes share the world it is
    never reset (each test mints its own users) and only the test's faults are removed;
    otherwise each test starts on a reset world."""
    if "pipeline" in request.fixturenames:
        with shared_sandbox_client(sandbox_server) as client:
            yield client
    else:
        with sandbox_client(sandbox_server) as client:
            yield client


@pytest.fixture
def settings(postgres_url: str, sandbox_server: RunningSandbox, redis_url: str) -> Settings:
    """An API on a fresh PostgreSQL database that calls the module's sandbox."""
    return make_settings(postgres_url, sandbox_server, redis_url)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The API app for ``settings``, migrated, with its lifespan running."""
    with api_client(settings) as client:
        yield client


@pytest.fixture(scope="module")
def pipeline(
    postgres_server_url: str,
    redis_url: str,
    sandbox_server: RunningSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """A fresh database with a real Celery worker and dispatcher serving it, per module."""
    logs = Path(tmp_path_factory.mktemp("pipeline-logs"))
    with checked_pipeline(postgres_server_url, redis_url, sandbox_server, logs) as running:
        yield running


@pytest.fixture
def page(
    pipeline: Pipeline, graph: SandboxClient, request: pytest.FixtureRequest
) -> dict[str, str]:
    """A fresh user with one Page, handed to offpost: ids of client, credential, Page, user."""
    return handed_over_page(pipeline, graph, f"client-{request.node.name}")
