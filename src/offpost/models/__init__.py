"""Persistence: typed SQLAlchemy 2.0 models, guarded state changes, migrations.

Imports nothing of offpost's other layers.
"""
