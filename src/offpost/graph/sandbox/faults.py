"""Injected faults (``/_sandbox/faults``): errors, latency, lost and mangled replies.

A fault matches a Graph call when its ``path`` regex is found (``re.search``)
in either the path as received (``/v26.0/123/feed``) or the unversioned path
(``/123/feed``), and its ``method``, when given, equals the call's. The first
matching fault, oldest first, is used and its ``times`` counts down; at zero it
is gone. Faults never match ``/_sandbox/`` routes.

What a fault does, in order: wait ``latency_ms`` (awaited, never blocking) —
before the call's effect, or after it with ``after_effect``; then, if it
*breaks* the call (has a ``status``, an ``error``, a ``body``,
``drop_response`` or ``reset_connection``), either before the call's effect or
— with ``after_effect`` — after the call ran (the post exists, the reply is
lost): reply with the status and error envelope (or with ``body`` as
``content_type``, e.g. a proxy's HTML page), close the connection without any
HTTP response (``drop_response``), or reset it with a TCP RST
(``reset_connection``). A fault that breaks nothing lets the call run and
answer normally, only slower.

Whatever reply goes out may then be mangled: ``truncate_bytes`` sends only that
many bytes of its body, under a ``Content-Length`` announcing all of it, and
closes the connection (a reply cut off in transit); ``drip_ms`` sends the body
``drip_bytes`` at a time, ``drip_ms`` apart (a slow-drip reply: every read is
quick, the whole reply is not). ``headers`` are set on the reply, replacing any
header of the same name the sandbox computed (e.g. a usage header), and
``probability`` below 1 makes a fault strike only that share of the matching
calls (the others pass untouched and do not count down ``times``).

A batch request (:mod:`.batch`) meets faults twice. The batch call itself is a
``POST`` to the root (``/``, ``/v26.0/``): a fault matching it acts on the
whole request as on any call (``after_effect`` + ``drop_response`` runs every
item, then loses the reply). Each item is then matched on its own method, path
(with the batch's version prefix when the item has none) and parameters: a
breaking fault becomes that item's element (its status the ``code``, its
envelope or ``body`` the ``body``, ``headers`` among the element's headers),
``drop_response`` or ``reset_connection`` make the element ``null``, and its
latency delays the whole batch. ``truncate_bytes`` and ``drip_ms`` shape whole
HTTP replies only; on an item they do nothing.

Not thread-safe by itself; the world calls it under its lock.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Fault:
    fault_id: int
    pattern: re.Pattern[str]
    method: str | None
    remaining: int
    status: int | None = None
    error: dict[str, Any] | None = None
    latency_ms: int = 0
    drop_response: bool = False
    after_effect: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    probability: float = 1.0
    body: str | None = None
    content_type: str | None = None
    reset_connection: bool = False
    truncate_bytes: int | None = None
    drip_bytes: int = 1
    drip_ms: int = 0
    #: Only calls whose parameters hold these values (``{"upload_phase": "finish"}``).
    params: dict[str, str] = field(default_factory=dict)
    hits: int = field(default=0)

    @property
    def breaks(self) -> bool:
        """Whether the fault replaces the call's reply (rather than slowing or mangling it)."""
        return (
            self.status is not None
            or self.error is not None
            or self.body is not None
            or self.drop_response
            or self.reset_connection
        )

    @property
    def closes_without_reply(self) -> bool:
        """Whether the connection is closed before any HTTP response is sent."""
        return self.drop_response or self.reset_connection

    @property
    def mangles_body(self) -> bool:
        """Whether the reply's body is cut off or trickled out."""
        return self.truncate_bytes is not None or self.drip_ms > 0

    def matches(
        self, method: str, paths: tuple[str, ...], params: Mapping[str, str] | None = None
    ) -> bool:
        if self.method is not None and self.method != method:
            return False
        if any((params or {}).get(name) != value for name, value in self.params.items()):
            return False
        return any(self.pattern.search(path) for path in paths)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.fault_id,
            "path": self.pattern.pattern,
            "method": self.method,
            "times": self.remaining,
            "status": self.status,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "drop_response": self.drop_response,
            "after_effect": self.after_effect,
            "headers": self.headers,
            "probability": self.probability,
            "body": self.body,
            "content_type": self.content_type,
            "reset_connection": self.reset_connection,
            "truncate_bytes": self.truncate_bytes,
            "drip_bytes": self.drip_bytes,
            "drip_ms": self.drip_ms,
            "params": self.params,
        }


class FaultBook:
    """Pending faults, oldest first."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._rng = random.Random()

    def add(
        self,
        *,
        path: str,
        method: str | None,
        times: int,
        status: int | None,
        error: dict[str, Any] | None,
        latency_ms: int,
        drop_response: bool,
        after_effect: bool,
        headers: dict[str, str] | None = None,
        probability: float = 1.0,
        body: str | None = None,
        content_type: str | None = None,
        reset_connection: bool = False,
        truncate_bytes: int | None = None,
        drip_bytes: int = 1,
        drip_ms: int = 0,
        params: dict[str, str] | None = None,
    ) -> Fault:
        fault = Fault(
            fault_id=next(self._ids),
            pattern=re.compile(path),
            method=method.upper() if method else None,
            remaining=times,
            status=status,
            error=error,
            latency_ms=latency_ms,
            drop_response=drop_response,
            after_effect=after_effect,
            headers=dict(headers or {}),
            probability=probability,
            body=body,
            content_type=content_type,
            reset_connection=reset_connection,
            truncate_bytes=truncate_bytes,
            drip_bytes=drip_bytes,
            drip_ms=drip_ms,
            params=dict(params or {}),
        )
        self._faults.append(fault)
        return fault

    def take(
        self, method: str, paths: tuple[str, ...], params: Mapping[str, str] | None = None
    ) -> Fault | None:
        """The first fault matching this call, counted down (removed once used up)."""
        for fault in self._faults:
            if fault.matches(method, paths, params):
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    return None
                fault.remaining -= 1
                fault.hits += 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def clear(self) -> int:
        count = len(self._faults)
        self._faults.clear()
        return count

    def describe(self) -> list[dict[str, Any]]:
        return [fault.describe() for fault in self._faults]
