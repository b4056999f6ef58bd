"""Settings: one class, read once when a process starts.

Every variable of the README's settings, prefixed ``OFFPOST_``, from the environment or a
``.env`` file. A malformed value stops the process with one line naming the
variable; a value a command cannot run without is checked by
:meth:`Settings.require` before that command does any work.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from cryptography.fernet import Fernet, MultiFernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from offpost.errors import OffpostError

ENV_PREFIX = "OFFPOST_"
_VERSION_RE = re.compile(r"^v\d+\.\d+$")
_SCHEMES_BROKER = ("redis", "rediss", "memory", "sqla+sqlite", "sqla+postgresql", "amqp", "pyamqp")


class SettingsError(OffpostError):
    """A setting is missing or malformed; the message names the variable."""


#: The largest value each client quota may take (a setting's default or a client's own).
QUOTA_MAX: dict[str, int] = {
    "requests_per_minute": 1_000_000_000,
    "posts_per_day": 100_000_000,
    "pending_posts": 100_000_000,
    "active_schedules": 1_000_000,
    # One a minute, all day: schedules have minute precision.
    "occurrences_per_day": 1_440,
}


#: The most ages one post is fetched at (``OFFPOST_INSIGHTS_AFTER``, docs/insights.md).
MAX_INSIGHT_AGES = 10
#: No age beyond this: Graph keeps two years of insights, a post's counts settle far sooner.
MAX_INSIGHT_AGE = timedelta(days=90)
_AGE_LABEL_RE = re.compile(r"^([1-9]\d{0,4})([mhd])$")
_AGE_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


def parse_insight_age(label: str) -> timedelta:
    """The duration of one label (``"24h"`` → 24 hours); ValueError when malformed."""
    match = _AGE_LABEL_RE.match(label)
    if match is None:
        raise ValueError(f"{label!r} is not an age like 1h, 24h or 7d")
    age = int(match.group(1)) * _AGE_UNITS[match.group(2)]
    if age > MAX_INSIGHT_AGE:
        raise ValueError(f"{label!r} is longer than {MAX_INSIGHT_AGE.days} days")
    return age


def parse_insight_ages(text: str) -> list[tuple[str, timedelta]]:
    """``"1h,24h,7d"`` → ``[("1h", 1 h), ("24h", 24 h), ("7d", 7 d)]``, shortest first.

    Raises ValueError for an empty list, a malformed label, two labels of the same
    duration, or more than :data:`MAX_INSIGHT_AGES` of them.
    """
    labels = [part.strip() for part in text.split(",") if part.strip()]
    if not labels:
        raise ValueError("name at least one age, like 1h,24h,7d")
    if len(labels) > MAX_INSIGHT_AGES:
        raise ValueError(f"at most {MAX_INSIGHT_AGES} ages")
    ages = [(label, parse_insight_age(label)) for label in labels]
    durations = [age for _, age in ages]
    if len(set(durations)) != len(durations):
        raise ValueError("two ages are the same duration")
    return sorted(ages, key=lambda item: item[1])


class Settings(BaseSettings):
    """offpost's configuration (the README's settings)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = "sqlite:///./offpost.db"
    broker_url: str = "redis://localhost:6379/0"
    graph_url: str = "https://graph.facebook.com"
    graph_version: str = "v26.0"
    app_id: str | None = None
    app_secret: SecretStr | None = None
    encryption_keys: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    refresh_margin_hours: int = Field(default=72, ge=0, le=24 * 59)
    appsecret_time: bool = True
    # Beyond the README's settings: limits of the HTTP API.
    rate_limit_per_minute: int = Field(default=6000, ge=1, le=QUOTA_MAX["requests_per_minute"])
    auth_failures_per_minute: int = Field(default=20, ge=1)
    graph_timeout_s: float = Field(default=15.0, gt=0, le=120)
    # Beyond the README's settings: the publishing machinery (see docs/design.md).
    lease_s: int = Field(default=120, ge=5, le=3600)
    retry_base_s: float = Field(default=30.0, gt=0, le=3600)
    retry_cap_s: float = Field(default=3600.0, gt=0, le=86400)
    requeue_after_s: int = Field(default=120, ge=1, le=86400)
    dispatch_batch: int = Field(default=500, ge=1, le=10000)
    message_batch: int = Field(default=50, ge=1, le=500)
    publish_concurrency: int = Field(default=64, ge=1, le=256)
    dispatcher_max_sleep_s: float = Field(default=2.0, gt=0, le=60)
    # Publishes go to Graph up to graph_batch_size at a time in one batch request
    # (docs/graph.md, "Batch requests"); false sends each in a request of its own.
    graph_batch: bool = True
    graph_batch_size: int = Field(default=50, ge=2, le=50)
    queue: str = Field(default="offpost", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    # Beyond the README's settings: a directory the API and worker processes of one machine share
    # for Prometheus values (prometheus_client multiprocess mode); unset, each process
    # counts on its own and /metrics shows only the API process's own counters.
    metrics_dir: str | None = Field(default=None, min_length=1)
    # Beyond the README's settings: the port on which each worker, webhooks and dispatcher
    # process serves its own /metrics (docs/monitoring.md); unset, they serve none.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Where it listens: this machine only unless told (compose: 0.0.0.0, its own network).
    metrics_host: str = "127.0.0.1"
    # Beyond the README's settings: webhook delivery and the daily token check (docs/webhooks.md).
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    # Deliveries at once per `offpost webhooks` process (their own queue and pool).
    webhook_concurrency: int = Field(default=8, ge=1, le=256)
    # Deliveries in flight at once per client endpoint, so one backlog never fills the pool.
    webhook_per_endpoint: int = Field(default=2, ge=1, le=64)
    webhook_retry_base_s: float = Field(default=30.0, gt=0, le=3600)
    webhook_retry_cap_s: float = Field(default=3600.0, gt=0, le=86400)
    webhook_retry_for_s: float = Field(default=86400.0, gt=0, le=7 * 86400)
    # Private addresses and plain http for webhooks: development and tests only (docs/security.md).
    webhook_allow_private: bool = False
    expiry_sweep_every_s: float = Field(default=86400.0, gt=0, le=7 * 86400)
    # Days before the user token's end that ``credential.expiring`` warns (docs/tokens.md).
    expiry_warning_days: str = Field(default="14,3,1", pattern=r"^\s*\d{1,2}(\s*,\s*\d{1,2})*\s*$")
    # Beyond the README's settings: each client's quotas unless an operator overrides them for
    # it (docs/quotas.md); the requests per minute quota is rate_limit_per_minute above.
    quota_posts_per_day: int = Field(default=50_000, ge=1, le=QUOTA_MAX["posts_per_day"])
    quota_pending_posts: int = Field(default=100_000, ge=1, le=QUOTA_MAX["pending_posts"])
    quota_active_schedules: int = Field(default=1_000, ge=1, le=QUOTA_MAX["active_schedules"])
    quota_occurrences_per_day: int = Field(default=288, ge=1, le=QUOTA_MAX["occurrences_per_day"])
    # Beyond the README's settings: the media store (docs/media.md). "local" keeps uploads in
    # media_dir (default: "offpost-media" beside a SQLite database, or in the working
    # directory); "s3" keeps them in an S3-compatible bucket, for several machines.
    media_store: Literal["local", "s3"] = "local"
    media_dir: str | None = Field(default=None, min_length=1)
    s3_endpoint_url: str | None = Field(default=None, min_length=1)
    s3_bucket: str = Field(default="offpost-media", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # An upload no pending post or schedule uses is kept this long, then deleted.
    media_retention_h: float = Field(default=24.0, gt=0, le=24 * 365)
    # After a video by URL whose answer was lost, how long before it is looked for on the
    # Page (Graph fetches the file first, within 5 minutes by its own rule).
    url_video_settle_s: float = Field(default=600.0, ge=0, le=3600)
    # Beyond the README's settings: insights of published posts (docs/insights.md). The ages
    # after publishing at which a post's counts and insights are fetched, and how many posts
    # one worker process fetches a minute at most (each fetch is two Graph calls).
    insights_after: str = "1h,24h,7d"
    insights_per_minute: int = Field(default=60, ge=1, le=6000)
    # Pacing of Graph calls under Graph's rate limits
    # (docs/pacing.md). Calls per app and per Page stay under ceiling_pct of the budget
    # estimated from the usage headers, counted over rolling windows; while no reading has
    # told the budget, a key is not paced (or, with probe_calls, gets that many a window).
    # The windows are Graph's (app: one hour; Pages: 24 hours in Meta's current
    # documentation); tests and benchmarks against the sandbox shorten them. The ceiling
    # stays below the 95 % at which a usage header blocks the app or Page
    # (offpost.workers.ratelimit).
    pacing: bool = True
    pacing_ceiling_pct: int = Field(default=90, ge=10, le=95)
    pacing_probe_calls: int = Field(default=0, ge=0, le=100_000)
    pacing_app_window_s: int = Field(default=3600, ge=1, le=86_400)
    pacing_page_window_s: int = Field(default=86_400, ge=1, le=86_400)

    def warning_days(self) -> tuple[int, ...]:
        """``expiry_warning_days`` as whole days, largest first, without repeats or zeros."""
        days = {int(part) for part in self.expiry_warning_days.split(",")}
        return tuple(sorted((d for d in days if d > 0), reverse=True))

    def warn_within(self) -> timedelta:
        """How long before the user token's end a credential counts as ``expiring``."""
        return timedelta(days=max(self.warning_days(), default=0))

    def insight_ages(self) -> list[tuple[str, timedelta]]:
        """``insights_after`` as ``(label, age)`` pairs, shortest first."""
        return parse_insight_ages(self.insights_after)

    @field_validator("insights_after")
    @classmethod
    def _check_insights_after(cls, value: str) -> str:
        # Normalised, shortest first; a ValueError names the bad label.
        return ",".join(label for label, _ in parse_insight_ages(value))

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError("not a SQLAlchemy database URL") from exc
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("only sqlite:// and postgresql+psycopg:// URLs are supported")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in _SCHEMES_BROKER:
            raise ValueError(
                f"expected a broker URL such as redis://host:6379/0, got scheme {scheme!r}"
            )
        return value

    @field_validator("graph_url")
    @classmethod
    def _check_graph_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http(s) URL such as https://graph.facebook.com")
        return value.rstrip("/")

    @field_validator("graph_version")
    @classmethod
    def _check_graph_version(cls, value: str) -> str:
        if not _VERSION_RE.match(value):
            raise ValueError("expected a version such as v26.0")
        return value

    @field_validator("app_id")
    @classmethod
    def _check_app_id(cls, value: str | None) -> str | None:
        if value is not None and not value.isdigit():
            raise ValueError("a Facebook app id is a number")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _check_encryption_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        keys = [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
        if not keys:
            raise ValueError("empty; expected comma-separated Fernet keys, newest first")
        for position, key in enumerate(keys, start=1):
            try:
                Fernet(key)
            except ValueError:
                # Never echo the key itself: say which one is wrong.
                raise ValueError(
                    f"key #{position} is not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        return value

    @model_validator(mode="after")
    def _check_timings(self) -> Settings:
        # A worker must never still be calling Graph when its lease runs out, or a
        # second worker could reconcile too early and publish again.
        if self.lease_s < 3 * self.graph_timeout_s:
            raise ValueError(
                f"OFFPOST_LEASE_S ({self.lease_s}) must be at least 3 x "
                f"OFFPOST_GRAPH_TIMEOUT_S ({self.graph_timeout_s})"
            )
        return self

    def encryption_key_list(self) -> list[str]:
        """The Fernet keys, newest first (empty when none are configured)."""
        if self.encryption_keys is None:
            return []
        raw = self.encryption_keys.get_secret_value()
        return [k.strip() for k in raw.split(",") if k.strip()]

    def multi_fernet(self) -> MultiFernet:
        """Encrypt with the first key, decrypt with any; requires ``encryption_keys``."""
        self.require("encryption_keys")
        return MultiFernet([Fernet(k) for k in self.encryption_key_list()])

    @property
    def broker_url_is_set(self) -> bool:
        """Whether the broker URL came from the environment rather than the default."""
        return "broker_url" in self.model_fields_set

    @property
    def graph_base_url(self) -> str:
        """The versioned Graph base URL, e.g. ``https://graph.facebook.com/v26.0``."""
        return f"{self.graph_url}/{self.graph_version}"

    def require(self, *names: str) -> None:
        """Stop with a :class:`SettingsError` naming the first of ``names`` that is unset."""
        for name in names:
            if getattr(self, name) is None:
                raise SettingsError(f"{env_name(name)} is not set; {_HINTS.get(name, 'set it')}")


_HINTS = {
    "app_id": "set it to your Facebook app's id (or use the Graph sandbox)",
    "app_secret": "set it to your Facebook app's secret (App Settings > Basic)",
    "encryption_keys": (
        'generate one with: python -c "from cryptography.fernet import Fernet; '
        'print(Fernet.generate_key().decode())"'
    ),
}


def env_name(field: str) -> str:
    """The environment variable behind a settings field."""
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; any bad value becomes one :class:`SettingsError` line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a rule across variables names them itself
            raise SettingsError(message) from None
        raise SettingsError(f"{env_name(str(first['loc'][0]))}: {message}") from None
