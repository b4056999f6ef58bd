"""The HTTP API (FastAPI): one router per resource, the problem documents, limits,
the Prometheus exporter, and the operators' dashboard (:mod:`.dashboard`).

An interface: it may import the services (``offpost.posts``, ``offpost.tokens``,
``offpost.scheduler``, ``offpost.workers``) and everything below them.
"""
