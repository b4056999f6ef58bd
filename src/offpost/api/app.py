"""The HTTP API application: ``create_app(settings)`` builds it, nothing happens at import.

The lifespan builds the process's resources — the database engine (with the
token cipher), one ``httpx.Client`` for Graph, the rate limiter — and refuses to
start on an outdated schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial

import redis
from fastapi import Depends, FastAPI

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
from offpost.api.limits import (
    BodyLimitMiddleware,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from offpost.api.openapi import install_openapi
from offpost.api.problems import install_problem_handlers
from offpost.graph.client import GraphClient, make_http_client
from offpost.models import make_engine, make_sessionmaker
from offpost.models.base import utcnow
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
    """Shared through Redis when the broker is Redis; per process otherwise."""
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(redis.Redis.from_url(settings.broker_url, socket_timeout=2))
    return MemoryRateLimiter()


def wake_if_soon(waker: Waker, max_sleep_s: float, due_at: datetime) -> None:
    """Wake the dispatchers when a post is due before they would look anyway."""
    if (due_at - utcnow()).total_seconds() < max_sleep_s:
        waker.notify(due_at)


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
        engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
        http = make_http_client(settings.graph_timeout_s)
        queue = QueueProbe(settings.broker_url, settings.queue)
        dispatcher_waker = waker or make_waker(settings.broker_url)
        limiter = make_rate_limiter(settings)
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
            app.state.wake_dispatcher = partial(
                wake_if_soon, dispatcher_waker, settings.dispatcher_max_sleep_s
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
            limiter.close()
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
