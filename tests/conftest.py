"""Fixtures shared by every test layer.

Real services come from ``OFFPOST_TEST_DATABASE_URL`` (a PostgreSQL server URL
whose user may create databases) and ``OFFPOST_TEST_REDIS_URL``. Locally a
missing service skips the tests that need it; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# No token, key or app secret in any log line of the run (see the module).
pytest_plugins = ["tests.secrets_scan", "pytester"]

DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"

# Read before the autouse fixture below wipes OFFPOST_* from the environment.
TEST_DATABASE_URL = os.environ.get("OFFPOST_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
TEST_REDIS_URL = os.environ.get("OFFPOST_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_missing(what: str, exc: BaseException) -> None:
    """Skip locally, fail under CI: a missing service is never silently ignored there."""
    message = f"{what} is not reachable ({type(exc).__name__}: {exc})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _clean_offpost_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees the developer's OFFPOST_* variables or their .env file."""
    for name in list(os.environ):
        if name.startswith("OFFPOST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The admin URL of the test PostgreSQL server (checked once per session)."""
    try:
        engine = create_engine(TEST_DATABASE_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        service_missing(f"PostgreSQL at {make_url(TEST_DATABASE_URL).render_as_string()}", exc)
    return TEST_DATABASE_URL


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server; yield its URL; drop it afterwards."""
    name = f"offpost_test_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with fresh_postgres_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    """A SQLite file URL in a fresh temporary folder (the file does not exist yet)."""
    return f"sqlite:///{os.path.join(tmp_path, 'offpost.db')}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL (checked once per session)."""
    try:
        client = redis.Redis.from_url(TEST_REDIS_URL)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001
        service_missing(f"Redis at {TEST_REDIS_URL}", exc)
    return TEST_REDIS_URL


#: Databases of the test Redis server that tests use as a broker of their own,
#: besides TEST_REDIS_URL's: 12 (the metrics pipeline) and 13 (the admin views).
PRIVATE_REDIS_DATABASES = (12, 13)


def sibling_redis_url(redis_url: str, database: int) -> str:
    """``redis_url``'s server, another database of it."""
    return f"{redis_url.rsplit('/', 1)[0]}/{database}"


@pytest.fixture(autouse=True)
def _no_failed_authentications_counted(request: pytest.FixtureRequest) -> None:
    """Each test that uses Redis starts with no failed authentications counted.

    Every TestClient calls from the same address ("testclient"), and the API
    slows an address for every key once it has failed too often in a minute
    (the counts live in the broker's Redis database, whichever the test chose):
    without this, one test's deliberate 401s would turn another's requests into
    429s. Limiters in memory live and die with their app, so need nothing.
    """
    if "redis_url" not in request.fixturenames:
        return
    urls = [
        TEST_REDIS_URL,
        *(sibling_redis_url(TEST_REDIS_URL, n) for n in PRIVATE_REDIS_DATABASES),
    ]
    for url in urls:
        client = redis.Redis.from_url(url)
        try:
            names = list(client.scan_iter("offpost:ratelimit:authfail:*", count=1000))
            if names:
                client.delete(*names)
        except redis.RedisError:
            pass  # the redis_url fixture reports a missing server
        finally:
            client.close()
