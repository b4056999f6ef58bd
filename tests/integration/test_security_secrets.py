"""Secrets at rest and on the error paths.

- At rest (SQLite and PostgreSQL): every row of every table, read as raw SQL
  past the ORM's types, holds no token, key, code or secret in plaintext; every
  encrypted column holds Fernet ciphertext that the configured key opens; API
  keys are stored as their SHA-256 only.
- On the error paths: a bad or expired token, and Graph errors whose messages
  quote the tokens and the app secret, reach no response body or header, no
  ``last_error`` and no attempt.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, text

from offpost.graph.sandbox import RunningSandbox
from offpost.models import PostStatus, make_engine
from offpost.models.keys import encrypted_columns
from offpost.models.types import new_encryption_key
from offpost.settings import Settings
from tests.integration.api_support import add_client, api_client, bearer, make_settings
from tests.integration.pipeline_support import (
    Pipeline,
    new_client,
)
from tests.integration.posts_support import assert_problem
from tests.integration.sandbox_support import TIMEOUT, SandboxClient, sandbox_client
from tests.secrets_scan import register


def sandbox_tokens(server: RunningSandbox, user_id: str) -> list[str]:
    """Every token the sandbox gave this user: short-lived, long-lived, and their Page tokens."""
    world = server.world
    with world.lock:
        tokens = list(world.users[user_id].tokens)
        return tokens + [p for t in tokens for p in world.tokens[t].page_tokens.values()]


def raw_values(database_url: str) -> list[tuple[str, str, str]]:
    """(table, column, text) of every non-null value of every table, read as plain SQL."""
    engine = make_engine(database_url)
    metadata = MetaData()
    metadata.reflect(engine)
    out = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(text(f'SELECT * FROM "{table.name}"')):
                for column, value in row._mapping.items():
                    if value is not None:
                        out.append((table.name, str(column), str(value)))
    engine.dispose()
    return out


def is_fernet(value: str) -> bool:
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except ValueError:
        return False
    return raw[:1] == b"\x80" and len(raw) >= 57


def test_raw_rows_hold_no_plaintext_secret(
    database_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> None:
    fernet_key = new_encryption_key()
    settings = make_settings(
        database_url, sandbox_server, redis_url, encryption_keys=fernet_key, broker_url="memory://"
    )
    with api_client(settings) as api, sandbox_client(sandbox_server) as graph:
        api_key = add_client(settings, "alice")
        alice = bearer(api_key)
        # A token handed over inside a post (with an idempotency key), and one on its own.
        first = graph.mint_user(pages=2)
        post = api.post(
            "/v1/posts",
            json={
                "access_token": first["access_token"],
                "target": first["pages"][0]["id"],
                "message": "hello",
            },
            headers={**alice, "Idempotency-Key": "at-rest-1"},
        )
        assert post.status_code == 201, post.text
        second = graph.mint_user(pages=1)
        credential = api.post(
            "/v1/credentials", json={"access_token": second["access_token"]}, headers=alice
        )
        assert credential.status_code == 201, credential.text
        code = api.post(
            f"/v1/credentials/{credential.json()['id']}/client-code",
            json={"redirect_uri": "https://client.example/cb"},
            headers=alice,
        )
        assert code.status_code == 200, code.text
        hook = api.put("/v1/webhook", json={"url": "https://client.example/hook"}, headers=alice)
        webhook_secret = hook.json()["secret"]
        register(api_key, webhook_secret, code.json()["code"])
        tokens = sandbox_tokens(sandbox_server, first["user_id"]) + sandbox_tokens(
            sandbox_server, second["user_id"]
        )
    assert len(tokens) == 2 * 2 + 3  # short and long-lived user tokens, and 3 Page tokens
    plaintexts = [
        *tokens,
        api_key,
        webhook_secret,
        code.json()["code"],
        sandbox_server.app_secret,
        fernet_key,
    ]

    values = raw_values(database_url)
    assert len(values) > 50
    for table, column, value in values:
        for secret in plaintexts:
            assert secret not in value, f"{table}.{column} holds a secret in plaintext"

    # Every encrypted column holds ciphertext that this key opens, and it is the tokens.
    cipher = Fernet(fernet_key.encode())
    opened: set[str] = set()
    encrypted = {(c.table.name, c.column.name) for c in encrypted_columns()}
    assert encrypted >= {
        ("credentials", "user_token"),
        ("credential_pages", "page_token"),
        ("webhooks", "secret"),
    }
    for table, column, value in values:
        if (table, column) in encrypted:
            assert is_fernet(value), f"{table}.{column} is not Fernet ciphertext"
            opened.add(cipher.decrypt(value.encode()).decode())
    long_lived_and_pages = {
        t for t in tokens if t not in (first["access_token"], second["access_token"])
    }
    assert opened == long_lived_and_pages | {webhook_secret}

    # API keys: their SHA-256 alone.
    hashes = [v for t, c, v in values if (t, c) == ("clients", "key_hash")]
    assert hashes == [hashlib.sha256(api_key.encode()).hexdigest()]


# --- the error paths -----------------------------------------------------------------------------


@pytest.fixture
def api_and_graph(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> Iterator[tuple[TestClient, SandboxClient, Settings]]:
    settings = make_settings(postgres_url, sandbox_server, redis_url)
    with api_client(settings) as api, sandbox_client(sandbox_server) as graph:
        yield api, graph, settings
        graph.control("DELETE", "/faults")


def assert_no_secret(response: httpx.Response, secrets_: list[str]) -> None:
    exposed = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    for secret in secrets_:
        assert secret not in exposed, f"a secret in the answer to {response.request.url.path}"


def test_error_answers_carry_no_token_or_secret(
    api_and_graph: tuple[TestClient, SandboxClient, Settings], sandbox_server: RunningSandbox
) -> None:
    api, graph, settings = api_and_graph
    alice = bearer(add_client(settings, "alice"))
    app_secret = sandbox_server.app_secret

    # A token Graph never issued, and a malformed one.
    made_up = "EAA" + secrets.token_hex(40)
    register(made_up)
    for token in (made_up, "not a token at all " + app_secret):
        response = api.post("/v1/credentials", json={"access_token": token}, headers=alice)
        assert_problem(response, 422, "invalid_token")
        assert_no_secret(response, [made_up, app_secret])

    # Graph errors that quote the token and the app secret back, at each step of the intake.
    for path, status, code in (
        ("debug_token", 400, 190),
        ("oauth/access_token", 500, 2),
        ("me/accounts", 400, 100),
    ):
        user = graph.mint_user(pages=1)
        token = user["access_token"]
        graph.fault(
            path=path,
            times=1,
            status=status,
            error={
                "message": f"bad access_token {token} for app {app_secret}: {token}",
                "type": "OAuthException",
                "code": code,
                "fbtrace_id": "AbCdEf",
            },
        )
        response = api.post("/v1/credentials", json={"access_token": token}, headers=alice)
        assert response.status_code in (422, 502, 503), (path, response.text)
        assert_no_secret(response, [token, app_secret])
        graph.control("DELETE", "/faults")

    # An expired token (short-lived tokens live one hour).
    user = graph.mint_user(pages=1)
    graph.advance(2 * 3600)
    try:
        expired = api.post(
            "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
        )
    finally:
        graph.control("POST", "/reset")  # the clock cannot go back; a new world can
    assert_problem(expired, 422, "invalid_token")
    assert_no_secret(expired, [user["access_token"], app_secret])


@pytest.mark.timeout(120)
def test_graph_errors_quoting_tokens_reach_no_last_error_attempt_or_answer(
    pipeline: Pipeline, sandbox_server: RunningSandbox
) -> None:
    with httpx.Client(base_url=sandbox_server.url, timeout=TIMEOUT) as http:
        graph = SandboxClient(sandbox_server, http)
        client_id, key = new_client(pipeline, "quoted")
        user = graph.mint_user(pages=1)
        page_id = user["pages"][0]["id"]
        with pipeline.api() as api:
            credential_id = pipeline.credential(api, key, user)
        tokens = sandbox_tokens(sandbox_server, user["user_id"])
        quoted = " ".join(tokens) + " " + sandbox_server.app_secret
        # A permanent error (failed) whose message quotes every token and the app secret.
        graph.fault(
            path=f"/{page_id}/feed$",
            method="POST",
            times=1,
            status=400,
            error={"message": f"(#100) Invalid parameter: {quoted}", "code": 100},
        )
        [post_id] = pipeline.add_posts(client_id, credential_id, page_id, ["quoted error"])
        [post] = pipeline.wait_status([post_id], {PostStatus.FAILED})
        graph.control("DELETE", "/faults")
    assert post.last_error is not None
    assert post.last_error["code"] == 100
    secrets_ = [*tokens, sandbox_server.app_secret]
    attempts = pipeline.attempts(post_id)
    assert attempts
    stored = str(post.last_error) + "".join(str(a.error_message) for a in attempts)
    for secret in secrets_:
        assert secret not in stored
    with pipeline.api() as api:
        for path in (f"/v1/posts/{post_id}", f"/v1/posts/{post_id}/attempts"):
            response = api.get(path, headers=key)
            assert response.status_code == 200
            assert "Invalid parameter" in response.text
            assert_no_secret(response, secrets_)
    with pipeline.sessions() as session:
        rows = session.execute(text("SELECT last_error FROM posts")).scalars().all()
    assert all(secret not in str(rows) for secret in secrets_)
