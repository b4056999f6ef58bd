"""Persistence: typed SQLAlchemy 2.0 models, guarded state changes, migrations.

Imports nothing of offpost's other layers.
"""

from offpost.models.attempt import Attempt, AttemptOutcome
from offpost.models.base import Base, utcnow
from offpost.models.client import Client, hash_api_key, key_matches, new_api_key
from offpost.models.credential import (
    CREATE_CONTENT,
    Credential,
    CredentialPage,
    CredentialStatus,
    PageTokenStatus,
)
from offpost.models.db import make_engine, make_sessionmaker
from offpost.models.errors import (
    EncryptionKeysMissingError,
    MigrationError,
    NaiveDatetimeError,
    PersistenceError,
    SchemaMismatchError,
    SchemaOutdatedError,
    SchemaTooNewError,
    TokenDecryptionError,
)
from offpost.models.followup import Followup, FollowupKind, FollowupStatus
from offpost.models.idempotency import IdempotencyKey, request_hash
from offpost.models.ids import IdPrefix, is_id, new_id
from offpost.models.insights import InsightStatus, PostInsight
from offpost.models.media import (
    Media,
    MediaKind,
    MediaStatus,
    MediaUse,
    PostStep,
    StepKind,
    StepOutcome,
)
from offpost.models.periodic import PeriodicRun
from offpost.models.post import Post, PostStatus
from offpost.models.schedule import Misfire, Schedule, ScheduleStatus
from offpost.models.schedule_event import ScheduleEvent, ScheduleEventKind
from offpost.models.webhook import Webhook, new_webhook_secret
from offpost.models.webhook_event import DeliveryStatus, EventType, WebhookEvent

__all__ = [
    "CREATE_CONTENT",
    "Attempt",
    "AttemptOutcome",
    "Base",
    "Client",
    "Credential",
    "CredentialPage",
    "CredentialStatus",
    "DeliveryStatus",
    "EncryptionKeysMissingError",
    "EventType",
    "Followup",
    "FollowupKind",
    "FollowupStatus",
    "IdPrefix",
    "IdempotencyKey",
    "InsightStatus",
    "Media",
    "MediaKind",
    "MediaStatus",
    "MediaUse",
    "MigrationError",
    "Misfire",
    "NaiveDatetimeError",
    "PageTokenStatus",
    "PeriodicRun",
    "PersistenceError",
    "Post",
    "PostInsight",
    "PostStatus",
    "PostStep",
    "Schedule",
    "ScheduleEvent",
    "ScheduleEventKind",
    "ScheduleStatus",
    "SchemaMismatchError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "StepKind",
    "StepOutcome",
    "TokenDecryptionError",
    "Webhook",
    "WebhookEvent",
    "hash_api_key",
    "is_id",
    "key_matches",
    "make_engine",
    "make_sessionmaker",
    "new_api_key",
    "new_id",
    "new_webhook_secret",
    "request_hash",
    "utcnow",
]
