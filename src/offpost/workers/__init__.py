"""Background work: the Celery app and its tasks (publish, reconcile, refresh, webhooks).

May import ``offpost.models`` and ``offpost.graph``.
"""
