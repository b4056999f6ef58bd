"""The pacer's semantics, on an injected clock (docs/pacing.md).

The scenarios (``test_scenario_*``) take the ``pacers`` fixture: here it opens
:class:`MemoryPacer`; ``tests/integration/test_pacing_redis.py`` runs the very
same functions against :class:`RedisPacer` on the real Redis. The rest checks
what only one place has: settings, ``readings_for``, the metrics, the status table.

Windows are short (app 60 s, Pages 600 s: buckets of 1 s and 10 s) and the
clock starts on a bucket boundary, so every wait below is exact. A call admitted
in bucket ``b`` leaves the count when bucket ``b + BUCKETS + 1`` (``b + 61``)
begins: calls made at START leave at START + 61 buckets, START + 610 s for a
Page (START + 61 s for the app).
"""

from __future__ import annotations

import dataclasses
import gc
import io
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console

from offpost.cli.status import pacing_table
from offpost.graph.usage import BusinessUseCaseUsage, GraphUsage, UsageCounters
from offpost.settings import SettingsError, load_settings
from offpost.workers.metrics import PACING_LEVEL_FRESH_S, MetricsObserver, PublishMetrics
from offpost.workers.observe import NullObserver, Observers, PacingObserver
from offpost.workers.pacing import (
    MemoryPacer,
    NullPacer,
    Pacer,
    PaceReader,
    PaceState,
    PacingConfig,
    RedisPacer,
    local_snapshot,
    make_pacer,
    pacing_keys,
    readings_for,
)

START = 1_000_000.0
CONFIG = PacingConfig(ceiling_pct=90, probe_calls=10, app_window_s=60, page_window_s=600)
PAGE = "page:1"
APP = "app:9"


def config(**changes: float) -> PacingConfig:
    """CONFIG with some of its numbers changed."""
    return dataclasses.replace(CONFIG, **changes)  # type: ignore[arg-type]


class Clock:
    """Time that moves only when told."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Recorder:
    """A PacingObserver that remembers what it was told."""

    waits: list[tuple[str, float]] = field(default_factory=list)
    usage: dict[str, float] = field(default_factory=dict)

    def paced(self, scope: str, wait_s: float) -> None:
        self.waits.append((scope, wait_s))

    def pace_usage(self, key: str, ratio: float) -> None:
        self.usage[key] = ratio


@dataclass
class Pacers:
    """Opens pacers on one shared state: the scenarios' only way to make one."""

    open: Callable[..., Pacer]
    #: Whether two pacers opened here share their counts (Redis) or not (memory).
    shared: bool

    def __call__(
        self, clock: Clock, config: PacingConfig = CONFIG, observer: Recorder | None = None
    ) -> Pacer:
        return self.open(clock, config, observer)


@pytest.fixture
def pacers() -> Pacers:
    return Pacers(lambda clock, config, observer: MemoryPacer(config, clock, observer), False)


def state(pacer: Pacer, key: str) -> PaceState:
    found = {s.key: s for s in pacer.snapshot()}
    assert key in found, f"{key} not in {sorted(found)}"
    return found[key]


def learn_budget(pacer: Pacer, key: str, replies: int, pct: int) -> None:
    """Make ``replies`` calls and read ``pct`` % on each reply: the budget becomes
    100·replies/(pct+1) (the last bound is the largest)."""
    assert pacer.admit([[key]] * replies) == [0.0] * replies
    for _ in range(replies):
        pacer.observe([(key, pct)])


# --- the scenarios (also run against Redis) -----------------------------------------------------


def test_scenario_probe_allowance_before_any_reading(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    waits = pacer.admit([[PAGE]] * 12)
    # Ten probe calls; the others wait for the first of them to leave the window, when
    # bucket b0 + 61 begins: START + 610.
    assert waits == [0.0] * 10 + [610.0, 610.0]
    s = state(pacer, PAGE)
    assert (s.budget, s.calls, s.allowed, s.waits, s.next_free_s) == (None, 10, 10.0, 2, 610.0)
    assert s.pacing


def test_scenario_no_probe_allowance_paces_nothing_before_a_reading(pacers: Pacers) -> None:
    """As shipped: a key no reading has told about is not paced (Graph sends usage
    headers only "once enough calls have been made"), then is as soon as one has."""
    clock = Clock()
    pacer = pacers(clock, config(probe_calls=0))
    assert pacer.admit([[PAGE]] * 500) == [0.0] * 500
    s = state(pacer, PAGE)
    assert (s.budget, s.calls, s.allowed, s.waits) == (None, 500, math.inf, 0)
    learn_budget(pacer, PAGE, 10, 0)  # the budget is at least 1000: 900 may be in the window
    waits = pacer.admit([[PAGE]] * 391)
    assert waits[:390] == [0.0] * 390  # 510 are in the window already
    assert waits[390] > 0


def test_scenario_admission_up_to_the_ceiling_with_a_known_budget(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    learn_budget(pacer, PAGE, 10, 0)  # 10 replies at 0 %: the budget is at least 1000
    s = state(pacer, PAGE)
    assert (s.budget, s.allowed, s.reported_pct) == (1000.0, 900.0, 0)
    waits = pacer.admit([[PAGE]] * 900)
    assert waits.count(0.0) == 890  # 10 + 890 = 900 = 90 % of 1000
    assert waits[890:] == [610.0] * 10  # all were admitted at START: they leave at START + 610
    assert state(pacer, PAGE).calls == 900


def test_scenario_waits_come_from_the_window(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    assert pacer.admit([[PAGE]] * 4) == [0.0] * 4
    clock.advance(100)
    assert pacer.admit([[PAGE]] * 6) == [0.0] * 6
    clock.advance(50)
    # The probe allowance (10) is used up; one slot frees when the first 4 leave, at
    # START + 610 (bucket b0 + 61): 460 s from now. The second call needs those same 4.
    assert pacer.admit([[PAGE]] * 2) == [460.0, 460.0]
    clock.advance(2.5)
    assert pacer.admit([[PAGE]]) == [457.5]


def test_scenario_recovery_as_the_window_slides(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    assert pacer.admit([[PAGE]] * 4) == [0.0] * 4
    clock.advance(100)
    assert pacer.admit([[PAGE]] * 6) == [0.0] * 6
    clock.advance(510)  # START + 610, bucket b0 + 61: the first 4 leave
    # The 6 of bucket b0 + 10 leave when b0 + 71 begins: START + 710, 100 s from now.
    assert pacer.admit([[PAGE]] * 5) == [0.0] * 4 + [100.0]
    clock.advance(100)  # START + 710: the next 6 leave
    # The 4 just admitted (bucket b0 + 61) leave when b0 + 122 begins: START + 1220.
    assert pacer.admit([[PAGE]] * 7) == [0.0] * 6 + [510.0]
    s = state(pacer, PAGE)
    assert (s.calls, s.waits) == (10, 2)


def test_scenario_bucketed_window_never_forgets_early(pacers: Pacers) -> None:
    """A call is counted until a full window after its admission, even one admitted late
    in its bucket: it leaves when bucket b + 61 begins, between one window and one
    bucket (10 s here) more after it."""
    clock = Clock(START + 9.75)  # late in bucket b0 = [START, START + 10)
    pacer = pacers(clock)
    assert pacer.admit([[PAGE]] * 10) == [0.0] * 10
    # They leave when bucket b0 + 61 begins: START + 610, 600.25 s from now.
    assert pacer.admit([[PAGE]]) == [600.25]
    clock.advance(599.5)  # START + 609.25: half a second short of a full window
    assert pacer.admit([[PAGE]]) == [0.75]
    clock.advance(0.5)  # START + 609.75: a full window after them, still counted
    assert pacer.admit([[PAGE]]) == [0.25]
    clock.advance(0.25)  # START + 610: bucket b0 + 61 begins
    assert pacer.admit([[PAGE]]) == [0.0]
    s = state(pacer, PAGE)
    # Waits leave like calls: the one of bucket b0 has left, the two of b0 + 60 stay.
    assert (s.calls, s.waits) == (1, 2)


def test_scenario_budget_is_the_largest_lower_bound_from_replies(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock, config(probe_calls=20))
    assert pacer.admit([[PAGE]] * 20) == [0.0] * 20
    # Only one reply is back: Graph counted at least that one call, whatever is in flight.
    pacer.observe([(PAGE, 0)])
    assert state(pacer, PAGE).budget == 100.0
    for _ in range(19):
        pacer.observe([(PAGE, 9)])  # the 20th: 100·20/10 = 200
    assert state(pacer, PAGE).budget == 200.0
    # A smaller bound (someone else's calls raise the %) does not lower it...
    pacer.observe([(PAGE, 50)])
    assert state(pacer, PAGE).budget == 200.0
    # ...until the largest bound is a window old: then the estimate is learnt afresh.
    clock.advance(600)  # START + 600, bucket b0 + 60
    s = state(pacer, PAGE)
    # The replies of bucket b0 left when b0 + 58 began; its calls stay until b0 + 61.
    assert (s.budget, s.reported_pct, s.replies, s.calls) == (None, None, 0, 20)
    pacer.observe([(PAGE, 50)])  # m = 1: this reply alone
    assert state(pacer, PAGE).budget == pytest.approx(100 * 1 / 51)


def test_scenario_the_bound_takes_the_highest_reading_of_the_window(pacers: Pacers) -> None:
    """Replies arrive in the order threads finish, not the order Graph ran the calls: the
    reading seen last need not be the one that counted all the replies seen. The one
    Graph gave the call it ran last is the highest, and it counted every one of them."""
    clock = Clock()
    pacer = pacers(clock, config(probe_calls=0))
    assert pacer.admit([[PAGE]] * 20) == [0.0] * 20
    pacer.observe([(PAGE, 9)] * 19)  # 19 replies: 100·19/10 = 190
    # The call Graph ran first answers last, at 0 %: with its own reading the bound
    # would be 100·20/1 = 2000; the window's highest reading (9 %) makes it 200.
    pacer.observe([(PAGE, 0)])
    assert state(pacer, PAGE).budget == 200.0
    assert state(pacer, PAGE).reported_pct == 0


def test_scenario_replies_bound_the_budget_only_from_the_newest_buckets(pacers: Pacers) -> None:
    """A reply counts in m (B ≥ 100·m/(p+1)) only while in the newest BUCKETS - 2
    buckets: a reply of bucket b leaves m when bucket b + 58 begins."""
    clock = Clock()
    pacer = pacers(clock)
    learn_budget(pacer, PAGE, 10, 0)  # 10 replies in bucket b0: budget 1000
    clock.advance(575)  # START + 575, bucket b0 + 57: b0 is still among the newest 58
    pacer.observe([(PAGE, 0)])  # m = 11: 100·11/1 = 1100
    s = state(pacer, PAGE)
    assert (s.replies, s.budget) == (11, 1100.0)
    clock.advance(5)  # START + 580, bucket b0 + 58: the 10 replies of b0 leave
    pacer.observe([(PAGE, 0)])  # m = 2: 200, below 1100 (with the 10, 1200 would win)
    s = state(pacer, PAGE)
    assert (s.replies, s.budget, s.calls) == (2, 1100.0, 10)  # the calls stay until b0 + 61


def test_scenario_reported_usage_of_others_is_respected(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock, config(probe_calls=20))
    learn_budget(pacer, PAGE, 20, 9)  # budget 200, ceiling 180
    # Graph now says 50 %: 100 calls, though offpost made 20. Its count wins.
    pacer.observe([(PAGE, 50)])
    s = state(pacer, PAGE)
    assert (s.calls, s.used, s.reported_pct) == (20, 100.0, 50)
    waits = pacer.admit([[PAGE]] * 100)
    # 100 + 80 = 180. The rest wait for a fresh reading: a refresh may spend 1 % of
    # the budget (2 calls) a window, one call each 300 s.
    assert waits.count(0.0) == 80
    assert waits[80:] == [300.0] * 20
    assert state(pacer, PAGE).used == 180.0


def test_scenario_a_reading_over_the_ceiling_lets_a_call_read_it_again_now_and_then(
    pacers: Pacers,
) -> None:
    clock = Clock()
    pacer = pacers(clock)
    learn_budget(pacer, PAGE, 10, 0)  # budget 1000: 10 refreshes a window, one each 60 s
    pacer.observe([(PAGE, 92)])  # others' usage
    assert pacer.admit([[PAGE]] * 2) == [60.0, 60.0]
    clock.advance(60)
    # One call goes to read the usage again; the next waits for the next refresh.
    assert pacer.admit([[PAGE]] * 2) == [0.0, 60.0]
    pacer.observe([(PAGE, 92)])
    assert pacer.admit([[PAGE]]) == [60.0]
    clock.advance(60)
    pacer.observe([(PAGE, 40)])  # the others' calls left Graph's window
    assert pacer.admit([[PAGE]] * 3) == [0.0] * 3


def test_scenario_a_high_reading_without_a_budget_is_waited_out(pacers: Pacers) -> None:
    """Before offpost knows the budget, 1 % of it is less than a call: no refresh."""
    clock = Clock()
    pacer = pacers(clock)
    pacer.observe([(PAGE, 92)])  # before offpost made any call
    assert pacer.admit([[PAGE]] * 2) == [600.0, 600.0]
    clock.advance(599)
    assert pacer.admit([[PAGE]]) == [1.0]
    clock.advance(1)
    assert pacer.admit([[PAGE]] * 3) == [0.0] * 3


def test_scenario_a_stale_reading_is_forgotten_after_a_window(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    pacer.observe([(APP, 99)])
    assert pacer.admit([[APP]]) == [60.0]
    clock.advance(60)
    assert pacer.admit([[APP]] * 2) == [0.0, 0.0]


def test_scenario_a_call_takes_every_key_or_none_earlier_calls_first(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    assert pacer.admit([[PAGE]] * 10) == [0.0] * 10  # the Page is full, the app is not
    waits = pacer.admit([[APP, PAGE], [APP], [APP, "page:2", APP]])
    assert waits == [610.0, 0.0, 0.0]
    assert state(pacer, APP).calls == 2  # the refused call took no app slot
    assert state(pacer, "page:2").calls == 1
    # Within one list, an earlier call takes the last slot before a later one.
    assert pacer.admit([["page:3"]] * 9) == [0.0] * 9
    assert pacer.admit([["page:3", APP], ["page:3"]]) == [0.0, 610.0]


def test_scenario_keys_other_than_app_and_page_are_not_paced(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    assert pacer.admit([["user:5"]] * 30) == [0.0] * 30
    pacer.observe([("user:5", 99)])
    assert pacer.admit([[]]) == [0.0]
    assert all(not s.key.startswith("user:") for s in pacer.snapshot())


def test_scenario_windows_are_per_scope(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    # Each waits 61 buckets: 61 x 1 s for the app, 61 x 10 s for the Page.
    assert pacer.admit([[APP], [PAGE]] * 11) == [0.0] * 20 + [61.0, 610.0]
    assert state(pacer, APP).window_s == 60.0
    assert state(pacer, PAGE).window_s == 600.0


def test_scenario_idle_keys_leave_the_snapshot(pacers: Pacers) -> None:
    clock = Clock()
    pacer = pacers(clock)
    pacer.admit([[APP]] * 11)
    pacer.observe([(APP, 3)])
    assert [s.key for s in pacer.snapshot() if s.key == APP] == [APP]
    clock.advance(60)  # START + 60: the reading is a window old, the calls still count
    assert state(pacer, APP).calls == 10
    clock.advance(1)  # START + 61: bucket b0 + 61 begins, the calls and the wait leave
    assert [s for s in pacer.snapshot() if s.key == APP] == []


def test_scenario_the_observer_hears_each_wait_and_the_usage(pacers: Pacers) -> None:
    clock = Clock()
    heard = Recorder()
    pacer = pacers(clock, observer=heard)
    learn_budget(pacer, APP, 10, 0)  # app budget 1000
    heard.waits.clear()
    assert pacer.admit([[PAGE]] * 10) == [0.0] * 10
    # The Page (no budget yet, probe used up) sets the wait of the call on both keys.
    assert pacer.admit([[APP, PAGE], [APP]]) == [610.0, 0.0]
    assert heard.waits == [("page", 610.0)]
    assert heard.usage[APP] == pytest.approx(11 / 1000)
    assert PAGE not in heard.usage  # no budget, no ratio


def test_scenario_no_over_admission_when_many_threads_admit_at_once(pacers: Pacers) -> None:
    clock = Clock()
    first = pacers(clock, config(probe_calls=50))
    # Two pacers on one shared state where there is one (Redis), else one pacer.
    both = [first, pacers(clock, config(probe_calls=50)) if pacers.shared else first]
    admitted: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker(n: int) -> None:
        pacer = both[n % 2]
        start.wait()
        for _ in range(10):
            took = pacer.admit([[PAGE, APP], [PAGE]]).count(0.0)
            with lock:
                admitted.append(took)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 50
    assert state(first, PAGE).calls == 50
    assert state(first, PAGE).waits == 16 * 10 * 2 - 50


# --- what only the in-memory pacer has ------------------------------------------------------------


def test_status_in_this_process_sees_the_live_memory_pacers() -> None:
    clock = Clock()
    pacer = MemoryPacer(CONFIG, clock)
    pacer.admit([["page:local-view"]])
    found = local_snapshot()
    assert found is not None
    assert "page:local-view" in [s.key for s in found]
    del pacer
    gc.collect()
    assert "page:local-view" not in [s.key for s in local_snapshot() or []]


def test_idle_keys_are_swept_from_memory() -> None:
    clock = Clock()
    pacer = MemoryPacer(CONFIG, clock)
    pacer.admit([[f"page:{n}"] for n in range(100)])
    clock.advance(610)  # bucket b0 + 61 begins: the Pages' calls of bucket b0 leave
    pacer.admit([[APP]])
    assert list(pacer._keys) == [APP]


# --- readings, keys, factory ----------------------------------------------------------------------


def test_readings_for_takes_the_app_and_the_highest_page_reading() -> None:
    usage = GraphUsage(
        app=UsageCounters(call_count_pct=12, total_time_pct=30),
        page=UsageCounters(call_count_pct=40),
        business=(
            BusinessUseCaseUsage("456", "pages", call_count_pct=20, total_cputime_pct=55),
            BusinessUseCaseUsage("789", "pages", call_count_pct=99),
        ),
    )
    assert readings_for(usage, app_id="123", page_id="456") == [("app:123", 30), ("page:456", 55)]
    assert readings_for(usage, app_id="123", page_id="000") == [("app:123", 30), ("page:000", 40)]
    assert readings_for(GraphUsage(), app_id="123", page_id="456") == []
    only_buc = GraphUsage(business=(BusinessUseCaseUsage("456", "pages", call_count_pct=7),))
    assert readings_for(only_buc, app_id="123", page_id="456") == [("page:456", 7)]


def test_pacing_keys_follow_the_token() -> None:
    assert pacing_keys("123", "456", page_token=True) == ["page:456"]
    assert pacing_keys("123", "456", page_token=False) == ["app:123", "page:456"]


def test_make_pacer_shares_through_redis_else_this_process() -> None:
    assert isinstance(make_pacer("redis://127.0.0.1:9/0"), RedisPacer)
    assert isinstance(make_pacer("memory://"), MemoryPacer)
    off = make_pacer("redis://127.0.0.1:9/0", PacingConfig(enabled=False))
    assert isinstance(off, NullPacer)
    assert off.admit([[PAGE]] * 3) == [0.0] * 3
    assert off.snapshot() == []


def test_the_status_reader_says_why_it_does_not_know() -> None:
    assert PaceReader("memory://", PacingConfig(enabled=False)).read() == (
        None,
        "off (OFFPOST_PACING=false)",
    )
    reader = PaceReader("redis://127.0.0.1:9/0", CONFIG, timeout_s=0.2)
    states, why = reader.read()
    reader.close()
    assert states is None
    assert why.startswith("unknown: pacing state unreadable: Redis unreachable")


# --- settings -------------------------------------------------------------------------------------


def test_pacing_settings_defaults() -> None:
    config = PacingConfig.of(load_settings())
    assert config == PacingConfig(
        enabled=True, ceiling_pct=90, probe_calls=0, app_window_s=3600, page_window_s=86400
    )


def test_pacing_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "OFFPOST_PACING": "false",
        "OFFPOST_PACING_CEILING_PCT": "80",
        "OFFPOST_PACING_PROBE_CALLS": "5",
        "OFFPOST_PACING_APP_WINDOW_S": "60",
        "OFFPOST_PACING_PAGE_WINDOW_S": "600",
    }.items():
        monkeypatch.setenv(name, value)
    assert PacingConfig.of(load_settings()) == PacingConfig(False, 80, 5, 60, 600)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OFFPOST_PACING_CEILING_PCT", "96"),
        ("OFFPOST_PACING_CEILING_PCT", "5"),
        ("OFFPOST_PACING_PROBE_CALLS", "-1"),
        ("OFFPOST_PACING_APP_WINDOW_S", "0"),
        ("OFFPOST_PACING_PAGE_WINDOW_S", "90000"),
        ("OFFPOST_PACING", "perhaps"),
    ],
)
def test_pacing_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^{name}: "):
        load_settings()


# --- metrics and observers ------------------------------------------------------------------------


def test_metrics_count_waits_and_keep_the_busiest_key_per_scope() -> None:
    registry = CollectorRegistry()
    clock = Clock(0.0)
    observer = MetricsObserver(PublishMetrics(registry), clock=clock)
    assert isinstance(observer, PacingObserver)
    observer.paced("page", 12.0)
    observer.paced("page", 4000.0)
    observer.paced("app", 0.5)
    get = registry.get_sample_value
    assert get("offpost_pacing_waits_total", {"scope": "page"}) == 2
    assert get("offpost_pacing_waits_total", {"scope": "app"}) == 1
    assert get("offpost_pacing_wait_seconds_bucket", {"scope": "page", "le": "15.0"}) == 1
    assert get("offpost_pacing_wait_seconds_sum", {"scope": "page"}) == 4012.0
    observer.pace_usage("page:1", 0.7)
    observer.pace_usage("page:2", 0.4)
    observer.pace_usage("app:9", 0.1)
    assert get("offpost_pacing_usage_ratio", {"scope": "page"}) == 0.7
    clock.advance(PACING_LEVEL_FRESH_S + 1)  # page:1 went quiet
    observer.pace_usage("page:2", 0.5)
    assert get("offpost_pacing_usage_ratio", {"scope": "page"}) == 0.5
    assert get("offpost_pacing_usage_ratio", {"scope": "app"}) == 0.1


def test_observers_pass_pacing_on_to_those_that_listen() -> None:
    heard = Recorder()
    quiet = NullObserver()
    both = Observers([quiet, heard])  # type: ignore[list-item]
    both.paced("app", 3.0)
    both.pace_usage("app:1", 0.25)
    assert heard.waits == [("app", 3.0)]
    assert heard.usage == {"app:1": 0.25}


# --- offpost status -------------------------------------------------------------------------------


def rendered(table: object) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_the_status_table_shows_keys_near_their_ceiling_only() -> None:
    def s(key: str, budget: float | None, used: float, waits: int, free: float) -> PaceState:
        allowed = 10.0 if budget is None else budget * 0.9
        return PaceState(key, 86400.0, budget, int(used), 3, 12, used, 90, allowed, waits, free)

    states = [
        s("page:111", 10_000.0, 8_000.0, 0, 0.0),  # 89 % of its ceiling: shown
        s("page:222", 10_000.0, 100.0, 0, 0.0),  # quiet: hidden
        s("app:333", None, 10.0, 4, 90.0),  # probe used up, paced
        s("page:444", 10_000.0, 200.0, 2, 0.0),  # made calls wait in the window: shown
    ]
    text = rendered(pacing_table(states))
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") > 2}
    assert set(lines) == {"111", "333", "444"}
    assert "10,000 / 24 h" in lines["111"]
    assert "80%" in lines["111"]
    assert "90 % = 9,000 calls" in lines["111"]
    assert "now" in lines["111"]
    assert "unknown" in lines["333"]
    assert "10 calls" in lines["333"]
    assert "probe: 10 calls" in lines["333"]
    assert "90.0 s" in lines["333"]


def test_the_status_table_says_none_or_why_it_does_not_know() -> None:
    assert "none" in rendered(pacing_table([]))
    unknown = rendered(pacing_table(None, "unknown: offpost up keeps it in its own process"))
    assert "unknown: offpost up keeps it in its own process" in unknown


def test_the_status_reader_of_the_embedded_mode_reads_this_process() -> None:
    pacer = MemoryPacer(CONFIG, Clock())
    pacer.admit([["page:embedded"]])
    states, why = PaceReader("memory://", CONFIG).read()
    assert why == ""
    assert states is not None
    assert "page:embedded" in [s.key for s in states]


# --- against a model of Graph ---------------------------------------------------------------------


@dataclass
class Drained:
    hours: float
    peak_pct: float
    throttled: int


def burst_against_graph(
    *, budget: int, graph_window_s: int, assumed_window_s: int, burst: int, others_per_h: int = 0
) -> Drained:
    """``burst`` calls on one Page, 50 at a time (a batch in flight: its readings come back
    after all 50 went), against Graph as an exact sliding window with floored percentages;
    others call the Page evenly from one window before the burst on."""
    clock = Clock(0.0)
    pacer = MemoryPacer(
        config(probe_calls=50, page_window_s=assumed_window_s, app_window_s=60), clock
    )
    counted: deque[float] = deque()

    def graph_counts(at: float) -> int:
        while counted and counted[0] <= at - graph_window_s:
            counted.popleft()
        counted.append(at)
        return len(counted)

    gap = 3600 / others_per_h if others_per_h else None
    others_at = 0.0
    start = clock.now = float(graph_window_s) if gap else 0.0
    left, peak, throttled = burst, 0.0, 0
    while left:
        while gap and others_at <= clock.now:
            graph_counts(others_at)
            others_at += gap
        waits = pacer.admit([[PAGE]] * min(50, left))
        readings = []
        for _ in range(waits.count(0.0)):
            count = graph_counts(clock.now)
            peak = max(peak, 100 * count / budget)
            throttled += count > budget
            readings.append((PAGE, 100 * count // budget))
        pacer.observe(readings)
        left -= len(readings)
        if not readings:
            clock.advance(min(waits))
        assert clock.now < 30 * 86400, "never drained"
    return Drained((clock.now - start) / 3600, peak, throttled)


def test_a_burst_drains_at_the_fastest_rate_under_the_ceiling() -> None:
    # 5000 calls, 1000 a window: 898 at once, then 898 each time they leave, a window and
    # a bucket (3600 + 60 s) after their admission at a bucket's start: the sixth and last
    # wave goes 5 x 3660 s in.
    run = burst_against_graph(budget=1000, graph_window_s=3600, assumed_window_s=3600, burst=5000)
    assert (run.hours, run.throttled) == (5 * 3660 / 3600, 0)
    assert run.peak_pct == pytest.approx(89.8)
    # Others' steady 300 calls an hour leave 600 a window: slower, never over.
    shared = burst_against_graph(
        budget=1000, graph_window_s=3600, assumed_window_s=3600, burst=5000, others_per_h=300
    )
    assert shared.peak_pct <= 90.0
    assert shared.throttled == 0


def test_a_window_longer_than_graphs_is_slow_never_throttled() -> None:
    """Why the Pages window defaults to 24 hours: if Graph's is one hour (older revisions of
    Meta's page), offpost only waits longer than it must."""
    run = burst_against_graph(
        budget=1000, graph_window_s=3600, assumed_window_s=6 * 3600, burst=3000
    )
    assert run.throttled == 0
    assert run.peak_pct < 90.0
