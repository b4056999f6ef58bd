"""``offpost up``: the whole product in one process on embedded defaults.

One process holds what a distributed deployment spreads over many: the HTTP
API (uvicorn, main thread), one dispatcher (a thread), a real Celery worker (a
``WorkController`` on the thread pool, in a thread) and, with no Facebook app
configured, the Graph sandbox (a thread). The broker is kombu's in-memory
transport unless ``OFFPOST_BROKER_URL`` names one: a message lost with the
process is harmless, because the database says which posts are queued and the
dispatcher re-sends them after a restart. Data lives in ``./offpost.db``
(SQLite), the encryption key in ``./.offpost-key``, the sandbox app's
credentials in ``./.offpost-sandbox.json``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from celery import Celery
from celery.worker import WorkController
from celery.worker import state as worker_state
from cryptography.fernet import Fernet
from sqlalchemy import select

from offpost.api.app import create_app
from offpost.cli.roles import worker_config
from offpost.errors import OffpostError
from offpost.graph.sandbox import running_sandbox
from offpost.graph.sandbox.server import StoppableServer
from offpost.models import Client, hash_api_key, make_engine, make_sessionmaker, new_api_key
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key
from offpost.redact import hide_password
from offpost.scheduler.dispatcher import Dispatcher, DispatcherConfig
from offpost.scheduler.housekeeping import build_housekeeping
from offpost.scheduler.wake import LocalWaker
from offpost.settings import Settings
from offpost.workers.app import install_worker_tasks, make_celery, send_publish
from offpost.workers.followups import send_followups
from offpost.workers.insights import send_insights
from offpost.workers.webhooks import send_deliveries, webhook_queue

logger = logging.getLogger(__name__)

KEY_FILE = ".offpost-key"
SANDBOX_FILE = ".offpost-sandbox.json"
EMBEDDED_BROKER = "memory://"
ADMIN_CLIENT = "admin"


class EmbeddedStartError(OffpostError):
    """``offpost up`` could not start one of its parts."""


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail with one clear line before starting anything if ``port`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise EmbeddedStartError(
                f"port {port} on {host} ({what}) is in use: stop what holds it or pick "
                "another with --port"
            ) from None


def read_or_create_key(folder: Path) -> str:
    """The Fernet key in ``folder/.offpost-key``, created (mode 600) on first start."""
    path = folder / KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        try:
            Fernet(key)
        except ValueError:
            raise EmbeddedStartError(
                f"{path} does not hold a Fernet key; restore it from a backup (without it "
                "the stored tokens cannot be read) or set OFFPOST_ENCRYPTION_KEYS"
            ) from None
        return key
    key = new_encryption_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def read_or_create_sandbox_app(folder: Path) -> tuple[str, str]:
    """The sandbox app's id and secret, kept across restarts so stored data stays coherent."""
    path = folder / SANDBOX_FILE
    if path.exists():
        data = json.loads(path.read_text())
        return str(data["app_id"]), str(data["app_secret"])
    app_id = str(10**14 + secrets.randbelow(9 * 10**14))
    app_secret = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"app_id": app_id, "app_secret": app_secret}, handle)
    return app_id, app_secret


def ensure_admin_client(settings: Settings) -> str | None:
    """Create the admin API client on first start; its key (else None: it exists already)."""
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            if session.scalars(select(Client.id).where(Client.is_admin.is_(True))).first():
                return None
            key = new_api_key()
            session.add(Client(name=ADMIN_CLIENT, key_hash=hash_api_key(key), is_admin=True))
            return key
    finally:
        engine.dispose()


@dataclass
class Announcement:
    api_url: str
    sandbox_url: str | None
    sandbox_app_id: str | None
    admin_key: str | None
    database_url: str
    key_file: str | None
    broker_url: str


def describe(a: Announcement) -> list[str]:
    """What ``up`` prints once everything runs."""
    lines = [
        "offpost is up",
        f"  API        {a.api_url}   (OpenAPI at {a.api_url}/docs)",
        f"  dashboard  {a.api_url}/admin",
        f"  database   {hide_password(a.database_url)}",
        f"  broker     {hide_password(a.broker_url)}",
    ]
    if a.key_file:
        lines.append(f"  key file   {a.key_file} (back it up: without it stored tokens are lost)")
    if a.sandbox_url:
        lines.append(
            f"  Graph      sandbox at {a.sandbox_url} (app id {a.sandbox_app_id}); "
            "set OFFPOST_APP_ID and OFFPOST_APP_SECRET to use the real Graph API"
        )
    if a.admin_key:
        lines += [
            "  an admin API key was created; it is shown only this once:",
            f"  {a.admin_key}",
        ]
    lines.append("Press Ctrl-C to stop.")
    return lines


@contextmanager
def in_process_worker(
    app: Celery, *, concurrency: int, name: str = "offpost-up"
) -> Iterator[WorkController]:
    """A real Celery worker on the thread pool, consuming ``app``'s queue in a thread of
    this process."""
    worker = WorkController(
        app=app,
        pool="threads",
        concurrency=concurrency,
        hostname=f"{name}@{os.uname().nodename}",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name=f"celery-{name}", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        # A warm shutdown: tasks in progress finish, nothing new is taken.
        worker_state.should_stop = 0
        thread.join(timeout=60)
        worker_state.should_stop = None


@contextmanager
def dispatcher_thread(dispatcher: Dispatcher) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="dispatcher", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        dispatcher.waker.close()
        thread.join(timeout=30)


def run_embedded(
    settings: Settings,
    *,
    folder: Path,
    host: str,
    port: int,
    sandbox_port: int,
    force_sandbox: bool,
    announce: Callable[[str], Any],
) -> None:
    """Run everything until Ctrl-C (or SIGTERM); returns after a clean stop."""
    use_sandbox = force_sandbox or settings.app_id is None or settings.app_secret is None
    # Before anything is created on disk: a taken port is one line, not a traceback.
    check_port_free(host, port, "the API")
    if use_sandbox:
        check_port_free(host, sandbox_port, "the Graph sandbox")
    overrides: dict[str, Any] = {}
    key_file = None
    if settings.encryption_keys is None:
        overrides["encryption_keys"] = read_or_create_key(folder)
        key_file = str(folder / KEY_FILE)
    if not settings.broker_url_is_set:
        overrides["broker_url"] = EMBEDDED_BROKER

    with ExitStack() as stack:
        sandbox = None
        if use_sandbox:
            app_id, app_secret = read_or_create_sandbox_app(folder)
            sandbox = stack.enter_context(
                running_sandbox(app_id, app_secret, host=host, port=sandbox_port)
            )
            overrides.update(graph_url=sandbox.url, app_id=app_id, app_secret=app_secret)
        # Rebuilt, not copied: the overrides go through the same validation.
        settings = Settings(
            **{name: getattr(settings, name) for name in settings.model_fields_set}, **overrides
        )
        upgrade_to_head(settings.database_url)
        admin_key = ensure_admin_client(settings)

        celery_app = make_celery(
            settings.broker_url, lease_s=settings.lease_s, queue=settings.queue
        )
        stack.callback(install_worker_tasks(celery_app, worker_config(settings)).close)
        stack.enter_context(in_process_worker(celery_app, concurrency=4))
        # Deliveries on their own queue and threads, as `offpost webhooks` runs them: a
        # slow receiver holds no publishing slot. A Celery app consumes one set of
        # queues, so the deliveries' worker has an app of its own on the same broker.
        webhook_app = make_celery(
            settings.broker_url, lease_s=settings.lease_s, queue=webhook_queue(settings.queue)
        )
        stack.callback(install_worker_tasks(webhook_app, worker_config(settings)).close)
        stack.enter_context(
            in_process_worker(
                webhook_app, concurrency=settings.webhook_concurrency, name="offpost-up-webhooks"
            )
        )

        engine = make_engine(settings.database_url)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        waker = LocalWaker()
        housekeeping, close_housekeeping = build_housekeeping(
            settings,
            sessions,
            partial(send_deliveries, celery_app),
            partial(send_followups, celery_app),
            partial(send_insights, celery_app),
        )
        stack.callback(close_housekeeping)
        dispatcher = Dispatcher(
            sessions,
            partial(send_publish, celery_app),
            config=DispatcherConfig(
                dispatch_batch=settings.dispatch_batch,
                message_batch=settings.message_batch,
                requeue_after=timedelta(seconds=settings.requeue_after_s),
                max_sleep_s=settings.dispatcher_max_sleep_s,
            ),
            waker=waker,
            # Schedules, webhook deliveries and the daily token check, before each claim.
            before_tick=housekeeping,
        )
        stack.enter_context(dispatcher_thread(dispatcher))

        # A signal only asks the server to stop; the shutdown below then runs in full.
        server = StoppableServer(
            uvicorn.Config(
                create_app(settings, waker=waker),
                host=host,
                port=port,
                access_log=False,
                log_config=None,
            )
        )
        original_startup = server.startup

        async def startup(sockets: Any = None) -> None:
            await original_startup(sockets=sockets)
            if server.started:
                for line in describe(
                    Announcement(
                        api_url=f"http://{host}:{port}",
                        sandbox_url=sandbox.url if sandbox else None,
                        sandbox_app_id=sandbox.app_id if sandbox else None,
                        admin_key=admin_key,
                        database_url=settings.database_url,
                        key_file=key_file,
                        broker_url=settings.broker_url,
                    )
                ):
                    announce(line)

        server.startup = startup  # type: ignore[method-assign]
        try:
            server.run()
        except SystemExit:
            # uvicorn exits when it cannot start; say so in one line instead.
            raise EmbeddedStartError(f"the API could not start on {host}:{port}") from None
        if not server.started:
            raise EmbeddedStartError(f"the API could not listen on {host}:{port}")
        announce("stopping: letting posts in flight finish")
    announce("offpost stopped")
