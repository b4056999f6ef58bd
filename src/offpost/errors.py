"""The root of every error offpost raises on purpose.

Each layer hangs its own subtree under :class:`OffpostError`
(``offpost.graph.errors`` for Graph, ``offpost.settings`` for
configuration, ...). This module imports nothing, so every layer may use it.
Messages never carry a token or the app secret.
"""

from __future__ import annotations


class OffpostError(Exception):
    """Base class of offpost's own errors."""
