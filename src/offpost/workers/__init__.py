"""Background work: the Celery app and its tasks (publishing, with reconciliation;
webhook delivery), the rate limiter and the publish observers.

May import ``offpost.tokens``, ``offpost.outbox``, ``offpost.models``, ``offpost.graph``
and the base modules.
"""
