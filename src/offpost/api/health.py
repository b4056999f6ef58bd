"""Liveness and readiness: ``/healthz`` says the process is up, ``/readyz`` that it can work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from kombu.connection import Connection
from sqlalchemy import text
from sqlalchemy.engine import Engine

from offpost.redact import scrub

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0


def check_database(engine: Engine) -> None:
    """Raise unless the database answers a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def check_broker(broker_url: str) -> None:
    """Raise unless the Celery broker accepts a connection."""
    with Connection(broker_url, connect_timeout=CHECK_TIMEOUT_S) as conn:  # type: ignore[no-untyped-call]
        conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database and the broker are reachable",
    responses={503: {"description": "a dependency is unreachable"}},
)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, Callable[[], None]] = {
        "database": partial(check_database, state.engine),
        "broker": partial(check_broker, state.broker_url),
    }
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(asyncio.to_thread(check), timeout=CHECK_TIMEOUT_S + 1)
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            results[name] = scrub(f"unreachable: {type(exc).__name__}")
            logger.warning(
                "readiness check %s failed: %s",
                name,
                scrub(str(exc)),
                extra={"action": "readyz_failed", "check": name},
            )
    ready = all(v == "ok" for v in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": results},
        status_code=200 if ready else 503,
    )
