"""The Graph sandbox: a local HTTP server that behaves like the Graph endpoints offpost uses.

It lets the tests, the demo and users' own CI run without Facebook (docs/sandbox.md,
docs/graph.md). Modules, by concept:

- :mod:`.state` — the in-memory world (apps, users, Pages, tokens, posts, codes,
  sandbox clock) behind one lock;
- :mod:`.errors` — Graph's error envelope and exact messages;
- :mod:`.auth` — token validity, ``appsecret_proof``, usage metering;
- :mod:`.oauth`, :mod:`.pages`, :mod:`.media` — the Graph endpoints (and the rupload
  host); :mod:`.graph_routes` routes to them, :mod:`.batch` runs batch requests'
  items through it, :mod:`.replies` is an answer before it is sent;
- :mod:`.faults`, :mod:`.usage`, :mod:`.calls` — injected faults, rate limits, the call log;
- :mod:`.control_routes` — ``/_sandbox/…``; :mod:`.app` — the ASGI app;
  :mod:`.server` — :func:`serve` and :func:`running_sandbox`.

It imports nothing of offpost but :mod:`offpost.errors` and :mod:`offpost.graph.proof`.
"""

from __future__ import annotations

from offpost.graph.sandbox.app import SandboxApp, create_sandbox_app
from offpost.graph.sandbox.server import RunningSandbox, running_sandbox, serve
from offpost.graph.sandbox.settings import SandboxSettings

__all__ = [
    "RunningSandbox",
    "SandboxApp",
    "SandboxSettings",
    "create_sandbox_app",
    "running_sandbox",
    "serve",
]
