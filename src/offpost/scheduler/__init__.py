"""The front of offpost: settings, HTTP API, dispatcher, recurrence and the ``offpost`` CLI.

May import ``offpost.models``, ``offpost.graph`` and ``offpost.workers``.
"""
