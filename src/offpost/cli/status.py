"""``offpost status``: the numbers of ``GET /v1/admin/stats`` as tables in a terminal.

It reads the database directly (no API key, no running API needed) with the
same :func:`~offpost.posts.stats.collect_stats` the API uses, asks the
broker for the queue depth, and lists the credentials expiring soon. It reads
no token, so it needs no encryption keys. The pacing section comes from the
pacer's shared state in Redis (docs/pacing.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from offpost.cli.common import one_line_errors, process_settings
from offpost.cli.insights_status import insights_line

if TYPE_CHECKING:
    from rich.console import RenderableType

    from offpost.posts.quotas import ClientQuotas
    from offpost.posts.stats import ExpiringCredential, Stats
    from offpost.workers.pacing import PaceState


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _when(value: datetime, now: datetime) -> str:
    left = value - now
    stamp = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M Z")
    if left < timedelta(0):
        return f"{stamp} (expired)"
    return f"{stamp} (in {_seconds(left.total_seconds())})"


def render(
    stats: Stats,
    expiring: list[ExpiringCredential],
    now: datetime,
    within_hours: int,
    clients: Sequence[ClientQuotas] = (),
) -> list[RenderableType]:
    """The tables ``offpost status`` prints (pure: no I/O)."""
    from rich.table import Table

    posts = Table(title="Posts by status")
    posts.add_column("status")
    posts.add_column("posts", justify="right")
    for name, count in dataclasses.asdict(stats.posts).items():
        posts.add_row(name, str(count))

    pipeline = Table(title="Pipeline")
    pipeline.add_column("measure")
    pipeline.add_column("value", justify="right")
    hour = stats.last_hour
    pipeline.add_row("published in the last hour", str(hour.published))
    pipeline.add_row("failed in the last hour", str(hour.failed))
    pipeline.add_row("lateness p50", _seconds(hour.lateness_seconds.p50))
    pipeline.add_row("lateness p95", _seconds(hour.lateness_seconds.p95))
    pipeline.add_row("lateness p99", _seconds(hour.lateness_seconds.p99))
    pipeline.add_row("due, not dispatched", str(stats.due_not_dispatched))
    depth = "unknown" if stats.queue_depth is None else str(stats.queue_depth)
    pipeline.add_row("queue depth (messages)", depth)

    errors = Table(title="Top errors, 24 h")
    errors.add_column("code")
    errors.add_column("count", justify="right")
    for error in stats.top_errors:
        errors.add_row(error.code, str(error.count))
    if not stats.top_errors:
        errors.add_row("none", "0")

    credentials = Table(title="Credentials by status")
    credentials.add_column("status")
    credentials.add_column("credentials", justify="right")
    for name, count in dataclasses.asdict(stats.credentials).items():
        credentials.add_row(name, str(count))

    soon = Table(title=f"Credentials expiring within {within_hours} h")
    soon.add_column("credential", no_wrap=True)  # an id is no use cut short
    for column in ("client", "facebook user", "status", "expires"):
        soon.add_column(column)
    for cred in expiring:
        soon.add_row(
            cred.id, cred.client_name, cred.fb_user_id, cred.status, _when(cred.expires_at, now)
        )
    if not expiring:
        soon.add_row("none", "", "", "", "")
    return [posts, pipeline, errors, credentials, soon, _near_quotas(clients)]


#: A client shows under "Clients near a quota" from this share of a quota on.
NEAR_QUOTA = 0.8


def _near_quotas(clients: Sequence[ClientQuotas]) -> RenderableType:
    from rich.table import Table

    table = Table(title=f"Clients near a quota ({NEAR_QUOTA:.0%} or more used)")
    for column in ("client", "quota", "used", "limit"):
        table.add_column(column, justify="right" if column in ("used", "limit") else "left")
    rows = 0
    for client in clients:
        for quota in client.near(NEAR_QUOTA):
            own = " (own)" if quota in client.overridden else ""
            limit = f"{client.quotas[quota]}{own}"
            table.add_row(client.name, quota.value, str(client.used(quota)), limit)
            rows += 1
    if not rows:
        table.add_row("none", "", "", "")
    return table


#: A pacing key shows under "Pacing" from this share of its ceiling on (or once it made a
#: call wait in its window).
NEAR_CEILING = 0.8


def pacing_table(states: Sequence[PaceState] | None, unknown: str = "") -> RenderableType:
    """The keys the pacer holds back or soon will (pure: no I/O); ``states`` None: unknown."""
    from rich.table import Table

    table = Table(
        title=f"Pacing (keys at {NEAR_CEILING:.0%} of their ceiling or more, or paced lately)"
    )
    for column in ("scope", "id", "budget", "used", "ceiling", "next free", "waits"):
        table.add_column(column, justify="left" if column in ("scope", "id") else "right")
    if states is None:
        table.add_row(unknown or "unknown", "", "", "", "", "", "")
        return table
    rows = 0
    for state in states:
        if not state.near(NEAR_CEILING):
            continue
        window = _seconds(state.window_s).replace(".0 ", " ")
        if state.budget is None:
            budget, used = "unknown", f"{state.used:.0f} calls"
            ceiling = (
                f"probe: {state.allowed:,.0f} calls"
                if math.isfinite(state.allowed)
                else "not paced until a reading"
            )
        else:
            budget = f"{state.budget:,.0f} / {window}"
            used = f"{state.used / state.budget:.0%}"
            ceiling = f"{state.ceiling_pct} % = {state.allowed:,.0f} calls"
        free = "now" if not state.pacing else _seconds(state.next_free_s)
        table.add_row(state.scope, state.id, budget, used, ceiling, free, str(state.waits))
        rows += 1
    if not rows:
        table.add_row("none", "", "", "", "", "", "")
    return table


@click.command()
@click.option(
    "--expiring-within-hours",
    type=click.IntRange(0, 24 * 366),
    default=None,
    help="List credentials expiring this soon [default: OFFPOST_REFRESH_MARGIN_HOURS].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the stats document as JSON.")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes (with --watch).",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=None,
    help="Stop after this many refreshes (with --watch) [default: until Ctrl-C].",
)
@one_line_errors
def status(
    expiring_within_hours: int | None,
    as_json: bool,
    watch: bool,
    interval: float,
    count: int | None,
) -> None:
    """Job counts by status, lateness, recent failures, credentials expiring soon, clients
    near a quota and Pages or apps the pacer holds back; --watch keeps them up to date."""
    from rich.console import Console, Group

    from offpost.api.exporter import QueueProbe
    from offpost.models import make_engine, make_sessionmaker
    from offpost.models.base import utcnow
    from offpost.models.migrate import ensure_schema_current
    from offpost.posts.quotas import QuotaDefaults, client_quotas
    from offpost.posts.stats import collect_stats, expiring_credentials
    from offpost.workers.pacing import PaceReader, PacingConfig

    if watch and as_json:
        raise click.UsageError("--watch shows tables; leave out --json")
    if not watch and count is not None:
        raise click.UsageError("--count goes with --watch")
    settings = process_settings()
    within_hours = (
        settings.refresh_margin_hours if expiring_within_hours is None else expiring_within_hours
    )
    engine = make_engine(settings.database_url)
    queue = QueueProbe(settings.broker_url, settings.queue)
    sessions = make_sessionmaker(engine)
    pacing = PaceReader(settings.broker_url, PacingConfig.of(settings))

    def read() -> tuple[Stats, list[RenderableType]]:
        now = utcnow()
        with sessions() as session:
            stats = collect_stats(session, now, queue_depth=queue.depth())
            expiring = expiring_credentials(session, now, timedelta(hours=within_hours))
            clients = client_quotas(session, now, QuotaDefaults.of(settings))
            insights = insights_line(session, now)
        paced = pacing_table(*pacing.read())
        return stats, [*render(stats, expiring, now, within_hours, clients), paced, insights]

    try:
        ensure_schema_current(engine)
        if watch:
            _watch(lambda: Group(*read()[1]), interval, count)
            return
        stats, tables = read()
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(stats), indent=2))
            return
        console = Console()
        for table in tables:
            console.print(table)
    finally:
        pacing.close()
        queue.close()
        engine.dispose()


def _watch(frame: Callable[[], RenderableType], interval: float, count: int | None) -> None:
    """Show ``frame()`` in place, refreshed every ``interval`` seconds, until Ctrl-C
    (or ``count`` refreshes)."""
    import time

    from rich.live import Live
    from rich.text import Text

    def stamped() -> RenderableType:
        from rich.console import Group

        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S Z")
        hint = f"offpost status, {stamp}; every {interval:g} s, Ctrl-C to stop"
        return Group(Text(hint, style="dim"), frame())

    shown = 0
    try:
        with Live(stamped(), auto_refresh=False, screen=False) as live:
            shown = 1
            while count is None or shown < count:
                time.sleep(interval)
                live.update(stamped(), refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass
