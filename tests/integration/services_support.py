"""A PostgreSQL cluster and a Redis server of a test's own, to stop and start at will.

The shared servers (5432, 6379) serve every test run on the machine at once; a
test that restarts a server must not take them down. These run on free ports
of 127.0.0.1 from a temporary folder and are removed afterwards. A restart stops
the server and starts it again on the same port with the same data (PostgreSQL)
or none (Redis runs without persistence, as a cache-like broker often does: its
queued messages are gone after the restart).

PostgreSQL refuses to run as root: as root, its commands run as the ``postgres``
system user (``runuser``), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from tests.conftest import free_port

logger = logging.getLogger(__name__)

#: Where Debian keeps initdb and pg_ctl (not on PATH); the newest version wins.
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    """A private server could not be set up, started or stopped."""


def _pg_tool(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"{name} not found (is PostgreSQL installed?)")
    return found


def _run(argv: list[str], *, timeout_s: float = 60) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise ServiceError(f"{' '.join(argv[:4])}... exited {done.returncode}: {done.stderr}")
    return done.stdout


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:``port`` (trust auth, no fsync)."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _cmd(self, *argv: str) -> list[str]:
        return [*self._as_owner, *argv]

    def init(self) -> None:
        if self._as_owner:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        _run(
            self._cmd(
                _pg_tool("initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            )
        )

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
            ]
        )
        _run(
            self._cmd(
                _pg_tool("pg_ctl"),
                "--pgdata",
                str(self.data),
                "--log",
                str(self.log),
                "--options",
                options,
                "--wait",
                "--timeout",
                str(int(START_TIMEOUT_S)),
                "start",
            ),
            timeout_s=START_TIMEOUT_S + 10,
        )
        self._wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Fast shutdown (by default): open sessions are terminated, as in a server restart."""
        _run(
            self._cmd(
                _pg_tool("pg_ctl"),
                "--pgdata",
                str(self.data),
                "--mode",
                mode,
                "--wait",
                "--timeout",
                str(int(STOP_TIMEOUT_S)),
                "stop",
            ),
            timeout_s=STOP_TIMEOUT_S + 10,
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop_for_good(self) -> None:
        """Stop the server whatever it takes: fast, else immediate, else SIGKILL.

        Raises :class:`ServiceError` only when a postmaster of this cluster is
        still alive after all of it (then its folder must not be removed).
        """
        for mode in ("fast", "immediate"):
            if not self.running():
                return
            try:
                self.stop(mode)
                return
            except ServiceError as exc:
                logger.warning("pg_ctl stop --mode %s failed: %s", mode, exc)
        pid = self._postmaster_pid()
        if pid is None:
            return
        # Its children would notice its death and exit; they are not left to that.
        group = [pid, *_children(pid)]
        logger.warning("killing postmaster %d of %s and its children %s", pid, self.data, group[1:])
        for member in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while alive := [member for member in group if _alive(member)]:
            if time.monotonic() > deadline:
                raise ServiceError(f"PostgreSQL processes {alive} of {self.data} survived SIGKILL")
            time.sleep(0.05)

    def _postmaster_pid(self) -> int | None:
        """The live postmaster of this cluster, from ``postmaster.pid``; None if none is."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        # A stale file may name a pid reused since by another process: only a
        # postgres process serving this very folder is ours to kill.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if str(self.data).encode() not in cmdline or not _alive(pid):
            return None
        return pid

    def _wait_ready(self) -> None:
        engine = create_engine(self.url)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.execute(text("SELECT 1"))
                    return
                except Exception as exc:  # still starting
                    if time.monotonic() > deadline:
                        raise ServiceError(f"PostgreSQL on {self.port} did not answer") from exc
                    time.sleep(0.1)
        finally:
            engine.dispose()


class PrivateRedis:
    """A Redis server on 127.0.0.1:``port``, a child of the test process, no persistence."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise ServiceError("redis-server not found (is Redis installed?)")
        # fmt: off
        argv = [
            server,
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(self.root), "--logfile", str(self.root / "redis.log"),
        ]
        # fmt: on
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ServiceError(f"redis-server exited {self.proc.returncode}")
                try:
                    client.ping()
                    return
                except redis.RedisError as exc:
                    if time.monotonic() > deadline:
                        raise ServiceError(f"Redis on {self.port} did not answer") from exc
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: Redis closes every connection and exits (nothing saved); else SIGKILL."""
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("redis-server %d ignored SIGTERM: killing it", proc.pid)
            proc.kill()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise ServiceError(f"redis-server {proc.pid} survived SIGKILL") from exc
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


def _private_folder(prefix: str) -> Path:
    # Not under pytest's tmp_path: its parents are private to root, and the
    # postgres user must reach the cluster's folder.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh cluster, started; stopped (killed if need be) and removed afterwards.

    The folder is removed only once no server runs in it; if one survived every
    way of stopping it, the folder stays and the error says so.
    """
    root = _private_folder("offpost-pg-")
    root.chmod(0o700)
    server = PrivatePostgres(root, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop_for_good()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    """A fresh Redis server, started; stopped (killed if need be) and removed afterwards."""
    root = _private_folder("offpost-redis-")
    server = PrivateRedis(root, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
