"""Helpers for the schedule tests: a migrated database, a client with a credential, the API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from offpost.api.app import create_app
from offpost.models import (
    Client,
    Credential,
    CredentialPage,
    Misfire,
    Post,
    Schedule,
    ScheduleEvent,
    hash_api_key,
    make_engine,
    make_sessionmaker,
    new_api_key,
)
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key
from offpost.scheduler.materialize import recurrence_of, restart_schedule
from offpost.settings import Settings

PAGE_ID = "1001"
#: One Fernet key for every engine of a test run, so each can read the others' tokens.
TEST_KEY = new_encryption_key()


@dataclass(frozen=True)
class Owner:
    client_id: str
    credential_id: str
    key: str


@contextlib.contextmanager
def migrated(url: str, key: str | None = None) -> Iterator[sessionmaker[Session]]:
    """A session factory on a freshly migrated database."""
    upgrade_to_head(url)
    engine = make_engine(url, encryption_keys=[key or TEST_KEY])
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def add_owner(sessions: sessionmaker[Session], name: str = "alice") -> Owner:
    """An API client with one active credential managing Page ``PAGE_ID``."""
    key = new_api_key()
    with sessions.begin() as session:
        client = Client(name=name, key_hash=hash_api_key(key), is_admin=False)
        session.add(client)
        session.flush()
        credential = Credential(
            client_id=client.id, fb_user_id=f"fb-{name}", user_token="user-token", scopes=[]
        )
        credential.pages = [CredentialPage(page_id=PAGE_ID, name="A Page", page_token="page-token")]
        session.add(credential)
        session.flush()
        return Owner(client.id, credential.id, key)


def add_schedule(
    sessions: sessionmaker[Session],
    owner: Owner,
    now: datetime,
    *,
    rrule: str | None = None,
    cron: str | None = None,
    timezone: str = "Europe/Berlin",
    start_at: datetime,
    end_at: datetime | None = None,
    misfire: Misfire = Misfire.SKIP,
    message: str = "hello {date}",
) -> str:
    """A schedule as the API would store it at ``now``, before any post exists."""
    with sessions.begin() as session:
        schedule = Schedule(
            client_id=owner.client_id,
            credential_id=owner.credential_id,
            target=PAGE_ID,
            message=message,
            rrule=rrule,
            cron=cron,
            timezone=timezone,
            start_at=start_at,
            end_at=end_at,
            misfire=misfire,
            occurrences_created=0,
            created_at=now,
            updated_at=now,
        )
        restart_schedule(schedule, recurrence_of(schedule), now)
        session.add(schedule)
        session.flush()
        return schedule.id


def posts_of(sessions: sessionmaker[Session], schedule_id: str) -> list[Post]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Post).where(Post.schedule_id == schedule_id).order_by(Post.occurrence_at)
            )
        )


def events_of(sessions: sessionmaker[Session], schedule_id: str) -> list[ScheduleEvent]:
    with sessions() as session:
        return list(
            session.scalars(
                select(ScheduleEvent)
                .where(ScheduleEvent.schedule_id == schedule_id)
                .order_by(ScheduleEvent.id)
            )
        )


def schedule_row(sessions: sessionmaker[Session], schedule_id: str) -> Schedule:
    with sessions() as session:
        schedule = session.get(Schedule, schedule_id)
        assert schedule is not None
        return schedule


def api_settings(database_url: str, key: str) -> Settings:
    """Settings for an API that never needs Graph (schedules only) nor Redis."""
    return Settings(
        database_url=database_url,
        broker_url="memory://",
        graph_url="http://127.0.0.1:9",
        app_id="1234",
        app_secret="not-a-real-secret",
        encryption_keys=key,
        graph_timeout_s=2.0,
    )


@contextlib.contextmanager
def schedules_api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
