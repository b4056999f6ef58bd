"""kombu's Redis transport, made to survive a Redis restart under a busy worker.

When a worker loses its Redis connection, Celery first collects the broken
connection (which detaches the transport from it) and then closes it. If a
channel was still open at that point (a race with messages in flight),
closing it tries to restore its unacknowledged messages through a connection
pool built from the detached transport's URL, and fails with ``AttributeError:
'NoneType' object has no attribute 'hostname'``. That is not a connection
error, so Celery does not ignore it: the worker stops ("Unrecoverable error")
instead of reconnecting, and stays down until something restarts it.

Here the same situation raises a Redis ``ConnectionError``, which Celery
ignores while it reconnects. Nothing is lost by not restoring those messages
then: Redis puts unacknowledged messages back after the visibility timeout,
and the dispatcher re-sends posts whose message went missing.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is already closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(kombu_redis.Transport):
    """Celery's ``broker_transport`` for ``redis://`` URLs."""

    Channel = Channel


#: The value of Celery's ``broker_transport`` setting that selects it.
TRANSPORT = f"{__name__}:Transport"
