"""The call log behind ``GET /_sandbox/calls``, with every token masked.

Each Graph call is recorded once its reply starts (or its connection is
dropped): time, method, path, status, the caller token's type, the proof's
verdict and the parameters — tokens, codes and proofs replaced by short
fingerprints, client secrets by ``***``. No issued token string or app secret
ever appears in the log. The log keeps the newest :data:`MAX_CALLS` entries.

A batch request (:mod:`.batch`) is logged as one entry per item, each as it
finishes, then the batch call itself when its reply starts; all carry the
batch's ``batch_id``, the items their ``batch_index`` too. The batch call's
``batch`` parameter, which holds the items' tokens and proofs, is never shown.

Not thread-safe by itself; the world calls it under its lock.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from offpost.graph.sandbox.faults import Fault

MAX_CALLS = 10_000
_TOKEN_PARAMS = frozenset({"access_token", "input_token", "fb_exchange_token", "code"})
_SECRET_PARAMS = frozenset({"client_secret"})
_MAX_VALUE_CHARS = 200


def mask_token(value: str) -> str:
    """A recognisable, irreversible stand-in: ``EAA…1a2b3c4d`` or ``{app_id}|***``."""
    if "|" in value:
        return value.partition("|")[0] + "|***"
    fingerprint = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[:3]}…{fingerprint}"


def mask_params(params: dict[str, str]) -> dict[str, str]:
    """The parameters as they may be shown: tokens masked, secrets hidden, long text cut."""
    shown: dict[str, str] = {}
    for key, value in params.items():
        if key in _SECRET_PARAMS:
            shown[key] = "***"
        elif key in _TOKEN_PARAMS:
            shown[key] = mask_token(value)
        elif key == "appsecret_proof":
            shown[key] = value[:8] + "…"
        elif key == "batch":
            shown[key] = f"({len(value)} chars; each item is logged on its own)"
        elif len(value) > _MAX_VALUE_CHARS:
            shown[key] = value[:_MAX_VALUE_CHARS] + f"…({len(value)} chars)"
        else:
            shown[key] = value
    return shown


@dataclass(eq=False)
class BatchRun:
    """One batch request, shared by the contexts of the batch call and of its items."""

    batch_id: int
    #: Whether a publish of this batch already waited ``publish_latency_ms``: Graph runs
    #: a batch's calls in parallel, so the batch waits once, not once per publish.
    latency_spent: bool = False


@dataclass(eq=False)
class CallContext:
    """What the routes learn about one Graph call, read when its reply starts."""

    method: str
    path: str  # as received, with any version prefix
    graph_path: str  # without the version prefix
    version: str | None
    started_at: float
    params: dict[str, str] = field(default_factory=dict)
    token_type: str | None = None
    app_id: str | None = None
    page_id: str | None = None
    #: "valid", "invalid", "stale" (timed proof too old or too far ahead) or "absent".
    proof: str | None = None
    proof_timed: bool = False
    fault_id: int | None = None
    #: The fault that struck this call, if any: the reply is shaped after it.
    fault: Fault | None = None
    drop: bool = False
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: The batch request this call is, or is an item of (``batch_index`` set).
    batch: BatchRun | None = None
    batch_index: int | None = None


class CallLog:
    def __init__(self) -> None:
        self._calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS)
        self._batch_ids = itertools.count(1)

    def new_batch(self) -> BatchRun:
        return BatchRun(batch_id=next(self._batch_ids))

    def record(
        self, ctx: CallContext, *, status: int | None, now: float, duration_ms: float
    ) -> None:
        self._calls.append(
            {
                "time": round(now, 3),
                "method": ctx.method,
                "path": ctx.path,
                "status": status,
                "dropped": ctx.drop,
                "duration_ms": round(duration_ms, 1),
                "token_type": ctx.token_type,
                "app_id": ctx.app_id,
                "page_id": ctx.page_id,
                "proof": ctx.proof,
                "proof_valid": None if ctx.proof in (None, "absent") else ctx.proof == "valid",
                "proof_timed": ctx.proof_timed,
                "fault_id": ctx.fault_id,
                "batch_id": ctx.batch.batch_id if ctx.batch is not None else None,
                "batch_index": ctx.batch_index,
                "params": mask_params(ctx.params),
            }
        )

    def entries(self) -> list[dict[str, Any]]:
        return list(self._calls)

    def clear(self) -> int:
        count = len(self._calls)
        self._calls.clear()
        return count
