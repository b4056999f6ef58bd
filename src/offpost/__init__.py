"""offpost: an offline posting job scheduler for Facebook Pages.

Layers (each a subpackage; a layer imports only those listed before it):

- ``offpost.models``    SQLAlchemy models, guarded state changes, migrations.
- ``offpost.graph``     the Graph API client and the Graph sandbox.
- ``offpost.workers``   the Celery app and its tasks.
- ``offpost.scheduler`` settings, HTTP API, dispatcher, recurrence, CLI.
"""

__version__ = "0.1.0"
