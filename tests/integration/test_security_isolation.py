"""Tenant isolation and admin-only routes, on every route the app has.

The routes come from the app itself (its OpenAPI document, which lists every
route; a last test checks that no route hides from it), so a route added later is
covered without anyone remembering to: a path parameter, query filter or body
field naming an id that these tables do not know fails the test that meets it.

- Client B using client A's real id gets 404 — the very answer an id that does
  not exist gets, so B cannot even learn that the id exists — for every method
  on every path with an id, and A's objects are unchanged afterwards.
- Lists never show another client's items, and filtering by another client's
  Page or schedule finds nothing; a body naming another client's credential is
  answered as if that credential did not exist.
- Every route but the public ones answers 401 without a key; every admin route
  answers 403 to a client key and works with an admin key.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import offpost.api
from offpost.graph.sandbox import RunningSandbox
from offpost.models import IdPrefix, new_id
from offpost.settings import Settings
from tests.conftest import fresh_postgres_database
from tests.integration.api_support import add_client, api_client, bearer, make_settings
from tests.integration.posts_support import Account, assert_problem, make_account
from tests.integration.sandbox_support import sandbox_client

#: What each path parameter names, and the prefix of an id of that kind.
ID_PARAMS: dict[str, Callable[[], str]] = {
    "client": partial(new_id, IdPrefix.CLIENT),
    "post_id": partial(new_id, IdPrefix.POST),
    "credential_id": partial(new_id, IdPrefix.CREDENTIAL),
    "schedule_id": partial(new_id, IdPrefix.SCHEDULE),
    "media_id": partial(new_id, IdPrefix.MEDIA),
    # A Facebook Page's id (the operators' per-Page pages): digits, not offpost's.
    "page_id": lambda: str(secrets.randbelow(10**15) + 10**14),
}
#: Parameters only operators' routes have.
OPERATOR_PARAMS = {"client", "page_id"}
#: A valid body for each route with one, so that only ownership decides the answer.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/v1/posts/{post_id}"): {"message": "taken over"},
    ("POST", "/v1/credentials/{credential_id}/client-code"): {
        "redirect_uri": "https://client.example/callback"
    },
    ("PATCH", "/v1/schedules/{schedule_id}"): {"status": "paused"},
}
#: Query parameters of list routes that name something a client owns.
ID_FILTERS = {"target", "schedule_id", "credential_id"}
#: Query parameters that name nothing owned (paging and states).
PLAIN_FILTERS = {"status", "limit", "cursor"}
#: Routes any caller may use without a key (the OpenAPI document), and the dashboard's
#: sign-in, which takes the key in its form.
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/admin/login",
}
FAR_FUTURE = datetime.now(UTC) + timedelta(days=30)


@dataclass
class World:
    api: TestClient
    settings: Settings
    alice: Account
    bob: Account
    post_id: str
    schedule_id: str
    admin: dict[str, str]
    media_id: str

    def ids(self) -> dict[str, str]:
        """Alice's id for each kind of path parameter."""
        return {
            "client": self.alice.client_id,
            "post_id": self.post_id,
            "credential_id": self.alice.credential_id,
            "schedule_id": self.schedule_id,
            "media_id": self.media_id,
            "page_id": self.alice.page_id,
        }

    def secrets_of_alice(self) -> list[str]:
        """Everything of Alice's that Bob must never see."""
        return [
            self.post_id,
            self.schedule_id,
            self.media_id,
            self.alice.credential_id,
            self.alice.page_id,
            self.alice.user["user_id"],
            "alice-only message",
            "https://alice.example/hook",
        ]


@pytest.fixture(scope="module")
def world(
    postgres_server_url: str,
    sandbox_server: RunningSandbox,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    with fresh_postgres_database(postgres_server_url) as url:
        # The 401 checks below fail authentication on purpose, many times.
        settings = make_settings(
            url,
            sandbox_server,
            redis_url,
            auth_failures_per_minute=10_000,
            media_dir=str(tmp_path_factory.mktemp("media")),
        )
        with api_client(settings) as api, sandbox_client(sandbox_server) as graph:
            alice = make_account(api, settings, graph, "alice")
            bob = make_account(api, settings, graph, "bob")
            post = api.post(
                "/v1/posts",
                json=alice.body(message="alice-only message", publish_at=FAR_FUTURE.isoformat()),
                headers=alice.headers,
            )
            assert post.status_code == 201, post.text
            schedule = api.post(
                "/v1/schedules",
                json={
                    "credential_id": alice.credential_id,
                    "target": alice.page_id,
                    "message": "alice-only message",
                    # Hourly: its next occurrences are posts at once (a 24 h horizon).
                    "cron": "0 * * * *",
                    "timezone": "Europe/Berlin",
                },
                headers=alice.headers,
            )
            assert schedule.status_code == 201, schedule.text
            hook = api.put(
                "/v1/webhook", json={"url": "https://alice.example/hook"}, headers=alice.headers
            )
            assert hook.status_code == 200, hook.text
            admin = bearer(add_client(settings, "ops", admin=True))
            media = api.post(
                "/v1/media",
                files={"file": ("alice.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")},
                headers=alice.headers,
            )
            assert media.status_code == 201, media.text
            yield World(
                api,
                settings,
                alice,
                bob,
                post.json()["id"],
                schedule.json()["id"],
                admin,
                media.json()["id"],
            )


@dataclass(frozen=True)
class Operation:
    """One method of one path, as the app's OpenAPI document describes it."""

    method: str
    path: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    body_schema: dict[str, Any] | None

    def fill(self, ids: dict[str, str]) -> str:
        unknown = set(self.path_params) - set(ID_PARAMS)
        assert not unknown, f"{self.path}: add {unknown} to ID_PARAMS (and an object of that kind)"
        return self.path.format(**{name: ids[name] for name in self.path_params})

    @property
    def is_admin(self) -> bool:
        return self.path.startswith(("/v1/admin", "/admin"))


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    """``node`` with every ``$ref`` replaced by what it names (the schemas are not recursive)."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _resolve(spec, spec["components"]["schemas"][name])
        return {k: _resolve(spec, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(spec, v) for v in node]
    return node


def operations(world: World) -> list[Operation]:
    """Every operation of the app (the OpenAPI document lists every route but its own)."""
    spec = world.api.get("/openapi.json").json()
    out = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = op.get("parameters", [])
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            out.append(
                Operation(
                    method.upper(),
                    path,
                    tuple(p["name"] for p in params if p["in"] == "path"),
                    tuple(p["name"] for p in params if p["in"] == "query"),
                    _resolve(spec, body["schema"]) if body else None,
                )
            )
    return out


def client_operations_with_ids(world: World) -> list[Operation]:
    return [op for op in operations(world) if op.path_params and not op.is_admin]


def body_for(op: Operation) -> dict[str, Any] | None:
    if op.body_schema is None:
        return None
    key = (op.method, op.path)
    assert key in BODIES, f"{op.method} {op.path} takes a body: add a valid one to BODIES"
    return BODIES[key]


def normalized(text: str, *ids: str) -> Any:
    for value in ids:
        text = text.replace(value, "<id>")
    return json.loads(text) if text else None


def snapshot(world: World) -> dict[str, Any]:
    """Alice's own view of her objects."""
    api, key = world.api, world.alice.headers
    return {
        "post": api.get(f"/v1/posts/{world.post_id}", headers=key).json(),
        "credential": api.get(f"/v1/credentials/{world.alice.credential_id}", headers=key).json(),
        "schedule": api.get(f"/v1/schedules/{world.schedule_id}", headers=key).json(),
        "webhook": api.get("/v1/webhook", headers=key).json(),
        "media": api.get(f"/v1/media/{world.media_id}", headers=key).json(),
    }


# --- another client's ids ------------------------------------------------------------------


def test_every_id_route_answers_404_to_another_client_as_for_an_unknown_id(world: World) -> None:
    before = snapshot(world)
    ops = client_operations_with_ids(world)
    # Only an operator's route names a client.
    assert {name for op in ops for name in op.path_params} == set(ID_PARAMS) - OPERATOR_PARAMS
    for op in ops:
        body = body_for(op)
        foreign_ids = world.ids()
        unknown_ids = {name: make() for name, make in ID_PARAMS.items()}
        foreign = world.api.request(
            op.method, op.fill(foreign_ids), json=body, headers=world.bob.headers
        )
        unknown = world.api.request(
            op.method, op.fill(unknown_ids), json=body, headers=world.bob.headers
        )
        what = f"{op.method} {op.path}"
        assert_problem(foreign, 404, "not_found")
        assert normalized(foreign.text, *foreign_ids.values()) == normalized(
            unknown.text, *unknown_ids.values()
        ), what
        assert foreign.headers.get("content-length") is not None
        for value in world.secrets_of_alice():
            if value not in foreign_ids.values():
                assert value not in foreign.text, what
    assert snapshot(world) == before


def test_methods_a_path_does_not_allow_reveal_nothing_either(world: World) -> None:
    ops = client_operations_with_ids(world)
    for path, op in {op.path: op for op in ops}.items():
        allowed = {o.method for o in ops if o.path == path}
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed):
            foreign_ids = world.ids()
            unknown_ids = {name: make() for name, make in ID_PARAMS.items()}
            foreign = world.api.request(method, op.fill(foreign_ids), headers=world.bob.headers)
            unknown = world.api.request(method, op.fill(unknown_ids), headers=world.bob.headers)
            assert foreign.status_code == unknown.status_code, f"{method} {path}"
            assert normalized(foreign.text, *foreign_ids.values()) == normalized(
                unknown.text, *unknown_ids.values()
            )


# --- lists and filters -----------------------------------------------------------------------


def list_operations(world: World) -> list[Operation]:
    return [
        op
        for op in operations(world)
        if op.method == "GET"
        and op.path.startswith("/v1/")
        and not op.is_admin
        and not op.path_params
    ]


def test_lists_never_show_another_clients_items(world: World) -> None:
    ops = list_operations(world)
    assert {op.path for op in ops} >= {"/v1/posts", "/v1/credentials", "/v1/schedules"}
    shown_to_alice = ""
    for op in ops:
        alices = world.api.get(op.path, headers=world.alice.headers)
        bobs = world.api.get(op.path, headers=world.bob.headers)
        assert alices.status_code == 200, op.path
        assert bobs.status_code in (200, 404), op.path
        shown_to_alice += alices.text
        for value in world.secrets_of_alice():
            assert value not in bobs.text, f"{op.path} shows Bob {value!r}"
    # The lists are not empty: what Bob does not see, Alice does.
    for value in (world.post_id, world.schedule_id, world.alice.credential_id):
        assert value in shown_to_alice


def test_filters_naming_another_clients_objects_find_nothing(world: World) -> None:
    foreign = {
        "target": world.alice.page_id,
        "schedule_id": world.schedule_id,
        "credential_id": world.alice.credential_id,
    }
    checked = 0
    for op in list_operations(world):
        params = set(op.query_params)
        unknown = params - ID_FILTERS - PLAIN_FILTERS
        assert not unknown, f"{op.path}: classify {unknown} in ID_FILTERS or PLAIN_FILTERS"
        for name in sorted(params & ID_FILTERS):
            query = {name: foreign[name]}
            alices = world.api.get(op.path, params=query, headers=world.alice.headers)
            bobs = world.api.get(op.path, params=query, headers=world.bob.headers)
            assert alices.status_code == bobs.status_code == 200, (op.path, name)
            # The filter does find Alice's posts, for Alice.
            assert next(v for v in alices.json().values() if isinstance(v, list)), (op.path, name)
            for value in world.secrets_of_alice():
                if value != foreign[name]:
                    assert value not in bobs.text, (op.path, name)
            items = next(v for v in bobs.json().values() if isinstance(v, list))
            assert items == [], (op.path, name)
            checked += 1
    assert checked >= 2


def names_a_credential(op: Operation) -> bool:
    """Whether the operation's body (or an item of it) has a ``credential_id`` field."""
    return op.body_schema is not None and '"credential_id"' in json.dumps(op.body_schema)


def test_a_body_naming_another_clients_credential_is_answered_as_an_unknown_one(
    world: World,
) -> None:
    def bodies(credential_id: str) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
        post = {
            "credential_id": credential_id,
            "target": world.alice.page_id,
            "message": "hijack",
            "publish_at": FAR_FUTURE.isoformat(),
        }
        bob_schedule = world.api.get("/v1/schedules", headers=world.bob.headers).json()
        own = bob_schedule["schedules"][0]["id"] if bob_schedule["schedules"] else None
        assert own is not None
        return {
            ("POST", "/v1/posts"): ("/v1/posts", post),
            ("POST", "/v1/posts/batch"): ("/v1/posts/batch", {"posts": [post]}),
            ("POST", "/v1/schedules"): (
                "/v1/schedules",
                {**post, "cron": "0 9 * * 1", "timezone": "UTC", "publish_at": None},
            ),
            ("PATCH", "/v1/schedules/{schedule_id}"): (
                f"/v1/schedules/{own}",
                {"credential_id": credential_id, "target": world.alice.page_id},
            ),
        }

    bob_schedule = world.api.post(
        "/v1/schedules",
        json={
            "credential_id": world.bob.credential_id,
            "target": world.bob.page_id,
            "message": "bob's",
            "cron": "0 10 * * 2",
            "timezone": "UTC",
        },
        headers=world.bob.headers,
    )
    assert bob_schedule.status_code == 201, bob_schedule.text
    ops = [op for op in operations(world) if not op.is_admin and names_a_credential(op)]
    assert len(ops) >= 4
    unknown_id = new_id(IdPrefix.CREDENTIAL)
    foreign_bodies = bodies(world.alice.credential_id)
    unknown_bodies = bodies(unknown_id)
    for op in ops:
        key = (op.method, op.path)
        assert key in foreign_bodies, f"{op.method} {op.path} names a credential: add a body"
        path, body = foreign_bodies[key]
        body = {k: v for k, v in body.items() if v is not None}
        foreign = world.api.request(op.method, path, json=body, headers=world.bob.headers)
        path, body = unknown_bodies[key]
        body = {k: v for k, v in body.items() if v is not None}
        unknown = world.api.request(op.method, path, json=body, headers=world.bob.headers)
        assert foreign.status_code == 422, (key, foreign.text)
        assert normalized(foreign.text, world.alice.credential_id) == normalized(
            unknown.text, unknown_id
        ), key
    # Nothing was scheduled on Alice's Page by Bob.
    alices = world.api.get(
        "/v1/posts", params={"target": world.alice.page_id}, headers=world.alice.headers
    ).json()["posts"]
    assert {p["message"] for p in alices} == {"alice-only message"}


# --- keys: none, a client's, an admin's --------------------------------------------------------


def all_paths(world: World) -> list[tuple[str, str]]:
    """(method, concrete path) of every route, ids filled with Alice's."""
    ids = world.ids()
    return [(op.method, op.fill(ids)) for op in operations(world)]


def test_every_route_but_the_public_ones_needs_a_key(world: World) -> None:
    checked = 0
    for method, path in all_paths(world):
        if path in PUBLIC:
            continue
        response = world.api.request(method, path, follow_redirects=False)
        if path == "/admin" or path.startswith("/admin/"):
            # The dashboard: a page sends the browser to the sign-in form, an action is
            # 401 (signing out without a session just goes to the form).
            assert response.status_code in (303, 401), (method, path, response.text)
            if response.status_code == 303:
                assert response.headers["location"] == "/admin/login"
            assert "alice-only message" not in response.text
        else:
            assert_problem(response, 401, "unauthorized")
        checked += 1
    assert checked >= 20


def admin_paths(world: World) -> list[tuple[str, str]]:
    return [(m, p) for m, p in all_paths(world) if p.startswith("/v1/admin")]


def test_admin_routes_refuse_a_client_key_with_403(world: World) -> None:
    before = snapshot(world)
    routes = admin_paths(world)
    assert len(routes) >= 5
    for method, path in routes:
        response = world.api.request(method, path, headers=world.alice.headers)
        assert_problem(response, 403, "forbidden")
        assert "alice-only message" not in response.text
    assert snapshot(world) == before


def test_the_dashboard_takes_no_client_key(world: World) -> None:
    dashboard = [(m, p) for m, p in all_paths(world) if p.startswith("/admin") and p not in PUBLIC]
    assert dashboard
    for method, path in dashboard:
        # A bearer key is not how the dashboard signs in, whoever's it is.
        response = world.api.request(
            method, path, headers=world.alice.headers, follow_redirects=False
        )
        assert response.status_code in (303, 401), (method, path)
        assert "alice-only message" not in response.text
    signed_in = world.api.post(
        "/admin/login",
        data={"key": world.alice.headers["Authorization"].removeprefix("Bearer ")},
        follow_redirects=False,
    )
    assert signed_in.status_code == 403
    assert "set-cookie" not in signed_in.headers


def test_admin_routes_work_with_an_admin_key(world: World) -> None:
    for method, path in admin_paths(world):
        # A PATCH needs a body: an empty one changes nothing (a client's quotas).
        body = {} if method == "PATCH" else None
        response = world.api.request(method, path, json=body, headers=world.admin)
        # The post-changing routes act on Alice's post; those run last in the module.
        assert response.status_code in (200, 409), (method, path, response.text)


def test_no_route_of_the_api_hides_from_the_openapi_document() -> None:
    root = Path(offpost.api.__file__).parent
    hidden = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "include_in_schema" in path.read_text()
    ]
    assert hidden == [], "a hidden route escapes these tests: list it here explicitly"
