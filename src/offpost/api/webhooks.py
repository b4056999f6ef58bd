"""``/v1/webhook``: where a client wants its events (docs/webhooks.md).

One webhook per client. ``PUT`` sets the URL and makes a fresh signing secret,
shown in that answer only (a second ``PUT`` rotates it); ``GET`` shows the URL;
``DELETE`` removes the webhook and gives up its undelivered events. URLs are
``https://`` to a public address (:mod:`offpost.addresses`); the operator setting
``OFFPOST_WEBHOOK_ALLOW_PRIVATE`` also allows private addresses and ``http://``,
for development.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response, status
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from offpost.addresses import AddressRefusedError, check_registration
from offpost.api.deps import ClientDep, NowDep, SessionDep, SettingsDep
from offpost.api.problems import ProblemError
from offpost.models import DeliveryStatus, EventType, Webhook, WebhookEvent, new_webhook_secret
from offpost.models.webhook import reset_breaker
from offpost.posts.input import RequestModel
from offpost.posts.rules import check_url
from offpost.views import UTCTime

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/webhook", tags=["webhooks"])

_ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "no or bad API key"}}


def check_webhook_url(value: str) -> str:
    """``value`` if it is a well-formed http(s) URL; ``ValueError`` otherwise. Whether
    its scheme and address are allowed is :func:`offpost.addresses.check_registration`'s
    (it depends on the operator's setting)."""
    return check_url(value)


class WebhookPut(RequestModel):
    url: Annotated[str, AfterValidator(check_webhook_url)]
    events: list[EventType] | None = Field(
        default=None,
        min_length=1,
        description="The event types to send; omitted or null: every type.",
    )


class WebhookHealth(BaseModel):
    """How deliveries to the endpoint have gone lately."""

    #: Events waiting for a (first or next) attempt.
    pending: int
    #: When the next of them is due.
    next_attempt_at: UTCTime | None
    #: The latest attempt: when, the HTTP status it got (null: no answer), its error.
    last_attempt_at: UTCTime | None
    last_status: int | None
    last_error: str | None
    #: Attempts that failed since the last one that succeeded (any events).
    failures_in_a_row: int
    #: Events being sent or delivered right now (at most OFFPOST_WEBHOOK_PER_ENDPOINT).
    in_flight: int
    #: While the endpoint is paused after repeated failures: when sending resumes.
    paused_until: UTCTime | None


class WebhookOut(BaseModel):
    url: str
    #: The event types sent; null: every type.
    events: list[str] | None = None
    health: WebhookHealth


def webhook_health(session: Session, webhook: Webhook, now: datetime) -> WebhookHealth:
    """The endpoint's health, from its row and its events' delivery columns (three queries)."""
    client_id = webhook.client_id
    latest = session.execute(
        select(WebhookEvent.updated_at, WebhookEvent.last_status, WebhookEvent.last_error)
        .where(WebhookEvent.client_id == client_id, WebhookEvent.attempts > 0)
        .order_by(WebhookEvent.updated_at.desc(), WebhookEvent.id.desc())
        .limit(1)
    ).one_or_none()
    pending, next_at = session.execute(
        select(func.count(), func.min(WebhookEvent.next_attempt_at)).where(
            WebhookEvent.client_id == client_id, WebhookEvent.status == DeliveryStatus.PENDING
        )
    ).one()
    in_flight = session.scalar(
        select(func.count()).where(
            WebhookEvent.client_id == client_id,
            WebhookEvent.status == DeliveryStatus.PENDING,
            WebhookEvent.in_flight_until > now,
        )
    )
    paused = webhook.paused_until if webhook.paused_until and webhook.paused_until > now else None
    if paused is not None and next_at is not None:
        next_at = max(next_at, paused)
    return WebhookHealth(
        pending=int(pending),
        next_attempt_at=next_at,
        last_attempt_at=latest.updated_at if latest else None,
        last_status=latest.last_status if latest else None,
        last_error=latest.last_error if latest else None,
        failures_in_a_row=webhook.failures_in_a_row,
        in_flight=int(in_flight or 0),
        paused_until=paused,
    )


class WebhookCreated(BaseModel):
    url: str
    events: list[str] | None = None
    secret: str


def _own_webhook(session: SessionDep, client_id: str) -> Webhook | None:
    return session.scalars(select(Webhook).where(Webhook.client_id == client_id)).one_or_none()


@router.put(
    "",
    response_model=WebhookCreated,
    summary="Set the webhook URL; returns a fresh signing secret (shown once)",
    responses={
        422: {"description": "invalid_request: not an https URL, or a non-public address"},
        **_ERRORS,
    },
)
def put_webhook(
    body: WebhookPut, client: ClientDep, session: SessionDep, settings: SettingsDep
) -> WebhookCreated:
    try:
        check_registration(body.url, allow_private=settings.webhook_allow_private)
    except AddressRefusedError as exc:
        message = f"offpost does not send webhooks there: {exc}"
        raise ProblemError(
            "invalid_request", f"url: {message}", errors=[{"field": "url", "message": message}]
        ) from exc
    secret = new_webhook_secret()
    events = sorted({e.value for e in body.events}) if body.events is not None else None
    webhook = _own_webhook(session, client.id)
    if webhook is None:
        webhook = Webhook(client_id=client.id, url=body.url, secret=secret, events=events)
        session.add(webhook)
    else:
        webhook.url = body.url
        webhook.secret = secret
        webhook.events = events
        reset_breaker(webhook)
    session.commit()
    logger.info(
        "webhook set for client %s",
        client.id,
        extra={"action": "webhook_set", "client_id": client.id},
    )
    return WebhookCreated(url=body.url, events=events, secret=secret)


@router.get(
    "",
    response_model=WebhookOut,
    summary="The webhook URL and how deliveries to it have gone (never the secret)",
    responses={404: {"description": "no webhook is set"}, **_ERRORS},
)
def get_webhook(client: ClientDep, session: SessionDep, now: NowDep) -> WebhookOut:
    webhook = _own_webhook(session, client.id)
    if webhook is None:
        raise ProblemError("not_found", "no webhook is set; PUT /v1/webhook sets one")
    return WebhookOut(
        url=webhook.url, events=webhook.events, health=webhook_health(session, webhook, now)
    )


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove the webhook; undelivered events are given up",
    responses={404: {"description": "no webhook is set"}, **_ERRORS},
)
def delete_webhook(client: ClientDep, session: SessionDep, now: NowDep) -> Response:
    webhook = _own_webhook(session, client.id)
    if webhook is None:
        raise ProblemError("not_found", "no webhook is set")
    # The events first, then the webhook: the order a worker recording an outcome
    # locks them in (event, then the webhook's breaker), so the two never deadlock.
    session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.client_id == client.id,
            WebhookEvent.status == DeliveryStatus.PENDING,
        )
        .values(
            status=DeliveryStatus.FAILED,
            last_error="the webhook was removed",
            lease_expires_at=None,
            in_flight_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.delete(webhook)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
