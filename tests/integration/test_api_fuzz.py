"""Schemathesis against ``/openapi.json``: no 5xx, and every answer is the one it declares.

The API runs under uvicorn on a fresh PostgreSQL database with the Graph
sandbox behind it (:mod:`tests.integration.fuzz_support`), seeded with two
clients' credentials, posts in several states, schedules and webhooks. The
document is loaded from the running server, and every operation in it gets
generated requests — valid ones and, as schemathesis makes them, invalid ones —
sent with alice's key (an admin key on ``/v1/admin``). Path ids are drawn
half the time from the seeded objects, so the routes behind a found id run
too, not only their 404.

Each answer must be below 500, carry a status code the document lists for
that operation, the content type and headers it declares, and a body that
validates against the declared schema (problem+json errors included). The run
is derandomized, so CI sees the same requests every time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from offpost.api.app import create_app
from offpost.graph.sandbox import RunningSandbox
from offpost.models.types import new_encryption_key
from offpost.settings import Settings
from tests.integration.api_support import bearer
from tests.integration.fuzz_support import Served, served_api

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]

#: Generated requests per operation (schemathesis adds its explicit and boundary examples).
MAX_EXAMPLES = 25

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(
    postgres_server_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> Iterator[Served]:
    with served_api(postgres_server_url, sandbox_server, redis_url) as api:
        yield api


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document, built without a database (nothing runs until the lifespan).

    Building the app installs log scrubbing for its secret; the process's record
    factory is put back afterwards, so collecting this module changes nothing else.
    """
    factory = logging.getLogRecordFactory()
    try:
        app = create_app(
            Settings(app_id="1", app_secret="unused", encryption_keys=new_encryption_key())
        )
        return app.openapi()
    finally:
        logging.setLogRecordFactory(factory)


DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
SEEDED: dict[str, list[str]] = {}


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Half the time, a seeded object's id instead of a generated one."""
    names = [name for name in path_parameters or {} if SEEDED.get(name)]
    if not path_parameters or not names:
        return st.just(path_parameters)
    real = st.fixed_dictionaries({name: st.sampled_from(SEEDED[name]) for name in names})
    return st.one_of(st.just(path_parameters), real.map(lambda ids: path_parameters | ids))


@pytest.fixture(scope="module")
def seeded(served: Served) -> Iterator[Served]:
    """``served``, with its ids offered to the path-parameter hook."""
    SEEDED.update(
        post_id=served.alice.post_ids + served.bob.post_ids[:1],
        credential_id=[served.alice.credential_id, served.bob.credential_id],
        schedule_id=served.alice.schedule_ids + served.bob.schedule_ids,
    )
    yield served
    SEEDED.clear()


def test_the_server_serves_the_fuzzed_document(served: Served) -> None:
    response = httpx.get(f"{served.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_matches_the_openapi_document(case: Any, seeded: Served) -> None:
    admin = case.path.startswith(("/v1/admin", "/admin"))
    key = seeded.admin_key if admin else seeded.alice.key
    case.call_and_validate(base_url=seeded.url, headers=bearer(key), checks=CHECKS, timeout=30)
