"""The outbox's guarded steps, and in-process delivery to a real HTTP receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from offpost.models import (
    Client,
    DeliveryStatus,
    EventType,
    Webhook,
    WebhookEvent,
    hash_api_key,
    make_engine,
    make_sessionmaker,
    new_api_key,
    new_webhook_secret,
)
from offpost.models.migrate import upgrade_to_head
from offpost.models.periodic import claim_periodic_run
from offpost.models.types import new_encryption_key
from offpost.models.webhook import BREAKER_BASE, BREAKER_THRESHOLD
from offpost.models.webhook_event import (
    claim_delivery,
    claim_due_events,
    finish_delivery,
    give_up_behind_breaker,
    insert_event,
)
from offpost.outbox import event_document
from offpost.scheduler.housekeeping import GIVE_UP_EVERY, Housekeeping
from offpost.workers.deadline import deadline_client
from offpost.workers.metrics import process_registry
from offpost.workers.webhooks import DeliveryContext, DeliveryPolicy, deliver_event
from tests.integration.webhook_receiver import Receiver, dripping_receiver, running_receiver

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade_to_head(database_url)
    engine = make_engine(database_url, encryption_keys=[new_encryption_key()])
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def client_id(sessions: sessionmaker[Session]) -> str:
    client = Client(name="hooked", key_hash=hash_api_key(new_api_key()), is_admin=False)
    with sessions.begin() as session:
        session.add(client)
    return client.id


def add_event(
    sessions: sessionmaker[Session], client_id: str, now: datetime = T0, key: str | None = None
) -> str | None:
    with sessions.begin() as session:
        return insert_event(
            session,
            client_id=client_id,
            event_type=EventType.POST_PUBLISHED,
            subject_id="post_x",
            payload_for=lambda eid: event_document(eid, EventType.POST_PUBLISHED, now, {"a": 1}),
            now=now,
            dedupe_key=key,
        )


def webhook_of(sessions: sessionmaker[Session], client_id: str) -> Webhook:
    with sessions() as session:
        return session.scalars(select(Webhook).where(Webhook.client_id == client_id)).one()


def add_webhook_client(sessions: sessionmaker[Session], name: str, url: str) -> str:
    """Another client with a webhook at ``url``; its id."""
    client = Client(name=name, key_hash=hash_api_key(new_api_key()), is_admin=False)
    with sessions.begin() as session:
        session.add(client)
        session.flush()
        session.add(Webhook(client_id=client.id, url=url, secret=new_webhook_secret()))
    return client.id


def event(sessions: sessionmaker[Session], event_id: str) -> WebhookEvent:
    with sessions() as session:
        found = session.get(WebhookEvent, event_id)
        assert found is not None
        return found


def test_a_dedupe_key_makes_the_second_event_a_no_op(
    sessions: sessionmaker[Session], client_id: str
) -> None:
    first = add_event(sessions, client_id, key="credential.expiring:cred_1:2026-12-04T08:00:00Z")
    assert first is not None
    assert first.startswith("evt_")
    assert (
        add_event(sessions, client_id, key="credential.expiring:cred_1:2026-12-04T08:00:00Z")
        is None
    )
    # Events without a key never collide.
    assert add_event(sessions, client_id) is not None
    assert add_event(sessions, client_id) is not None


def test_due_events_are_claimed_once_and_re_sent_only_after_the_resend_time(
    sessions: sessionmaker[Session], client_id: str
) -> None:
    event_id = add_event(sessions, client_id)
    with sessions.begin() as session:
        assert claim_due_events(session, T0, timedelta(seconds=60), 10) == [(event_id, 0)]
    with sessions.begin() as session:
        assert (
            claim_due_events(session, T0 + timedelta(seconds=59), timedelta(seconds=60), 10) == []
        )
    with sessions.begin() as session:
        later = T0 + timedelta(seconds=61)
        assert claim_due_events(session, later, timedelta(seconds=60), 10) == [(event_id, 0)]


def test_an_attempt_is_claimed_by_one_message_only(
    sessions: sessionmaker[Session], client_id: str
) -> None:
    event_id = add_event(sessions, client_id)
    assert event_id is not None
    with sessions.begin() as session:
        held = claim_delivery(session, event_id, 0, T0, LEASE)
    assert held is not None
    assert held.attempt == 1
    with sessions.begin() as session:
        # A duplicate message for the same attempt, and one for the next while leased.
        assert claim_delivery(session, event_id, 0, T0, LEASE) is None
        assert claim_delivery(session, event_id, 1, T0, LEASE) is None
        # Once the lease ran out, the re-sent message (attempts=1) may go.
        retaken = claim_delivery(session, event_id, 1, T0 + LEASE + timedelta(seconds=1), LEASE)
    assert retaken is not None
    assert retaken.attempt == 2
    with sessions.begin() as session:
        # The first holder's outcome arrives late: it changes nothing.
        assert not finish_delivery(session, held, T0, status=DeliveryStatus.DELIVERED)
        assert finish_delivery(session, retaken, T0, status=DeliveryStatus.DELIVERED)
    assert event(sessions, event_id).status == DeliveryStatus.DELIVERED


def test_a_periodic_job_runs_once_per_interval(sessions: sessionmaker[Session]) -> None:
    day = timedelta(days=1)
    with sessions.begin() as session:
        assert claim_periodic_run(session, "expiry_sweep", T0, day)
    with sessions.begin() as session:
        assert not claim_periodic_run(session, "expiry_sweep", T0 + timedelta(hours=23), day)
        assert claim_periodic_run(session, "other_job", T0, day)
    with sessions.begin() as session:
        assert claim_periodic_run(session, "expiry_sweep", T0 + day, day)


# -- delivery -------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def secret(sessions: sessionmaker[Session], client_id: str, receiver: Receiver) -> str:
    value = new_webhook_secret()
    with sessions.begin() as session:
        session.add(Webhook(client_id=client_id, url=receiver.url, secret=value))
    return value


@pytest.fixture
def ctx(sessions: sessionmaker[Session]) -> Iterator[DeliveryContext]:
    with httpx.Client(timeout=httpx.Timeout(2.0)) as http:
        yield DeliveryContext(
            sessions=sessions,
            http=http,
            policy=DeliveryPolicy(base_s=0.05, cap_s=0.1, retry_for_s=60),
            lease=LEASE,
            # The receiver listens on 127.0.0.1.
            allow_private=True,
        )


def deliver_due(ctx: DeliveryContext) -> list[str]:
    """What a dispatcher tick and the workers do: claim due events, deliver each."""
    with ctx.sessions.begin() as session:
        due = claim_due_events(session, ctx.clock(), timedelta(seconds=60), 100)
    return [deliver_event(ctx, event_id, attempts) for event_id, attempts in due]


def test_500_500_200_delivers_the_same_event_three_times_then_never_again(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    receiver.answer(500, 500)
    event_id = add_event(ctx.sessions, client_id, now=datetime.now(UTC))
    outcomes: list[str] = []
    for _ in range(100):
        outcomes += deliver_due(ctx)
        if "delivered" in outcomes:
            break
        threading.Event().wait(0.05)
    assert outcomes == ["retry", "retry", "delivered"]
    assert deliver_due(ctx) == []
    got = receiver.received()
    assert len(got) == 3
    assert {r.headers["offpost-event-id"] for r in got} == {event_id}
    assert {r.body for r in got} == {got[0].body}
    assert got[0].event["id"] == event_id
    assert all(r.signed_by(secret) for r in got)
    assert all(r.headers["content-type"] == "application/json" for r in got)
    assert all(r.headers["user-agent"].startswith("offpost/") for r in got)
    row = event(ctx.sessions, event_id or "")
    assert (row.status, row.attempts, row.last_status) == (DeliveryStatus.DELIVERED, 3, 200)
    assert row.delivered_at is not None


def test_a_receiver_that_never_answers_2xx_is_paused_then_given_up_after_the_window(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    receiver.answer(*[503] * 1000)
    ctx.policy = DeliveryPolicy(base_s=0.05, cap_s=0.1, retry_for_s=2.0)
    created = datetime.now(UTC)
    event_id = add_event(ctx.sessions, client_id, now=created)
    outcomes: list[str] = []
    for _ in range(200):
        outcomes += deliver_due(ctx)
        if len(outcomes) == BREAKER_THRESHOLD:
            break
        threading.Event().wait(0.05)
    assert outcomes == ["retry"] * BREAKER_THRESHOLD
    # The breaker is open: the endpoint is paused and nothing is sent, however due.
    hook = webhook_of(ctx.sessions, client_id)
    assert hook.failures_in_a_row == BREAKER_THRESHOLD
    assert hook.paused_until is not None
    assert hook.paused_until - datetime.now(UTC) > BREAKER_BASE - timedelta(seconds=5)
    while datetime.now(UTC) < created + timedelta(seconds=2.1):
        assert deliver_due(ctx) == []
        threading.Event().wait(0.1)
    # The pause over, one probe: past the event's window, it is the last attempt.
    with ctx.sessions.begin() as session:
        session.execute(
            update(Webhook)
            .where(Webhook.client_id == client_id)
            .values(paused_until=datetime.now(UTC))
        )
    assert deliver_due(ctx) == ["failed"]
    row = event(ctx.sessions, event_id or "")
    assert (row.status, row.last_status, row.last_error) == (DeliveryStatus.FAILED, 503, "HTTP 503")
    assert row.attempts == BREAKER_THRESHOLD + 1
    assert len(receiver.received()) == row.attempts
    # A longer pause after each further failure.
    assert webhook_of(ctx.sessions, client_id).failures_in_a_row == BREAKER_THRESHOLD + 1


def test_the_breaker_probes_one_at_a_time_and_a_success_closes_it(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    now = datetime.now(UTC)
    for _ in range(4):
        add_event(ctx.sessions, client_id, now=now)
    with ctx.sessions.begin() as session:
        session.execute(
            update(Webhook)
            .where(Webhook.client_id == client_id)
            .values(
                failures_in_a_row=BREAKER_THRESHOLD + 2, paused_until=now - timedelta(seconds=1)
            )
        )
    # Half open: one event at a time, though four are due.
    assert deliver_due(ctx) == ["delivered"]
    hook = webhook_of(ctx.sessions, client_id)
    assert (hook.failures_in_a_row, hook.paused_until) == (0, None)
    # Closed: up to the per-endpoint cap (2) at a time.
    with ctx.sessions.begin() as session:
        assert len(claim_due_events(session, ctx.clock(), timedelta(seconds=60), 100)) == 2


def test_one_endpoints_backlog_leaves_room_for_the_others(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    other = add_webhook_client(ctx.sessions, "other", receiver.url)
    now = datetime.now(UTC)
    backlog = [
        add_event(ctx.sessions, client_id, now=now - timedelta(minutes=5)) for _ in range(50)
    ]
    late = add_event(ctx.sessions, other, now=now)
    with ctx.sessions.begin() as session:
        claimed = claim_due_events(session, now, timedelta(seconds=60), 10, per_endpoint=3)
    ids = [event_id for event_id, _ in claimed]
    # The other client's one event is sent in the same tick, behind three of the backlog.
    assert late in ids
    assert len([i for i in ids if i in backlog]) == 3
    # The backlog's three are in flight: the next tick sends none of it.
    with ctx.sessions.begin() as session:
        assert claim_due_events(session, now, timedelta(seconds=60), 10, per_endpoint=3) == []


def test_a_leased_event_is_not_posted_by_a_second_worker(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    event_id = add_event(ctx.sessions, client_id, now=datetime.now(UTC))
    assert event_id is not None
    with ctx.sessions.begin() as session:
        assert claim_delivery(session, event_id, 0, datetime.now(UTC), LEASE) is not None
    # The same message delivered twice by the broker: both find the attempt taken.
    assert deliver_event(ctx, event_id, 0) == "skipped"
    assert deliver_event(ctx, event_id, 1) == "skipped"
    assert receiver.received() == []


def test_an_event_of_a_removed_webhook_fails_without_a_request(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    event_id = add_event(ctx.sessions, client_id, now=datetime.now(UTC))
    with ctx.sessions.begin() as session:
        for webhook in session.scalars(select(Webhook).where(Webhook.client_id == client_id)):
            session.delete(webhook)
    assert deliver_due(ctx) == ["failed"]
    assert event(ctx.sessions, event_id or "").status == DeliveryStatus.FAILED
    assert receiver.received() == []


def test_a_delivery_to_a_private_address_is_refused_unless_the_operator_allows_it(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    """Checked at each delivery, not only at registration: the URL stored here was never
    registered through the API, as after a name that now points inside the network."""
    ctx.allow_private = False
    event_id = add_event(ctx.sessions, client_id, now=datetime.now(UTC))
    assert deliver_due(ctx) == ["retry"]
    assert receiver.received() == []
    with ctx.sessions() as session:
        event = session.get(WebhookEvent, event_id)
        assert event is not None
        assert event.last_error is not None
        assert event.last_error.startswith("refused: it must be an https:// URL")


def test_a_delivery_connects_to_the_address_it_vetted(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    """The name is resolved once, checked, and connected to by address: a second lookup
    (DNS rebinding) never happens. The receiver still sees the name in ``Host``."""
    port = int(receiver.url.split(":")[2].split("/")[0])
    with ctx.sessions.begin() as session:
        webhook = session.scalars(select(Webhook).where(Webhook.client_id == client_id)).one()
        webhook.url = f"http://receiver.test:{port}/hooks"
    lookups: list[str] = []

    def resolver(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    ctx.resolver = resolver
    add_event(ctx.sessions, client_id, now=datetime.now(UTC))
    assert deliver_due(ctx) == ["delivered"]
    assert lookups == ["receiver.test"]
    [request] = receiver.received()
    assert request.headers["host"] == f"receiver.test:{port}"


def test_a_dripping_receiver_is_cut_off_at_the_deadline(
    sessions: sessionmaker[Session], client_id: str
) -> None:
    """One byte every 0.2 s passes any per-read timeout; the exchange still ends by the
    deadline, and the attempt is a retry for later (its lease outlives the deadline)."""
    with dripping_receiver() as url:
        with sessions.begin() as session:
            session.add(Webhook(client_id=client_id, url=url, secret=new_webhook_secret()))
        with deadline_client(timeout=httpx.Timeout(5.0)) as http:
            ctx = DeliveryContext(
                sessions=sessions,
                http=http,
                policy=DeliveryPolicy(base_s=30, cap_s=60, retry_for_s=600),
                lease=timedelta(seconds=1.5 + 30),
                allow_private=True,
                deadline_s=1.5,
            )
            event_id = add_event(sessions, client_id, now=datetime.now(UTC))
            started = time.monotonic()
            assert deliver_due(ctx) == ["retry"]
            took = time.monotonic() - started
    assert 1.4 <= took < 4, took
    with sessions() as session:
        event = session.get(WebhookEvent, event_id)
        assert event is not None
        assert event.last_error is not None
        assert "no complete answer within the delivery's 1.5 s" in event.last_error


def test_behind_an_open_breaker_events_past_their_window_are_given_up_without_an_attempt(
    ctx: DeliveryContext, client_id: str, secret: str, receiver: Receiver
) -> None:
    now = datetime.now(UTC)
    old = [add_event(ctx.sessions, client_id, now=now - timedelta(hours=25)) for _ in range(3)]
    young = add_event(ctx.sessions, client_id, now=now - timedelta(hours=1))
    other = add_webhook_client(ctx.sessions, "healthy", receiver.url)
    # Another endpoint's old event is not given up: its breaker is closed.
    healthy_old = add_event(ctx.sessions, other, now=now - timedelta(hours=25))
    with ctx.sessions.begin() as session:
        session.execute(
            update(Webhook)
            .where(Webhook.client_id == client_id)
            .values(failures_in_a_row=BREAKER_THRESHOLD, paused_until=now + BREAKER_BASE)
        )
    with ctx.sessions.begin() as session:
        give_up_behind_breaker(session, now, timedelta(hours=24))
        claimed = claim_due_events(session, now, timedelta(seconds=60), 100)
    assert [event_id for event_id, _ in claimed] == [healthy_old]
    for event_id in old:
        row = event(ctx.sessions, event_id or "")
        assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 0)
        assert "kept failing" in (row.last_error or "")
    assert event(ctx.sessions, young or "").status == DeliveryStatus.PENDING
    assert receiver.received() == []


def test_the_dispatchers_housekeeping_gives_up_behind_a_breaker_every_few_minutes(
    ctx: DeliveryContext, client_id: str, secret: str
) -> None:
    now = datetime.now(UTC)
    with ctx.sessions.begin() as session:
        session.execute(
            update(Webhook)
            .where(Webhook.client_id == client_id)
            .values(failures_in_a_row=BREAKER_THRESHOLD, paused_until=now + timedelta(hours=1))
        )
    sent: list[tuple[str, int]] = []
    housekeeping = Housekeeping(
        ctx.sessions, send_deliveries=sent.extend, webhook_retry_for=timedelta(hours=24)
    )
    counted = ("offpost_webhook_deliveries_total", {"outcome": "failed"})
    before = process_registry().get_sample_value(*counted) or 0
    first = add_event(ctx.sessions, client_id, now=now - timedelta(hours=25))
    housekeeping.send_due_webhooks(now)
    assert event(ctx.sessions, first or "").status == DeliveryStatus.FAILED
    # Counted as the worker counts the events it gives up (the alert reads it).
    assert process_registry().get_sample_value(*counted) == before + 1
    # Within GIVE_UP_EVERY nothing is asked again; after it, the next old event goes too.
    second = add_event(ctx.sessions, client_id, now=now - timedelta(hours=25))
    housekeeping.send_due_webhooks(now + GIVE_UP_EVERY - timedelta(seconds=1))
    assert event(ctx.sessions, second or "").status == DeliveryStatus.PENDING
    housekeeping.send_due_webhooks(now + GIVE_UP_EVERY)
    assert event(ctx.sessions, second or "").status == DeliveryStatus.FAILED
    assert sent == []
