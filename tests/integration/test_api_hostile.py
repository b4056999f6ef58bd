"""Hostile input over real HTTP: SQL injection in every filter, NUL bytes, huge and deep bodies.

The API runs under uvicorn on a fresh PostgreSQL database
(:mod:`tests.integration.fuzz_support`) with two clients, alice and bob, each
with a credential, posts, a schedule and a webhook. Alice (or an admin) sends
the input; each answer must be one the API contract allows — a 422 naming the field, a
404, a 413, or a correct (here: empty) list — never a 500, never one of bob's
objects, and afterwards the database still holds exactly what it held.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from offpost.api.app import MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES
from offpost.graph.sandbox import RunningSandbox
from offpost.models import Attempt, Client, Credential, Post, Schedule, Webhook
from tests.integration.api_support import bearer
from tests.integration.fuzz_support import Served, served_api
from tests.integration.posts_support import PROBLEM, db_session

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: Classic injection strings, each aimed at a different kind of SQL built by concatenation.
INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "1) OR (1=1",
    "%' OR '%'='",
    "'; DROP TABLE posts; --",
    "1; DELETE FROM clients",
    "' UNION SELECT id, client_id, target FROM posts --",
    "'||(SELECT key_hash FROM clients LIMIT 1)||'",
    "1' AND pg_sleep(10) IS NULL --",
    "\\'; TRUNCATE credentials CASCADE; --",
    "post_' OR client_id LIKE '%",
    "1 OR 1=1",
    "-1",
    "9" * 40,
    "\x00",
    "x\x00' OR '1'='1",
]

#: Every filter of every list route, and what an injected value must get:
#: "empty" — 200 with nothing in it (a free-text filter no row matches), or
#: "422" — refused, naming that parameter.
FILTERS: list[tuple[str, str, str]] = [
    ("/v1/posts", "status", "422"),
    ("/v1/posts", "target", "empty"),
    ("/v1/posts", "schedule_id", "empty"),
    ("/v1/posts", "limit", "422"),
    ("/v1/posts", "cursor", "422"),
    ("/v1/schedules", "status", "422"),
    ("/v1/schedules", "limit", "422"),
    ("/v1/schedules", "cursor", "422"),
    ("/v1/admin/posts", "status", "422"),
    ("/v1/admin/posts", "client", "422"),
    ("/v1/admin/posts", "target", "empty"),
    ("/v1/admin/posts", "since", "422"),
    ("/v1/admin/posts", "limit", "422"),
    ("/v1/admin/posts", "cursor", "422"),
    ("/v1/admin/credentials", "status", "422"),
    ("/v1/admin/credentials", "expiring_within_hours", "422"),
]
#: Routes that take an object id in the path.
ID_ROUTES = [
    ("GET", "/v1/posts/{}"),
    ("GET", "/v1/posts/{}/attempts"),
    ("PATCH", "/v1/posts/{}"),
    ("DELETE", "/v1/posts/{}"),
    ("POST", "/v1/posts/{}/retry"),
    ("GET", "/v1/credentials/{}"),
    ("DELETE", "/v1/credentials/{}"),
    ("GET", "/v1/schedules/{}"),
    ("PATCH", "/v1/schedules/{}"),
    ("DELETE", "/v1/schedules/{}"),
]
#: What each list route calls its items.
ITEMS = {
    "/v1/posts": "posts",
    "/v1/schedules": "schedules",
    "/v1/admin/posts": "posts",
    "/v1/admin/credentials": "credentials",
}
TABLES = (Client, Credential, Post, Attempt, Schedule, Webhook)


@pytest.fixture(scope="module")
def served(
    postgres_server_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> Iterator[Served]:
    with served_api(postgres_server_url, sandbox_server, redis_url) as api:
        yield api


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client


def row_counts(served: Served) -> dict[str, int]:
    with db_session(served.settings) as session:
        return {
            table.__tablename__: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in TABLES
        }


@pytest.fixture
def unchanged(served: Served) -> Iterator[None]:
    """The test must leave every table with the rows it had."""
    before = row_counts(served)
    yield
    assert row_counts(served) == before


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body


def bobs_ids(served: Served) -> set[str]:
    return {served.bob.credential_id, *served.bob.post_ids, *served.bob.schedule_ids}


# --- SQL injection -----------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "param", "expected"), FILTERS)
@pytest.mark.usefixtures("unchanged")
def test_injection_in_a_filter_is_refused_or_matches_nothing(
    http: httpx.Client, served: Served, path: str, param: str, expected: str
) -> None:
    headers = bearer(served.admin_key if path.startswith("/v1/admin") else served.alice.key)
    for value in INJECTIONS:
        response = http.get(path, params={param: value}, headers=headers)
        if expected == "empty" and "\x00" not in value:
            assert response.status_code == 200, (value, response.text)
            assert response.json()[ITEMS[path]] == [], value
        else:
            assert_problem(response, 422, param)
        assert not bobs_ids(served) & set(json.dumps(response.json()).split('"'))


@pytest.mark.parametrize(("method", "template"), ID_ROUTES)
@pytest.mark.usefixtures("unchanged")
def test_injection_in_an_id_finds_nothing(
    http: httpx.Client, served: Served, method: str, template: str
) -> None:
    body = {"message": "changed"} if method == "PATCH" else None
    for value in INJECTIONS:
        path = template.format(quote(value, safe=""))
        response = http.request(method, path, json=body, headers=served.alice.headers)
        # No id of hers: not found (a NUL is not even a possible id).
        assert_problem(response, 422 if "\x00" in value else 404)


def test_injection_in_a_body_is_stored_as_text(http: httpx.Client, served: Served) -> None:
    alice = served.alice
    message = "'); DROP TABLE posts; -- \" OR 1=1 /* 🧨 */"
    response = http.post(
        "/v1/posts",
        json={"credential_id": alice.credential_id, "target": alice.page_id, "message": message},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    post = http.get(f"/v1/posts/{response.json()['id']}", headers=alice.headers).json()
    assert post["message"] == message
    assert http.delete(f"/v1/posts/{post['id']}", headers=alice.headers).status_code == 200


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("field", ["credential_id", "target"])
def test_injection_in_a_reference_is_refused(
    http: httpx.Client, served: Served, field: str
) -> None:
    alice = served.alice
    for value in INJECTIONS:
        body = {"credential_id": alice.credential_id, "target": alice.page_id, "message": "hi"}
        body[field] = value
        response = http.post("/v1/posts", json=body, headers=alice.headers)
        assert_problem(response, 422, field)


@pytest.mark.usefixtures("unchanged")
def test_injection_in_the_admin_client_filter_matches_no_client(
    http: httpx.Client, served: Served
) -> None:
    admin = bearer(served.admin_key)
    # A name that would match every client if it were pasted into SQL.
    response = http.get("/v1/admin/posts", params={"client": "x' OR name LIKE '%"}, headers=admin)
    assert_problem(response, 422, "client")
    response = http.get("/v1/admin/posts", params={"client": "bob", "limit": 500}, headers=admin)
    ids = {p["id"] for p in response.json()["posts"]}
    assert set(served.bob.post_ids) <= ids
    assert not set(served.alice.post_ids) & ids


def test_the_dashboard_filters_are_inert(http: httpx.Client, served: Served) -> None:
    origin = served.url
    response = http.post("/admin/login", data={"key": served.admin_key}, headers={"Origin": origin})
    assert response.status_code == 303, response.text
    for param in ("status", "target", "client", "cursor", "limit"):
        for value in INJECTIONS:
            response = http.get("/admin", params={param: value})
            if response.status_code == 422:  # a NUL, or longer than the parameter may be
                assert_problem(response, 422, param)
                continue
            assert "\x00" not in value
            assert response.status_code == 200, (param, value, response.text)
            assert "Sign in" not in response.text
    http.cookies.clear()


def test_the_database_is_intact_after_the_injections(http: httpx.Client, served: Served) -> None:
    counts = row_counts(served)
    assert counts["clients"] == 3
    assert counts["credentials"] == 2
    for tenant in (served.alice, served.bob):
        posts = http.get("/v1/posts", params={"limit": 500}, headers=tenant.headers).json()
        assert set(tenant.post_ids) <= {p["id"] for p in posts["posts"]}


# --- NUL bytes (PostgreSQL text cannot hold them) ------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/posts", {"message": "a\x00b"}, "message"),
        ("/v1/posts", {"link": "https://example.com/\x00"}, "link"),
        ("/v1/posts/batch", {"message": "a\x00b"}, "posts[1].message"),
        ("/v1/credentials", {"access_token": "EAA\x00"}, "access_token"),
        ("/v1/schedules", {"message": "\x00", "cron": "0 9 * * 1"}, "message"),
        ("/v1/schedules/preview", {"cron": "0 9 * * 1", "timezone": "UTC\x00"}, "timezone"),
        ("/v1/webhook", {"url": "https://hooks.example.com/\x00"}, "url"),
    ],
)
def test_a_nul_in_a_body_string_is_a_422(
    http: httpx.Client, served: Served, path: str, body: dict[str, Any], field: str
) -> None:
    alice = served.alice
    post = {"credential_id": alice.credential_id, "target": alice.page_id, "message": "ok"}
    if path == "/v1/posts":
        sent: dict[str, Any] = post | body
    elif path == "/v1/posts/batch":
        sent = {"posts": [post, post | body]}
    elif path == "/v1/schedules":
        sent = post | {"timezone": "Europe/Berlin"} | body
    elif path == "/v1/schedules/preview":
        sent = body
    else:
        sent = body
    method = "PUT" if path == "/v1/webhook" else "POST"
    response = http.request(method, path, json=sent, headers=alice.headers)
    assert_problem(response, 422, field)


@pytest.mark.usefixtures("unchanged")
def test_a_nul_in_a_change_is_a_422(http: httpx.Client, served: Served) -> None:
    alice = served.alice
    post_id, schedule_id = alice.post_ids[2], alice.schedule_ids[0]
    response = http.patch(f"/v1/posts/{post_id}", json={"message": "\x00"}, headers=alice.headers)
    assert_problem(response, 422, "message")
    response = http.patch(
        f"/v1/schedules/{schedule_id}", json={"target": "1\x00"}, headers=alice.headers
    )
    assert_problem(response, 422, "target")


# --- oversized bodies ----------------------------------------------------------------------------


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` and ``body`` on a plain socket; the answer's status, headers and body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    header_text, _, content = data.partition(b"\r\n\r\n")
    lines = header_text.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, content


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _head(method: str, path: str, key: str, **headers: str) -> str:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("path", "size"),
    [("/v1/posts", MAX_BODY_BYTES + 1), ("/v1/posts/batch", 50 * 1024 * 1024)],
)
def test_a_declared_oversized_body_is_refused_before_it_is_sent(
    served: Served, path: str, size: int
) -> None:
    # Only the first 64 KiB follow the head: the answer must not wait for the rest.
    head = _head("POST", path, served.alice.key, Content_Length=str(size))
    status, headers, content = raw_request(served.url, head, b"[" * 65536)
    assert status == 413
    assert headers["content-type"] == PROBLEM
    assert json.loads(content)["code"] == "payload_too_large"


@pytest.mark.usefixtures("unchanged")
def test_a_streamed_oversized_body_is_refused(served: Served) -> None:
    chunk = b" " * 65536
    chunks = MAX_BODY_BYTES // len(chunk) + 2
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(chunks)) + b"0\r\n\r\n"
    head = _head("POST", "/v1/posts", served.alice.key, Transfer_Encoding="chunked")
    status, _, content = raw_request(served.url, head, body)
    assert status == 413
    assert json.loads(content)["code"] == "payload_too_large"


@pytest.mark.usefixtures("unchanged")
def test_a_batch_of_100k_posts_is_refused(http: httpx.Client, served: Served) -> None:
    alice = served.alice
    post = {"credential_id": alice.credential_id, "target": alice.page_id, "message": "x"}
    body = json.dumps({"posts": [post] * 100_000}).encode()
    assert MAX_BODY_BYTES < len(body) < MAX_BATCH_BODY_BYTES  # parsed, then refused
    response = http.post(
        "/v1/posts/batch",
        content=body,
        headers=alice.headers | {"Content-Type": "application/json"},
    )
    assert_problem(response, 422, "posts")
    small = json.dumps({"posts": [{}] * 100_000}).encode()
    response = http.post(
        "/v1/posts/batch",
        content=small,
        headers=alice.headers | {"Content-Type": "application/json"},
    )
    assert_problem(response, 422, "posts")


# --- deeply nested and malformed JSON ------------------------------------------------------------


def nested_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/posts", "POST"),
        ("/v1/posts/batch", "POST"),
        ("/v1/credentials", "POST"),
        ("/v1/schedules", "POST"),
        ("/v1/schedules/preview", "POST"),
        ("/v1/webhook", "PUT"),
        ("/v1/posts/{post}", "PATCH"),
    ],
)
def test_deep_or_malformed_json_is_a_422(
    http: httpx.Client, served: Served, path: str, method: str
) -> None:
    path = path.format(post=served.alice.post_ids[2])
    bodies = [
        nested_list(100_000),
        nested_object(100_000),
        b'{"message": ' + nested_list(50_000) + b"}",
        b'{"posts": [' + nested_object(900) + b"]}",
        b'{"target": ' + b"9" * 5000 + b"}",  # past Python's int-string limit
        b'{"target": 1e999999}',
        b"\xff\xfe\x00{",
        b'{"message": "\xed\xa0\x80"}',  # a lone surrogate, as UTF-8 bytes
        b"{" * 10 + b"]",
        b"",
    ]
    for body in bodies:
        response = http.request(
            method,
            path,
            content=body,
            headers=served.alice.headers | {"Content-Type": "application/json"},
        )
        assert_problem(response, 422)
    assert http.get("/healthz").status_code == 200


# --- times at the ends of the calendar -----------------------------------------------------------


def forged_cursor(stamp: str, object_id: str) -> str:
    """A cursor in the API's own format (its checksum is no secret), around ``stamp``."""
    payload = f"{stamp}|{object_id}"
    check = hashlib.sha256(payload.encode()).hexdigest()[:8]
    return base64.urlsafe_b64encode(f"{payload}|{check}".encode()).decode().rstrip("=")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_cursor_past_the_calendar_is_a_422(
    http: httpx.Client, served: Served, stamp: str
) -> None:
    alice = served.alice
    for path, object_id in [
        ("/v1/posts", alice.post_ids[0]),
        ("/v1/schedules", alice.schedule_ids[0]),
    ]:
        cursor = forged_cursor(stamp, object_id)
        response = http.get(path, params={"cursor": cursor}, headers=alice.headers)
        assert_problem(response, 422, "cursor")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "rule",
    [
        {"cron": "0 9 * * *", "timezone": "UTC", "start_at": "0001-01-01T00:00:00Z"},
        {"rrule": "FREQ=DAILY", "timezone": "America/Adak", "start_at": "0001-01-01T00:00:00Z"},
        {"cron": "0 9 * * *", "timezone": "UTC", "after": "0001-01-01T00:00:00Z"},
        {"cron": "59 23 * * *", "timezone": "Pacific/Kiritimati", "start_at": "9999-12-30T00:00Z"},
        {"rrule": "FREQ=HOURLY", "timezone": "UTC", "start_at": "9999-12-31T00:00:00Z"},
    ],
)
def test_a_rule_at_the_ends_of_the_calendar_is_answered(
    http: httpx.Client, served: Served, rule: dict[str, Any]
) -> None:
    rule = {"start_at": "2026-01-05T09:00:00+01:00"} | rule | {"limit": 1000}
    response = http.post("/v1/schedules/preview", json=rule, headers=served.alice.headers)
    if response.status_code == 422:
        assert_problem(response, 422)
        assert response.json()["errors"][0]["field"] in ("start_at", "rrule", "cron")
        return
    assert response.status_code == 200, response.text
    occurrences = response.json()["occurrences"]
    assert occurrences == sorted(occurrences, key=datetime.fromisoformat)
    assert occurrences
    assert len(set(occurrences)) == len(occurrences)
