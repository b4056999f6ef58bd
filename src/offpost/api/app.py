"""The HTTP API application: ``create_app(settings)`` builds it, nothing happens at import.

The lifespan builds the process's resources — the database engine (with the
token cipher), one ``httpx.Client`` for Graph, the rate limiter — and refuses to
start on an outdated schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from fastapi import Depends, FastAPI
from sqlalchemy.engine import Engine, make_url

from offpost import __version__
from offpost.api import (
    admin,
    credentials,
    health,
    insights,
    media,
    posts,
    quotas,
    schedules,
    webhooks,
)
from offpost.api import metrics as metrics_route
from offpost.api.dashboard import insights as dashboard_insights
from offpost.api.dashboard import routes as dashboard
from offpost.api.deps import refuse_nul_characters
from offpost.api.exporter import MetricsExporter, QueueProbe
from offpost.api.fastdb import AsyncDatabase
from offpost.api.limits import (
    BodyLimitMiddleware,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from offpost.api.openapi import install_openapi
from offpost.api.problems import install_problem_handlers
from offpost.api.wake import DispatcherWake
from offpost.graph.client import GraphClient, make_http_client
from offpost.models import make_engine, make_sessionmaker
from offpost.models.clock import DatabaseClock
from offpost.models.migrate import ensure_schema_current
from offpost.redact import install_log_scrubbing
from offpost.scheduler.wake import Waker, make_waker
from offpost.settings import Settings

#: Bodies larger than this are refused with 413 before they are read in full.
MAX_BODY_BYTES = 1024 * 1024
#: A batch of 1000 posts may be larger.
MAX_BATCH_BODY_BYTES = 32 * 1024 * 1024


def make_rate_limiter(settings: Settings) -> RateLimiter:
    """Shared through Redis when the broker is Redis; per process otherwise.

    The Redis limiter also gets an asyncio client, for the authentications made
    on the event loop (``POST /v1/posts``); it connects on first use.
    """
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(
            redis.Redis.from_url(settings.broker_url, socket_timeout=2),
            async_client=redis.asyncio.Redis.from_url(settings.broker_url, socket_timeout=2),
        )
    return MemoryRateLimiter()


#: The most connections one API process keeps to PostgreSQL (the default pool's 5 + 10).
MAX_API_CONNECTIONS = 15


def api_pool_options(database_url: str) -> dict[str, Any]:
    """A connection pool that keeps the connections the request threads use.

    SQLAlchemy's default pool keeps 5 connections and closes each of its 10
    "overflow" connections as soon as it is returned: with more than 5 requests
    at once, nearly every request opened a new PostgreSQL connection (a backend
    process) and closed it again. Here the pool keeps them all, with the same
    bound on how many exist (requests beyond it wait for one, as before).
    """
    if make_url(database_url).get_backend_name() != "postgresql":
        return {}
    return {"pool_size": MAX_API_CONNECTIONS, "max_overflow": 0}


def make_loop_database(database_url: str, engine: Engine) -> AsyncDatabase | None:
    """The connections of the work done on the event loop: PostgreSQL only (SQLite's
    driver has no asyncio side; there every route runs in the thread pool)."""
    if engine.dialect.name != "postgresql":
        return None
    return AsyncDatabase(database_url, engine.dialect)


async def _close_loop_resources(limiter: RateLimiter, database: AsyncDatabase | None) -> None:
    limiter.close()
    await limiter.aclose()
    if database is not None:
        await database.close()


def create_app(
    settings: Settings, *, check_schema: bool = True, waker: Waker | None = None
) -> FastAPI:
    """The offpost HTTP API for ``settings`` (which must name the app and the keys).

    ``waker`` wakes the dispatchers when a post falls due soon; by default one
    that reaches dispatchers in other processes through the broker's Redis.
    """
    settings.require("app_id", "app_secret", "encryption_keys")
    install_log_scrubbing([settings.app_secret.get_secret_value()] if settings.app_secret else [])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url,
            encryption_keys=settings.encryption_key_list(),
            **api_pool_options(settings.database_url),
        )
        http = make_http_client(settings.graph_timeout_s)
        queue = QueueProbe(settings.broker_url, settings.queue)
        dispatcher_waker = waker or make_waker(settings.broker_url)
        limiter = make_rate_limiter(settings)
        loop_database = make_loop_database(settings.database_url, engine)
        try:
            if check_schema:
                ensure_schema_current(engine)
            app.state.settings = settings
            app.state.engine = engine
            app.state.sessions = make_sessionmaker(engine)
            app.state.broker_url = settings.broker_url
            app.state.limiter = limiter
            app.state.queue = queue
            app.state.metrics = MetricsExporter(
                app.state.sessions, queue, metrics_dir=settings.metrics_dir
            )
            app.state.loop_database = loop_database
            app.state.wake_dispatcher = DispatcherWake(
                dispatcher_waker, settings.dispatcher_max_sleep_s
            )
            app.state.graph = GraphClient(
                http,
                graph_url=settings.graph_url,
                version=settings.graph_version,
                app_id=settings.app_id or "",
                app_secret=settings.app_secret.get_secret_value() if settings.app_secret else "",
                appsecret_time=settings.appsecret_time,
                # Timed proofs on the database's clock, as workers and dispatchers sign.
                clock=DatabaseClock(app.state.sessions).timestamp,
            )
            yield
        finally:
            if waker is None:  # a waker passed in belongs to the caller
                dispatcher_waker.close()
            http.close()
            queue.close()
            await _close_loop_resources(limiter, loop_database)
            engine.dispose()

    app = FastAPI(
        title="offpost",
        version=__version__,
        summary="Schedule Facebook Page posts; offpost publishes them later from the server.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_characters)],
    )
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(credentials.router)
    app.include_router(posts.router)
    app.include_router(insights.router)
    app.include_router(schedules.router)
    app.include_router(media.router)
    app.include_router(quotas.router)
    app.include_router(webhooks.router)
    app.include_router(admin.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard_insights.router)
    app.include_router(metrics_route.router)
    body_limits = {"/v1/posts/batch": MAX_BATCH_BODY_BYTES}
    app.add_middleware(
        BodyLimitMiddleware,
        default_bytes=MAX_BODY_BYTES,
        limits=body_limits,
        streamed=media.streams_its_body,
    )
    install_openapi(app, lambda path: body_limits.get(path, MAX_BODY_BYTES))
    return app
