"""Alembic migrations of offpost's schema; run them with ``offpost migrate``.

A package (not a loose folder) so that ``env.py`` and ``versions/`` ship in the
wheel; :mod:`offpost.models.migrate` drives Alembic without an ``alembic.ini``.
"""
