"""Pacing: keep offpost's Graph calls under Graph's rate limits instead of running into them.

The blocks of :mod:`offpost.workers.ratelimit` act once Graph says "nearly
throttled" (a usage header at 95 %) or "throttled" (an error). The pacer acts
before: every Graph call first asks :meth:`Pacer.admit`. Each call names the
pacing keys it counts against (``app:<id>``, ``page:<id>``, the strings of
:func:`~offpost.workers.ratelimit.app_key` and
:func:`~offpost.workers.ratelimit.page_key`). A call goes only when it keeps
every one of its keys under a ceiling of that key's budget. docs/pacing.md
gives the sources and the reasons; in short:

- **What Graph counts.** Calls in a rolling window per key: one hour for the
  app (200 x daily users), 24 hours for a Page's Business Use Case limit
  (4800 x engaged users; older revisions of Meta's page said one hour). Each
  call of a batch request counts. The windows are settings.
- **What offpost counts.** Per key, the calls it admitted in that window, in
  :data:`BUCKETS` buckets. A call leaves the count between one window and one
  bucket more after it was admitted: never earlier than Graph forgets it (unless
  it reached Graph more than a bucket after its admission).
- **The budget B is not known: it is estimated from the usage headers.** A
  reply whose header reports ``p`` % while offpost has seen ``m`` replies for
  that key in the newest ``BUCKETS - 2`` buckets (calls Graph surely still
  counts) proves ``B ≥ 100·m/(p+1)`` (Graph counted at least
  those ``m`` calls, and whole-number percentages are at most one below the
  truth whichever way Graph rounds). It is a lower bound, so it is safe: other
  apps' calls on a Page, or offpost's own calls that are not paced, only make
  B look smaller. It counts *replies*, not admissions, so calls still in
  flight (not yet counted by Graph) never inflate it. Lower bounds combine by
  taking the largest: B is the largest bound of the readings of the last
  window (one window on, it is learnt afresh, as Graph's allowance moves with
  its daily users).
- **The ceiling.** A key may hold ``cap = max(probe, ceiling % x B)`` calls in
  its window. With no estimate yet, ``cap`` is the probe allowance: enough
  calls for readings to arrive, too few to overrun a small budget unseen.
- **What Graph reports wins when it is higher.** Graph's count, per its latest
  reading, is ``G = p·B'/100 + s`` with ``B' = cap/ceiling`` (B, or the budget
  the probe allowance stands for) and ``s`` offpost's calls admitted since that
  reading. A call goes when ``max(n, G) + 1 ≤ cap`` (``n``: offpost's own count
  in the window). So usage made by others holds offpost back, and a reading
  of ``ceiling`` % or more stops every call of the key.
- **Waits.** A call that may not go is told when to ask again: when enough of
  the key's own calls leave the window (bucket by bucket, as Graph's window
  recovers), or, when only the reported usage holds it back, at the next
  refresh (one call that reads the usage again, spending at most 1 % of the
  budget a window: :meth:`_KeyState.verdict`) or when that reading is a window
  old (forgotten). A burst runs at full
  speed up to the ceiling, then at the rate its calls leave the window: the
  fastest rate that stays under the ceiling. There is no smoothing below the
  ceiling: Graph counts calls in the window whatever their spacing, so
  spreading a burst that fits would only delay it.

:class:`RedisPacer` is shared by every worker on every machine: each operation
is one Lua script, one round trip, atomic. :class:`MemoryPacer` has the same
semantics for one process (``offpost up``). While Redis is unreachable no call
is admitted (each waits :data:`~offpost.workers.ratelimit.UNREACHABLE_WAIT_S`,
as with the blocks: a post never calls Graph blind); a reading that cannot be
stored is dropped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import redis

from offpost.errors import OffpostError
from offpost.graph.usage import GraphUsage
from offpost.workers.ratelimit import UNREACHABLE_WAIT_S, app_key, page_key

if TYPE_CHECKING:
    from offpost.settings import Settings
    from offpost.workers.observe import PacingObserver

logger = logging.getLogger(__name__)

#: Buckets per window. A call leaves the count at most one bucket (1/60 window) late.
BUCKETS = 60
APP = "app"
PAGE = "page"
#: The scopes the pacer counts; calls' other keys (``user:…``) are not paced.
SCOPES = (APP, PAGE)
#: Where RedisPacer keeps its hashes (one per key) and the index of active keys.
REDIS_PREFIX = "offpost:pace:"


class PacingUnavailableError(OffpostError):
    """The shared pacing state cannot be read (Redis unreachable)."""


@dataclass(frozen=True, slots=True)
class PacingConfig:
    """The pacing settings (``OFFPOST_PACING*``, docs/pacing.md)."""

    enabled: bool = True
    ceiling_pct: int = 90
    probe_calls: int = 0
    app_window_s: float = 3600.0
    page_window_s: float = 86_400.0

    @classmethod
    def of(cls, settings: Settings) -> PacingConfig:
        return cls(
            enabled=settings.pacing,
            ceiling_pct=settings.pacing_ceiling_pct,
            probe_calls=settings.pacing_probe_calls,
            app_window_s=float(settings.pacing_app_window_s),
            page_window_s=float(settings.pacing_page_window_s),
        )

    def window_s(self, key: str) -> float | None:
        """The window ``key`` is counted over; None for a key the pacer does not count."""
        scope = key.partition(":")[0]
        if scope == APP:
            return float(self.app_window_s)
        if scope == PAGE:
            return float(self.page_window_s)
        return None


@dataclass(frozen=True, slots=True)
class PaceState:
    """One key as the pacer sees it now (for ``offpost status`` and metrics)."""

    key: str
    window_s: float
    #: Estimated calls Graph allows in a window; None while no reading has told.
    budget: float | None
    #: offpost's own calls admitted in the window.
    calls: int
    #: Replies with a usage reading in the newest buckets of the window (the bound's m).
    replies: int
    #: The latest reading (percent, as Graph reported it), if within the window.
    reported_pct: int | None
    #: Estimated calls Graph counts now: the larger of ``calls`` and what it reported.
    used: float
    #: The ceiling setting, and the calls it allows in the window now (the probe
    #: allowance while the budget is unknown or smaller).
    ceiling_pct: int
    allowed: float
    #: Calls told to wait in the window.
    waits: int
    #: Seconds until a call may go (0: it may go now).
    next_free_s: float

    @property
    def scope(self) -> str:
        return self.key.partition(":")[0]

    @property
    def id(self) -> str:
        return self.key.partition(":")[2]

    @property
    def pacing(self) -> bool:
        """Whether a call on this key would wait now."""
        return self.next_free_s > 0

    @property
    def used_ratio(self) -> float | None:
        """Estimated usage as a share of the estimated budget (None while it is unknown)."""
        return None if not self.budget else self.used / self.budget

    def near(self, share: float) -> bool:
        """Pacing now, paced in the window, or at ``share`` of its allowance or more."""
        return self.pacing or self.waits > 0 or self.used >= share * self.allowed


class Pacer(Protocol):
    def admit(self, calls: Sequence[Sequence[str]]) -> list[float]:
        """One entry per intended Graph call, each naming the pacing keys it counts against
        (e.g. ``["app:123", "page:456"]``). Returns, per call, 0.0 if it may go now (its slot
        is taken in every one of its keys, atomically for the whole list) or the seconds to
        wait before asking again (nothing taken for it). In order: earlier calls are
        admitted first. Keys of scopes other than app and page are not paced."""

    def observe(self, readings: Sequence[tuple[str, int]]) -> None:
        """Usage readings from replies: (key, percent used, as Graph reported it). Feeds the
        budget estimate; never raises."""

    def snapshot(self) -> list[PaceState]:
        """Every key with activity in its window (raises :class:`PacingUnavailableError`
        when the shared state cannot be read)."""


def readings_for(usage: GraphUsage, *, app_id: str, page_id: str) -> list[tuple[str, int]]:
    """What one reply's usage headers say, as :meth:`Pacer.observe` takes it.

    The app: ``X-App-Usage``. The Page: the highest of ``X-Page-Usage`` and the
    ``X-Business-Use-Case-Usage`` entries about ``page_id``. Each is the highest
    of call_count, total_time and total_cputime: CPU time exhausts a budget as
    surely as calls do, and a higher percentage only makes the estimate smaller.
    """
    readings: list[tuple[str, int]] = []
    if usage.app is not None:
        readings.append((app_key(app_id), usage.app.max_pct))
    page = [entry.max_pct for entry in usage.for_object(page_id)]
    if usage.page is not None:
        page.append(usage.page.max_pct)
    if page:
        readings.append((page_key(page_id), max(page)))
    return readings


def pacing_keys(app_id: str, page_id: str, *, page_token: bool) -> list[str]:
    """The keys one call counts against: a Page token's calls count against the Page's
    Business Use Case limit only ("if both could apply, BUC applies"); a user or app
    token's against the app, and the Page it touches.

    Naming a key whose replies never carry its header (the app, for Page-token
    calls) would hold that key to the probe allowance for good.
    """
    if page_token:
        return [page_key(page_id)]
    return [app_key(app_id), page_key(page_id)]


def _wait_ms(at: float, now: float) -> int:
    """The wait until ``at``, in whole milliseconds, at least 1 (as the Lua script says it)."""
    return max(1, math.ceil((at - now) * 1000))


class _KeyState:
    """One key's counts and estimate; the Lua script below is this class, line for line."""

    __slots__ = (
        "budget",
        "budget_at",
        "calls",
        "highest",
        "pct",
        "pct_at",
        "refresh_at",
        "replies",
        "since",
        "waits",
        "width",
        "window",
    )

    def __init__(self, window: float) -> None:
        self.window = window
        self.width = window / BUCKETS
        self.calls: dict[int, int] = {}
        self.replies: dict[int, int] = {}
        #: The highest reading of each bucket's replies (the bound's p).
        self.highest: dict[int, int] = {}
        self.waits: dict[int, int] = {}
        self.budget: float | None = None
        self.budget_at = 0.0
        self.pct: int | None = None
        self.pct_at = 0.0
        self.since = 0
        self.refresh_at: float | None = None

    def bucket(self, now: float) -> int:
        return math.floor(now / self.width)

    def prune(self, now: float) -> None:
        """Forget buckets that left the window (and any from a clock far ahead).

        A call admitted in bucket ``b`` is forgotten once bucket ``b + BUCKETS + 1``
        begins: a whole window after its admission at the earliest, so never before
        Graph forgets it. A reply counts towards the budget's bound only while it is
        in the newest ``BUCKETS - 2`` buckets: a call Graph still counts for sure
        (unless it took longer than a bucket to answer).
        """
        cur = self.bucket(now)
        for buckets, oldest in (
            (self.calls, cur - BUCKETS),
            (self.waits, cur - BUCKETS),
            (self.replies, cur - BUCKETS + 3),
            (self.highest, cur - BUCKETS + 3),
        ):
            for b in [b for b in buckets if b < oldest or b > cur + BUCKETS]:
                del buckets[b]

    def cap(self, now: float, ceiling_pct: int, probe: int) -> float:
        if self.budget is not None and now - self.budget_at < self.window:
            return max(float(probe), self.budget * ceiling_pct / 100)
        return float(probe) if probe > 0 else math.inf

    def reported(self, now: float, cap: float, ceiling_pct: int) -> float | None:
        """Graph's count per its latest reading, plus offpost's calls since; None if none."""
        if self.pct is not None and now - self.pct_at < self.window and math.isfinite(cap):
            return self.pct * cap / ceiling_pct + self.since
        return None

    def refresh_every(self, cap: float, ceiling_pct: int) -> float:
        """Refreshes spend at most 1 % of the budget a window, and come once a bucket at most.

        ``cap·100/ceiling`` is the budget (or the one the probe allowance stands
        for, whose 1 % is less than a call a window: no refresh, the reading
        is waited out).
        """
        return max(self.width, self.window * ceiling_pct / cap)

    def verdict(self, now: float, ceiling_pct: int, probe: int) -> tuple[str, float]:
        """``("go", now)``, ``("refresh", now)`` or ``("wait", when to ask again)``.

        "refresh": only Graph's reported usage holds the call back, and that
        reading (or the last refresh) is :meth:`refresh_every` old: the call
        goes, so that its reply reads the usage again. Without it, a reading
        near the ceiling would stop the key until it was a window old, even
        after the usage behind it had left Graph's window. At 95 % the
        caller's block holds the call anyway (ratelimit).
        """
        cap = self.cap(now, ceiling_pct, probe)
        n = sum(self.calls.values())
        graph = self.reported(now, cap, ceiling_pct)
        own_ok = n + 1 <= cap
        reported_ok = graph is None or graph + 1 <= cap
        if own_ok and reported_ok:
            return "go", now
        at = now
        if not reported_ok:
            last = self.pct_at if self.refresh_at is None else max(self.pct_at, self.refresh_at)
            refresh = last + self.refresh_every(cap, ceiling_pct)
            if own_ok and now >= refresh:
                return "refresh", now
            at = min(self.pct_at + self.window, refresh)
        if not own_ok:
            left = n
            for b in sorted(self.calls):
                left -= self.calls[b]
                if left + 1 <= cap:
                    at = max(at, (b + BUCKETS + 1) * self.width)
                    break
        return "wait", at

    def take(self, now: float, refresh: bool) -> None:
        cur = self.bucket(now)
        self.calls[cur] = self.calls.get(cur, 0) + 1
        self.since += 1
        if refresh:
            self.refresh_at = now

    def refuse(self, now: float) -> None:
        cur = self.bucket(now)
        self.waits[cur] = self.waits.get(cur, 0) + 1

    def observe(self, now: float, pct: int) -> None:
        cur = self.bucket(now)
        self.replies[cur] = self.replies.get(cur, 0) + 1
        self.highest[cur] = max(self.highest.get(cur, 0), pct)
        bound = 100 * sum(self.replies.values()) / (max(self.highest.values()) + 1)
        if self.budget is None or now - self.budget_at >= self.window or bound >= self.budget:
            self.budget = bound
            self.budget_at = now
        self.pct = pct
        self.pct_at = now
        self.since = 0

    def ratio(self, now: float, ceiling_pct: int, probe: int) -> float | None:
        """Estimated usage as a share of the estimated budget; None while it is unknown."""
        if self.budget is None or now - self.budget_at >= self.window or self.budget <= 0:
            return None
        graph = self.reported(now, self.cap(now, ceiling_pct, probe), ceiling_pct)
        return max(float(sum(self.calls.values())), graph or 0.0) / self.budget

    def idle(self, now: float) -> bool:
        return (
            not (self.calls or self.replies or self.waits)
            and (self.pct is None or now - self.pct_at >= self.window)
            and (self.budget is None or now - self.budget_at >= self.window)
        )

    def state(self, key: str, now: float, ceiling_pct: int, probe: int) -> PaceState:
        cap = self.cap(now, ceiling_pct, probe)
        n = sum(self.calls.values())
        graph = self.reported(now, cap, ceiling_pct)
        kind, at = self.verdict(now, ceiling_pct, probe)
        budget_known = self.budget is not None and now - self.budget_at < self.window
        pct_known = self.pct is not None and now - self.pct_at < self.window
        return PaceState(
            key=key,
            window_s=self.window,
            budget=self.budget if budget_known else None,
            calls=n,
            replies=sum(self.replies.values()),
            reported_pct=self.pct if pct_known else None,
            used=max(float(n), graph if graph is not None else 0.0),
            ceiling_pct=ceiling_pct,
            allowed=cap,
            waits=sum(self.waits.values()),
            next_free_s=_wait_ms(at, now) / 1000 if kind == "wait" else 0.0,
        )


def _unique_paced(keys: Iterable[str], config: PacingConfig) -> list[str]:
    return [k for k in dict.fromkeys(keys) if config.window_s(k) is not None]


def _paced_readings(
    readings: Sequence[tuple[str, int]], config: PacingConfig
) -> list[tuple[str, int]]:
    """The readings of paced keys, as whole non-negative percentages (usage.py's kind)."""
    return [(k, int(p)) for k, p in readings if config.window_s(k) is not None and p >= 0]


class _Report:
    """What one admission tells the observer: each wait with the scope of the key that
    set it, and each key's estimated usage (sent after the lock or script, never raises)."""

    def __init__(self) -> None:
        self.waits: list[tuple[str, float]] = []
        self.levels: dict[str, float] = {}

    def wait(self, key: str, wait_s: float) -> None:
        self.waits.append((key.partition(":")[0], wait_s))

    def usage(self, key: str, ratio: float | None) -> None:
        if ratio is not None:
            self.levels[key] = ratio

    def send(self, observer: PacingObserver | None) -> None:
        if observer is None:
            return
        try:
            for scope, wait_s in self.waits:
                observer.paced(scope, wait_s)
            for key, ratio in self.levels.items():
                observer.pace_usage(key, ratio)
        except Exception:  # reporting must never stop a call, nor let one through
            logger.warning("could not report pacing", exc_info=True, extra={"action": "metrics"})


#: The MemoryPacers alive in this process, for ``offpost status`` run inside it.
_LOCAL: weakref.WeakSet[MemoryPacer] = weakref.WeakSet()
#: How often a MemoryPacer drops keys that went idle.
SWEEP_EVERY_S = 60.0


class MemoryPacer:
    """The pacer of one process (``offpost up``), thread-safe."""

    def __init__(
        self,
        config: PacingConfig,
        clock: Callable[[], float] = time.time,
        observer: PacingObserver | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._observer = observer
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._swept = clock()
        _LOCAL.add(self)

    def _key(self, key: str, now: float) -> _KeyState:
        window = self.config.window_s(key)
        assert window is not None
        state = self._keys.get(key)
        if state is None or state.window != window:
            state = self._keys[key] = _KeyState(window)
        state.prune(now)
        return state

    def _sweep(self, now: float) -> None:
        if now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        for key, state in list(self._keys.items()):
            state.prune(now)
            if state.idle(now):
                del self._keys[key]

    def admit(self, calls: Sequence[Sequence[str]]) -> list[float]:
        ceiling, probe = self.config.ceiling_pct, self.config.probe_calls
        now = self._clock()
        waits: list[float] = []
        report = _Report()
        with self._lock:
            self._sweep(now)
            for call in calls:
                keys = _unique_paced(call, self.config)
                states = [self._key(k, now) for k in keys]
                verdicts = [s.verdict(now, ceiling, probe) for s in states]
                refused = [
                    (at, key, state)
                    for key, state, (kind, at) in zip(keys, states, verdicts, strict=True)
                    if kind == "wait"
                ]
                if refused:
                    for _, _, state in refused:
                        state.refuse(now)
                    at, binding, _ = max(refused, key=lambda item: item[0])
                    waits.append(_wait_ms(at, now) / 1000)
                    report.wait(binding, waits[-1])
                else:
                    for state, (kind, _) in zip(states, verdicts, strict=True):
                        state.take(now, refresh=kind == "refresh")
                    waits.append(0.0)
                for key, state in zip(keys, states, strict=True):
                    report.usage(key, state.ratio(now, ceiling, probe))
        report.send(self._observer)
        return waits

    def observe(self, readings: Sequence[tuple[str, int]]) -> None:
        now = self._clock()
        with self._lock:
            for key, pct in _paced_readings(readings, self.config):
                self._key(key, now).observe(now, pct)

    def snapshot(self) -> list[PaceState]:
        now = self._clock()
        ceiling, probe = self.config.ceiling_pct, self.config.probe_calls
        with self._lock:
            states = []
            for key, state in sorted(self._keys.items()):
                state.prune(now)
                if not state.idle(now):
                    states.append(state.state(key, now, ceiling, probe))
        return states


def local_snapshot() -> list[PaceState] | None:
    """What the MemoryPacers of this process know; None when none lives here.

    ``offpost up`` paces in its own memory: ``offpost status`` run in another
    process cannot see it (as with the in-memory broker's queue depth).
    """
    pacers = list(_LOCAL)
    if not pacers:
        return None
    return sorted((s for p in pacers for s in p.snapshot()), key=lambda s: s.key)


class NullPacer:
    """Pacing off (``OFFPOST_PACING=false``): every call goes; the blocks still act."""

    def admit(self, calls: Sequence[Sequence[str]]) -> list[float]:
        return [0.0] * len(calls)

    def observe(self, readings: Sequence[tuple[str, int]]) -> None:
        return None

    def snapshot(self) -> list[PaceState]:
        return []


# --- Redis ------------------------------------------------------------------------------------
#
# One hash per key (PREFIX .. key): fields c:<bucket> (calls admitted), o:<bucket> (replies
# observed), x:<bucket> (their highest reading), w:<bucket> (calls told to wait), W (its
# window), B/Bt (budget and when it was set), p/pt (latest reading and when), s (calls
# since), ra (last refresh). A sorted set (PREFIX .. "index") names the keys with recent
# writes, for the snapshot. Numbers go both ways as "%.17g" strings: the same doubles as
# the Python above, so both pacers decide alike.
#
# ARGV of every script: now, ceiling %, probe calls, buckets, prefix, index TTL (ms). KEYS[1]
# is the index; admit and observe name each key's hash in KEYS[2..] and its window in
# ARGV[7..].

_LUA_COMMON = """
local now = tonumber(ARGV[1])
local pct = tonumber(ARGV[2])
local probe = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
local prefix = ARGV[5]
local index_ttl = tonumber(ARGV[6])

local function num(x) return string.format('%.17g', x) end

local function load(k, window)
  local st = {
    window = window, width = window / nb, c = {}, o = {}, w = {}, x = {}, n = 0, m = 0, nw = 0,
  }
  st.cur = math.floor(now / st.width)
  local raw = redis.call('HGETALL', k)
  local f = {}
  for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
  if f.W and tonumber(f.W) ~= window then
    redis.call('DEL', k)
    f = {}
  end
  local stale = {}
  for name, v in pairs(f) do
    local kind, b = string.match(name, '^([cowx]):(%-?%d+)$')
    if kind then
      b = tonumber(b)
      local oldest = st.cur - nb
      if kind == 'o' or kind == 'x' then oldest = st.cur - nb + 3 end
      if b < oldest or b > st.cur + nb then
        stale[#stale + 1] = name
      else
        v = tonumber(v)
        st[kind][b] = v
        if kind == 'c' then st.n = st.n + v elseif kind == 'o' then st.m = st.m + v
        elseif kind == 'w' then st.nw = st.nw + v end
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', k, unpack(stale)) end
  st.B = tonumber(f.B)
  st.Bt = tonumber(f.Bt) or 0
  st.p = tonumber(f.p)
  st.pt = tonumber(f.pt) or 0
  st.s = tonumber(f.s) or 0
  st.ra = tonumber(f.ra)
  return st
end

local function cap_of(st)
  if st.B and now - st.Bt < st.window then
    return math.max(probe, st.B * pct / 100)
  end
  if probe > 0 then return probe end
  return math.huge
end

local function reported(st, cap)
  if st.p and now - st.pt < st.window and cap ~= math.huge then
    return st.p * cap / pct + st.s
  end
  return nil
end

local function verdict(st)
  local cap = cap_of(st)
  local g = reported(st, cap)
  local own_ok = st.n + 1 <= cap
  local rep_ok = (g == nil) or (g + 1 <= cap)
  if own_ok and rep_ok then return 'go', now end
  local at = now
  if not rep_ok then
    local refresh = math.max(st.pt, st.ra or st.pt) + math.max(st.width, st.window * pct / cap)
    if own_ok and now >= refresh then return 'refresh', now end
    at = math.min(st.pt + st.window, refresh)
  end
  if not own_ok then
    local idx = {}
    for b in pairs(st.c) do idx[#idx + 1] = b end
    table.sort(idx)
    local left = st.n
    for _, b in ipairs(idx) do
      left = left - st.c[b]
      if left + 1 <= cap then
        at = math.max(at, (b + nb + 1) * st.width)
        break
      end
    end
  end
  return 'wait', at
end

local function wait_ms(at)
  return math.max(1, math.ceil((at - now) * 1000))
end

local function touch(k, st)
  redis.call('HSET', k, 'W', num(st.window))
  redis.call('PEXPIRE', k, math.ceil((st.window + st.width) * 1000) + 1000)
  redis.call('ZADD', KEYS[1], now, string.sub(k, #prefix + 1))
  if redis.call('PTTL', KEYS[1]) < index_ttl then
    redis.call('PEXPIRE', KEYS[1], index_ttl)
  end
end

local states = {}
for i = 2, #KEYS do
  states[i] = load(KEYS[i], tonumber(ARGV[5 + i]))
end
local rest = 6 + #KEYS
"""

# ARGV[rest]: the calls, "2 3|2|4": each call's key positions in KEYS.
_LUA_ADMIT = (
    _LUA_COMMON
    + """
local out, binding = {}, {}
local changed, touched = {}, {}
for spec in string.gmatch(ARGV[rest], '[^|]+') do
  local positions = {}
  for i in string.gmatch(spec, '%d+') do positions[#positions + 1] = tonumber(i) end
  local kinds, worst, worst_i, refused = {}, nil, 0, {}
  for j, i in ipairs(positions) do
    touched[i] = true
    local kind, at = verdict(states[i])
    kinds[j] = kind
    if kind == 'wait' then
      refused[#refused + 1] = i
      if worst == nil or at > worst then worst, worst_i = at, i end
    end
  end
  if worst == nil then
    for j, i in ipairs(positions) do
      local st = states[i]
      st.c[st.cur] = (st.c[st.cur] or 0) + 1
      st.n = st.n + 1
      st.s = st.s + 1
      redis.call('HINCRBY', KEYS[i], 'c:' .. st.cur, 1)
      redis.call('HSET', KEYS[i], 's', st.s)
      if kinds[j] == 'refresh' then
        st.ra = now
        redis.call('HSET', KEYS[i], 'ra', num(now))
      end
      changed[i] = true
    end
    out[#out + 1] = 0
    binding[#binding + 1] = 0
  else
    for _, i in ipairs(refused) do
      local st = states[i]
      st.w[st.cur] = (st.w[st.cur] or 0) + 1
      st.nw = st.nw + 1
      redis.call('HINCRBY', KEYS[i], 'w:' .. st.cur, 1)
      changed[i] = true
    end
    out[#out + 1] = wait_ms(worst)
    binding[#binding + 1] = worst_i
  end
end
for i in pairs(changed) do touch(KEYS[i], states[i]) end
local ratios = {}
for i = 2, #KEYS do
  local st = states[i]
  ratios[i - 1] = ''
  if touched[i] and st.B and now - st.Bt < st.window and st.B > 0 then
    local g = reported(st, cap_of(st))
    local used = st.n
    if g and g > used then used = g end
    ratios[i - 1] = num(used / st.B)
  end
end
return {out, binding, ratios}
"""
)

# ARGV[rest]: the readings, "2:57|3:80": a key's position in KEYS and the percentage.
_LUA_OBSERVE = (
    _LUA_COMMON
    + """
for i, p in string.gmatch(ARGV[rest], '(%d+):(%d+)') do
  i = tonumber(i)
  p = tonumber(p)
  local st = states[i]
  st.o[st.cur] = (st.o[st.cur] or 0) + 1
  st.m = st.m + 1
  st.x[st.cur] = math.max(st.x[st.cur] or 0, p)
  local top = 0
  for _, v in pairs(st.x) do top = math.max(top, v) end
  local bound = 100 * st.m / (top + 1)
  if st.B == nil or now - st.Bt >= st.window or bound >= st.B then
    st.B = bound
    st.Bt = now
  end
  st.p = p
  st.pt = now
  st.s = 0
  redis.call('HINCRBY', KEYS[i], 'o:' .. st.cur, 1)
  redis.call('HSET', KEYS[i], 'x:' .. st.cur, st.x[st.cur])
  redis.call('HSET', KEYS[i], 'B', num(st.B), 'Bt', num(st.Bt), 'p', p, 'pt', num(now), 's', 0)
  touch(KEYS[i], st)
end
return 1
"""
)

# ARGV[7..]: scope, window, scope, window... The keys come from the index, so this script
# reads hashes it was not handed in KEYS: fine on the single Redis offpost's broker is.
_LUA_SNAPSHOT = (
    _LUA_COMMON
    + """
local windows = {}
for j = 7, #ARGV, 2 do windows[ARGV[j]] = tonumber(ARGV[j + 1]) end
local out = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = prefix .. key
  local window = windows[string.match(key, '^([^:]*)')]
  if redis.call('EXISTS', k) == 0 then
    redis.call('ZREM', KEYS[1], key)
  elseif window then
    local st = load(k, window)
    local B = (st.B and now - st.Bt < window) and st.B or nil
    local p = (st.p and now - st.pt < window) and st.p or nil
    if st.n + st.m + st.nw > 0 or B or p then
      local cap = cap_of(st)
      local g = reported(st, cap)
      local kind, at = verdict(st)
      local used = st.n
      if g and g > used then used = g end
      out[#out + 1] = {
        key, num(window), B and num(B) or '', tostring(st.n), tostring(st.m),
        p and tostring(p) or '', num(used), num(cap), tostring(st.nw),
        kind == 'wait' and tostring(wait_ms(at)) or '0',
      }
    end
  end
end
return out
"""
)


class _OutageLog:
    """Say once that Redis went away, and once that it came back."""

    def __init__(self) -> None:
        self._down = False

    def failed(self, what: str, exc: Exception) -> None:
        if not self._down:
            self._down = True
            logger.warning(
                "pacing: %s: Redis unreachable (%s)",
                what,
                type(exc).__name__,
                extra={"action": "pacing_unreachable"},
            )

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            logger.info("pacing: Redis reachable again", extra={"action": "pacing_reachable"})


class RedisPacer:
    """The pacer every worker shares: one Lua script per operation, one round trip."""

    def __init__(
        self,
        client: redis.Redis,
        config: PacingConfig,
        clock: Callable[[], float] = time.time,
        observer: PacingObserver | None = None,
        prefix: str = REDIS_PREFIX,
    ) -> None:
        self.config = config
        self._redis = client
        self._clock = clock
        self._observer = observer
        self._prefix = prefix
        self._admit = client.register_script(_LUA_ADMIT)
        self._observe = client.register_script(_LUA_OBSERVE)
        self._snapshot = client.register_script(_LUA_SNAPSHOT)
        self._outage = _OutageLog()

    def _head(self, now: float) -> list[str | int]:
        longest = max(self.config.app_window_s, self.config.page_window_s)
        index_ttl_ms = math.ceil(longest * 1000) * 2 + 60_000
        return [
            repr(now),
            self.config.ceiling_pct,
            self.config.probe_calls,
            BUCKETS,
            self._prefix,
            index_ttl_ms,
        ]

    def _keys(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """KEYS (the index, then each key's hash) and each key's window for ARGV."""
        hashes = [f"{self._prefix}index", *(self._prefix + k for k in keys)]
        return hashes, [repr(self.config.window_s(k)) for k in keys]

    def admit(self, calls: Sequence[Sequence[str]]) -> list[float]:
        paced = [_unique_paced(call, self.config) for call in calls]
        keys = list(dict.fromkeys(k for call in paced for k in call))
        if not keys:
            return [0.0] * len(calls)
        position = {k: i + 2 for i, k in enumerate(keys)}  # KEYS[1] is the index
        specs = [" ".join(str(position[k]) for k in call) for call in paced if call]
        hashes, windows = self._keys(keys)
        try:
            reply = self._admit(
                keys=hashes, args=[*self._head(self._clock()), *windows, "|".join(specs)]
            )
        except redis.RedisError as exc:
            self._outage.failed(f"admitting no call, each waits {UNREACHABLE_WAIT_S:.0f} s", exc)
            return [UNREACHABLE_WAIT_S if call else 0.0 for call in paced]
        self._outage.succeeded()
        waits_ms, binding, ratios = reply
        report = _Report()
        for ms, position in zip(waits_ms, binding, strict=True):
            if position:
                report.wait(keys[int(position) - 2], int(ms) / 1000)
        for key, ratio in zip(keys, ratios, strict=True):
            report.usage(key, float(ratio) if ratio else None)
        report.send(self._observer)
        answers = iter(int(ms) / 1000 for ms in waits_ms)
        return [next(answers) if call else 0.0 for call in paced]

    def observe(self, readings: Sequence[tuple[str, int]]) -> None:
        paced = _paced_readings(readings, self.config)
        if not paced:
            return
        keys = list(dict.fromkeys(k for k, _ in paced))
        position = {k: i + 2 for i, k in enumerate(keys)}
        spec = "|".join(f"{position[k]}:{p}" for k, p in paced)
        hashes, windows = self._keys(keys)
        try:
            self._observe(keys=hashes, args=[*self._head(self._clock()), *windows, spec])
        except redis.RedisError as exc:
            self._outage.failed("usage readings dropped", exc)
            return
        self._outage.succeeded()

    def snapshot(self) -> list[PaceState]:
        windows = [APP, repr(self.config.app_window_s), PAGE, repr(self.config.page_window_s)]
        try:
            rows = self._snapshot(
                keys=[f"{self._prefix}index"], args=[*self._head(self._clock()), *windows]
            )
        except redis.RedisError as exc:
            raise PacingUnavailableError(
                f"pacing state unreadable: Redis unreachable ({type(exc).__name__})"
            ) from None
        return sorted((self._state(row) for row in rows), key=lambda s: s.key)

    def _state(self, row: list[bytes]) -> PaceState:
        text = [value.decode() for value in row]
        key, window, budget, calls, replies, pct, used, allowed, waits, wait_ms = text
        return PaceState(
            key=key,
            window_s=float(window),
            budget=float(budget) if budget else None,
            calls=int(calls),
            replies=int(replies),
            reported_pct=int(pct) if pct else None,
            used=float(used),
            ceiling_pct=self.config.ceiling_pct,
            allowed=float(allowed),
            waits=int(waits),
            next_free_s=int(wait_ms) / 1000,
        )

    def close(self) -> None:
        self._redis.close()


def make_pacer(
    broker_url: str,
    config: PacingConfig | None = None,
    *,
    clock: Callable[[], float] = time.time,
    observer: PacingObserver | None = None,
) -> Pacer:
    """Where pacing is shared: Redis with a Redis broker, else this process (like the blocks).

    Pass the worker's database clock as ``clock``, so that every machine buckets
    alike, and its observers as ``observer``: each wait is reported with the
    scope of the key that set it (``offpost_pacing_waits_total{scope}``).
    """
    config = config or PacingConfig()
    if not config.enabled:
        return NullPacer()
    if broker_url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
        return RedisPacer(client, config, clock, observer)
    return MemoryPacer(config, clock, observer)


class PaceReader:
    """The pacing state for ``offpost status``, in whichever mode offpost runs.

    With a Redis broker, the state every worker shares. Otherwise pacing lives
    in the memory of the ``offpost up`` process: readable only from inside it.
    :meth:`read` answers the states, or None with the reason they are unknown.
    """

    def __init__(self, broker_url: str, config: PacingConfig, timeout_s: float = 2.0) -> None:
        self.config = config
        self._redis: RedisPacer | None = None
        if config.enabled and broker_url.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(
                broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
            self._redis = RedisPacer(client, config)

    def read(self) -> tuple[list[PaceState] | None, str]:
        if not self.config.enabled:
            return None, "off (OFFPOST_PACING=false)"
        if self._redis is not None:
            try:
                return self._redis.snapshot(), ""
            except PacingUnavailableError as exc:
                return None, f"unknown: {exc}"
        states = local_snapshot()
        if states is None:
            return None, "unknown: offpost up keeps it in its own process"
        return states, ""

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
