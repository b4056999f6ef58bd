"""The webhook outbox: one row per event, and the guarded steps of its delivery (docs/webhooks.md).

An event is written in the same transaction as the change it reports (a post's
outcome, a credential found dead or expiring), so it commits or rolls back with
it: no event is lost, none is invented. The row is the truth about delivery::

    pending ──dispatcher: send──▶ pending (next_attempt_at, in_flight_until: the re-send time)
       ▲                              │ worker: claim_delivery (attempts + 1, lease)
       │                              ▼
       └──── non-2xx, within 24 h ◀── POST ──▶ 2xx: delivered
                                        └────▶ past the retry window: failed

``payload`` holds the JSON document exactly as POSTed, so every retry sends the
same bytes (a JSONB column would reorder keys). ``dedupe_key`` makes an event
that must exist once per episode (``credential.expiring`` per expiry date,
``credential.needs_reauth`` per stored token) a no-op the second time. A task
names the attempt it is for, so a duplicate or late broker message finds the
row moved on and changes nothing; a lease keeps two workers from POSTing the
same event at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from offpost.models.base import Base, Timestamps, check_in, where_status
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory, new_id
from offpost.models.types import StrEnumType
from offpost.models.webhook import BREAKER_THRESHOLD, Webhook


class EventType(enum.StrEnum):
    """The events of docs/webhooks.md."""

    POST_PUBLISHED = "post.published"
    POST_FAILED = "post.failed"
    POST_NEEDS_REAUTH = "post.needs_reauth"
    CREDENTIAL_EXPIRING = "credential.expiring"
    CREDENTIAL_NEEDS_REAUTH = "credential.needs_reauth"
    CREDENTIAL_USER_TOKEN_EXPIRED = "credential.user_token_expired"  # noqa: S105 - an event
    #: After publishing (docs/after-publishing.md): the first comment is on Facebook.
    POST_COMMENTED = "post.commented"
    POST_EDITED = "post.edited"
    POST_DELETED = "post.deleted"
    #: A fetch of a published post's counts and insights (docs/insights.md).
    POST_INSIGHTS = "post.insights"


class DeliveryStatus(enum.StrEnum):
    """Where an event's delivery stands."""

    #: Not delivered yet: due at ``next_attempt_at`` (or in flight under a lease).
    PENDING = "pending"
    #: The receiver answered 2xx.
    DELIVERED = "delivered"
    #: No 2xx within the retry window (or the client removed its webhook).
    FAILED = "failed"


class WebhookEvent(Timestamps, Base):
    """One event for one client, and the state of its delivery."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        check_in("type", EventType, "type"),
        check_in("status", DeliveryStatus, "status"),
        UniqueConstraint("client_id", "dedupe_key"),
        # The dispatcher's question: "pending events due now" (a short range scan).
        Index("ix_webhook_events_due", "next_attempt_at", **where_status(DeliveryStatus.PENDING)),
        Index("ix_webhook_events_client_created", "client_id", "created_at"),
        Index("ix_webhook_events_subject", "subject_id"),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.EVENT)
    )
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("clients.id"))
    type: Mapped[EventType] = mapped_column(StrEnumType(EventType, 32))
    #: The post or credential the event is about.
    subject_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), default=None)
    #: Set for events that must exist once per episode; unique per client.
    dedupe_key: Mapped[str | None] = mapped_column(String(128), default=None)
    #: The event document exactly as POSTed (``{"id", "type", "created_at", "data"}``).
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(
        StrEnumType(DeliveryStatus), default=DeliveryStatus.PENDING
    )
    #: Delivery attempts started so far.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    #: While a worker is POSTing it: until when the attempt is that worker's.
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: From the dispatcher's send to the recorded outcome: the event counts against its
    #: endpoint's deliveries in flight until then (a lost message stops counting).
    in_flight_until: Mapped[datetime | None] = mapped_column(default=None)
    #: HTTP status of the last attempt (None: no answer).
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)

    def __repr__(self) -> str:
        return (
            f"WebhookEvent(id={self.id!r}, type={self.type.value if self.type else None!r}, "
            f"status={self.status.value if self.status else None!r})"
        )


def _pending() -> Any:
    # Inlined, not bound, so PostgreSQL can match the partial index's predicate.
    return WebhookEvent.status == literal_column(f"'{DeliveryStatus.PENDING.value}'")


def _free(now: datetime) -> Any:
    return or_(WebhookEvent.lease_expires_at.is_(None), WebhookEvent.lease_expires_at < now)


def insert_event(
    session: Session,
    *,
    client_id: str,
    event_type: EventType,
    subject_id: str | None,
    payload_for: Callable[[str], str],
    now: datetime,
    dedupe_key: str | None = None,
) -> str | None:
    """Add a pending event due now; its id, or None when ``dedupe_key`` already exists.

    ``payload_for(event_id)`` returns the document to POST (it embeds the id).
    """
    event_id = new_id(IdPrefix.EVENT)
    values = {
        "id": event_id,
        "client_id": client_id,
        "type": event_type,
        "subject_id": subject_id,
        "dedupe_key": dedupe_key,
        "payload": payload_for(event_id),
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = session.execute(
        insert_fn(WebhookEvent).values(**values).on_conflict_do_nothing().returning(WebhookEvent.id)
    )
    return result.scalar_one_or_none()


#: PostgreSQL advisory lock held by the dispatcher that is claiming webhook events.
CLAIM_LOCK = 0x6F66_7077  # "ofpw"


def claim_due_events(
    session: Session,
    now: datetime,
    resend_after: timedelta,
    limit: int,
    *,
    per_endpoint: int = 2,
) -> list[tuple[str, int]]:
    """Pick up to ``limit`` due events to send; ``(id, attempts)`` of each, oldest due first.

    Their ``next_attempt_at`` and ``in_flight_until`` move to ``now +
    resend_after``: if the message is lost (or its worker dies), the event falls
    due again then and is re-sent. Per endpoint, at most ``per_endpoint`` events
    are in flight at once (one while its breaker probes, none while it is
    paused: :mod:`offpost.models.webhook`), so one endpoint's backlog never
    fills the delivery workers. On PostgreSQL one dispatcher claims at a time
    (an advisory lock; another one skips the tick), so the caps hold exactly.
    A tick with nothing due costs one query, and takes no lock.
    """
    paused = select(Webhook.client_id).where(
        Webhook.paused_until.is_not(None), Webhook.paused_until > now
    )
    ranked = (
        select(
            WebhookEvent.id,
            WebhookEvent.client_id,
            WebhookEvent.next_attempt_at,
            func.row_number()
            .over(partition_by=WebhookEvent.client_id, order_by=WebhookEvent.next_attempt_at)
            .label("rank"),
        )
        .where(
            _pending(),
            WebhookEvent.next_attempt_at <= now,
            _free(now),
            WebhookEvent.client_id.not_in(paused),
        )
        .subquery()
    )
    candidates = session.execute(
        select(ranked.c.id, ranked.c.client_id)
        .where(ranked.c.rank <= per_endpoint)
        .order_by(ranked.c.next_attempt_at)
    ).all()
    if not candidates:
        return []
    postgresql_db = session.get_bind().dialect.name == "postgresql"
    if postgresql_db and not session.scalar(select(func.pg_try_advisory_xact_lock(CLAIM_LOCK))):
        return []
    # Counted under the lock: another dispatcher's claims are committed by now. A
    # candidate it took meanwhile fails the UPDATE's guard below and is not sent.
    room = _room_per_client(session, now, per_endpoint)
    picked: list[str] = []
    for event_id, client_id in candidates:
        left = room.get(client_id, per_endpoint)
        if left > 0 and len(picked) < limit:
            picked.append(event_id)
            room[client_id] = left - 1
    if not picked:
        return []
    result = session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.id.in_(picked),
            WebhookEvent.status == DeliveryStatus.PENDING,
            WebhookEvent.next_attempt_at <= now,
        )
        .values(
            next_attempt_at=now + resend_after, in_flight_until=now + resend_after, updated_at=now
        )
        .returning(WebhookEvent.id, WebhookEvent.attempts)
        .execution_options(synchronize_session=False)
    )
    return [(row.id, row.attempts) for row in result]


def give_up_behind_breaker(session: Session, now: datetime, retry_for: timedelta) -> int:
    """Fail the events past their window whose endpoint's breaker is open or probing; how many.

    A dead endpoint gets one attempt per pause, far fewer than its events: without
    this its backlog would outlive every event's window. The dispatcher's
    housekeeping runs it every few minutes.
    """
    broken = select(Webhook.client_id).where(Webhook.failures_in_a_row >= BREAKER_THRESHOLD)
    result = session.execute(
        update(WebhookEvent)
        .where(
            _pending(),
            WebhookEvent.client_id.in_(broken),
            WebhookEvent.created_at <= now - retry_for,
            _free(now),
            or_(WebhookEvent.in_flight_until.is_(None), WebhookEvent.in_flight_until <= now),
        )
        .values(
            status=DeliveryStatus.FAILED,
            last_error="given up: the endpoint kept failing until the event's retry window ended",
            in_flight_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _room_per_client(session: Session, now: datetime, per_endpoint: int) -> dict[str, int]:
    """How many more events each endpoint with a limit below ``per_endpoint`` may have sent:
    its cap (none while paused, one while probing) less its events in flight."""
    caps = {
        client_id: 0 if paused_until is not None and paused_until > now else 1
        for client_id, paused_until in session.execute(
            select(Webhook.client_id, Webhook.paused_until).where(
                Webhook.failures_in_a_row >= BREAKER_THRESHOLD
            )
        )
    }
    busy = session.execute(
        select(WebhookEvent.client_id, func.count())
        .where(_pending(), WebhookEvent.in_flight_until > now)
        .group_by(WebhookEvent.client_id)
    ).all()
    room = dict(caps)
    for client_id, count in busy:
        room[client_id] = max(0, caps.get(client_id, per_endpoint) - int(count))
    return room


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """What a worker needs to POST one event."""

    id: str
    client_id: str
    payload: str
    attempt: int
    created_at: datetime


def claim_delivery(
    session: Session, event_id: str, attempts: int, now: datetime, lease: timedelta
) -> ClaimedEvent | None:
    """Take the lease for attempt ``attempts + 1`` of a pending event; None if it moved on.

    None means: delivered or failed meanwhile, another worker holds it, or this
    message is a duplicate of an attempt that already ran.
    """
    result = session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.id == event_id,
            WebhookEvent.status == DeliveryStatus.PENDING,
            WebhookEvent.attempts == attempts,
            _free(now),
        )
        .values(
            attempts=attempts + 1,
            lease_expires_at=now + lease,
            in_flight_until=now + lease,
            updated_at=now,
        )
        .returning(
            WebhookEvent.id, WebhookEvent.client_id, WebhookEvent.payload, WebhookEvent.created_at
        )
        .execution_options(synchronize_session=False)
    )
    row = result.one_or_none()
    if row is None:
        return None
    return ClaimedEvent(
        id=row.id,
        client_id=row.client_id,
        payload=row.payload,
        attempt=attempts + 1,
        created_at=row.created_at,
    )


def finish_delivery(session: Session, event: ClaimedEvent, now: datetime, **values: Any) -> bool:
    """Record the outcome of the attempt ``event`` holds; False if the row moved on."""
    values.setdefault("lease_expires_at", None)
    values.setdefault("in_flight_until", None)
    result = session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.id == event.id,
            WebhookEvent.status == DeliveryStatus.PENDING,
            WebhookEvent.attempts == event.attempt,
        )
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
