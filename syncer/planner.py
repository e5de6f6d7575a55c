"""The budget planner: when each job of a license runs next. Pure: no I/O, no clock.

Each job has a weight (its share of the budget while the shop is open), a small
weight for closed hours, a cost per run, and bounds on its interval. Given the
requests left in the license's API day and the open and closed time left in it,
the planner finds one scale factor `rate` so that, with every job at interval
`cost / (rate * weight)` (clamped to its bounds), the expected spend for the rest
of the day fits the budget. It is re-run after every job, so anything that spent
requests behind its back (a backfill, `syncer call`, a 1003 from another
integration) simply stretches the plan. The ledger, not the planner, is the hard
limit: `daily_budget - reserve` is never passed whatever the plan says.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

# While closed no job runs more often than this, whatever budget is left: at night
# almost nothing happens, and what does can wait.
CLOSED_MIN_INTERVAL = dt.timedelta(minutes=30)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class JobSpec:
    """How one job competes for the budget."""

    name: str
    weight: float  # share while open
    min_interval: dt.timedelta
    max_interval: dt.timedelta  # while open: run at least this often
    closed_weight: float = 0.0
    # While closed: run at least this often; None = only when the budget allows.
    closed_max_interval: dt.timedelta | None = None
    cost: int = 1  # requests per run


def next_midnight(moment: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The start of the API day after the one `moment` falls in (the day's budget resets)."""
    day = moment.astimezone(tz).date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(), tzinfo=tz)


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def hours(n: float) -> dt.timedelta:
    return dt.timedelta(hours=n)


@dataclass(frozen=True)
class OpeningHours:
    """Opening hours per weekday (0 = Monday): ranges of local time; an end at or
    before its start runs past midnight."""

    ranges: Mapping[int, tuple[tuple[dt.time, dt.time], ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | Mapping[str, str]) -> OpeningHours:
        """`"10:00-23:00"` for every day, or `{"mon": "closed", "tue": "11:30-14:00,18:00-22:30"}`
        (days not named use `"default"` if given, else closed)."""
        if isinstance(value, str):
            spec = {day: value for day in WEEKDAYS}
        else:
            unknown = set(value) - {*WEEKDAYS, "default"}
            if unknown:
                raise ValueError(f"unknown weekday {sorted(unknown)}; use {', '.join(WEEKDAYS)} or default")
            default = value.get("default", "closed")
            spec = {day: value.get(day, default) for day in WEEKDAYS}
        ranges: dict[int, tuple[tuple[dt.time, dt.time], ...]] = {}
        for index, day in enumerate(WEEKDAYS):
            text = spec[day].strip().lower()
            if text in ("", "closed"):
                ranges[index] = ()
                continue
            parsed = []
            for part in text.split(","):
                match = _RANGE.match(part)
                if not match:
                    raise ValueError(f"{day}: {part.strip()!r} is not a range like 10:00-23:00")
                h1, m1, h2, m2 = (int(g) for g in match.groups())
                if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
                    raise ValueError(f"{day}: {part.strip()!r} is not a valid time range")
                parsed.append((_time(h1, m1), _time(h2, m2)))
            ranges[index] = tuple(parsed)
        return cls(ranges)

    def _intervals(self, day: dt.date, tz: ZoneInfo) -> list[tuple[dt.datetime, dt.datetime]]:
        """Open intervals (aware) that start on this local day."""
        out = []
        for start, end in self.ranges.get(day.weekday(), ()):
            begin = dt.datetime.combine(day, start, tzinfo=tz)
            finish_day = day if end > start else day + dt.timedelta(days=1)
            finish = dt.datetime.combine(finish_day, end, tzinfo=tz)
            out.append((begin, finish))
        return out

    def open_seconds(self, start: dt.datetime, end: dt.datetime, tz: ZoneInfo) -> float:
        """Seconds of [start, end) that fall in opening hours."""
        total = 0.0
        day = start.astimezone(tz).date() - dt.timedelta(days=1)
        last = end.astimezone(tz).date()
        while day <= last:
            for begin, finish in self._intervals(day, tz):
                lo, hi = max(begin, start), min(finish, end)
                if hi > lo:
                    # Timestamps, not `hi - lo`: aware datetimes that share a tzinfo
                    # subtract as wall-clock time, which is wrong across a DST change.
                    total += hi.timestamp() - lo.timestamp()
            day += dt.timedelta(days=1)
        return total

    def is_open(self, moment: dt.datetime, tz: ZoneInfo) -> bool:
        return self.open_seconds(moment, moment + dt.timedelta(seconds=1), tz) > 0

    def next_opening(self, moment: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
        """The next time the shop opens after `moment` (within a week), if ever."""
        day = moment.astimezone(tz).date()
        for offset in range(8):
            for begin, _ in self._intervals(day + dt.timedelta(days=offset), tz):
                if begin > moment:
                    return begin
        return None


def _time(hour: int, minute: int) -> dt.time:
    return dt.time(23, 59, 59) if hour == 24 else dt.time(hour, minute)


@dataclass(frozen=True)
class Plan:
    """When each job runs next, its interval now, and the requests expected for the rest of the day."""

    next_run: dict[str, dt.datetime]
    interval: dict[str, dt.timedelta | None]
    expected: dict[str, int]
    budget_left: int
    # Requests the rest of the day costs with every job at its longest interval: less
    # than this left, and jobs run less often than their limits allow.
    needed: int = 0


# (name, cost, weight, shortest, longest interval in seconds) of each job, while open
# or while closed: what its interval depends on, worked out once per plan (the search
# for the rate asks for the demand some 80 times).
_Bounds = tuple[tuple[str, int, float, float, float | None], ...]


@functools.lru_cache(maxsize=64)
def _bounds(jobs: tuple[JobSpec, ...], *, open_: bool) -> _Bounds:
    out = []
    for job in jobs:
        weight = job.weight if open_ else job.closed_weight
        low = job.min_interval.total_seconds()
        if not open_:
            low = max(low, CLOSED_MIN_INTERVAL.total_seconds())
        high_td = job.max_interval if open_ else job.closed_max_interval
        out.append((job.name, job.cost, weight, low,
                    None if high_td is None else high_td.total_seconds()))
    return tuple(out)


def _interval(cost: int, weight: float, low: float, high: float | None, rate: float) -> float | None:
    if weight <= 0 or rate <= 0:
        return high
    seconds = cost / (rate * weight)
    if high is not None:
        seconds = min(seconds, high)
    return max(seconds, low)


def _intervals_for(bounds: _Bounds, rate: float) -> dict[str, float | None]:
    return {name: _interval(cost, weight, low, high, rate) for name, cost, weight, low, high in bounds}


def _demand(open_b: _Bounds, closed_b: _Bounds, open_s: float, closed_s: float, rate: float,
            stretch: float = 1.0) -> float:
    total = 0.0
    for bounds, span in ((open_b, open_s), (closed_b, closed_s)):
        if span <= 0:
            continue
        for _, cost, weight, low, high in bounds:
            seconds = _interval(cost, weight, low, high, rate)
            if seconds is not None:
                total += cost * span / (seconds * stretch)
    return total


# Past this rate every job is at its shortest interval (kept from the search this
# replaced, which doubled the rate from 1 up to 2**20).
_RATE_CAP = float(2**20)


def _largest_rate(spans: Sequence[tuple[_Bounds, float]], budget: float) -> float:
    """The largest rate whose demand fits `budget`, solved exactly.

    Each job's demand, `cost * span / interval`, is a constant while its interval is
    clamped at its longest, then `span * weight * rate`, then a constant again once
    it reaches its shortest: the day's demand is piecewise linear and rising in the
    rate. One sweep over the (at most two per job) breakpoints finds the segment
    where it crosses the budget; a bisection of the same function took ~2,000 calls
    of `_interval` per plan, a third of the daemon's CPU.
    """
    base = 0.0  # demand = base + slope * rate on the current segment
    slope = 0.0
    events: list[tuple[float, float, float]] = []  # (rate, change of base, change of slope)
    for bounds, span in spans:
        if span <= 0:
            continue
        for _, cost, weight, low, high in bounds:
            if weight <= 0:
                if high is not None:
                    base += cost * span / high
                continue
            linear = span * weight
            if high is None:
                slope += linear
            else:
                base += cost * span / high
                events.append((cost / (weight * high), -cost * span / high, linear))
            if low > 0:
                events.append((cost / (weight * low), cost * span / low, -linear))
    events.sort()
    at = 0.0
    for where, d_base, d_slope in events:
        if where > at:
            if base + slope * where > budget:
                return min(max((budget - base) / slope, at), _RATE_CAP)
            at = where
        base, slope = base + d_base, slope + d_slope
    if slope > 0:
        return min(max((budget - base) / slope, at), _RATE_CAP)
    return _RATE_CAP


def plan(
    jobs: Sequence[JobSpec],
    *,
    now: dt.datetime,
    tz: ZoneInfo,
    hours: OpeningHours,
    spent: int,
    spendable: int,
    last_runs: Mapping[str, dt.datetime | None],
    margin: float = 0.05,
) -> Plan:
    """Decide the next run of every job for the rest of the license's API day."""
    day_end = next_midnight(now, tz)
    left = max(spendable - spent, 0)
    open_s = hours.open_seconds(now, day_end, tz)
    closed_s = max(day_end.timestamp() - now.timestamp() - open_s, 0.0)
    # Keep a margin (5% of the day) for retries and catch-up runs: re-planning a
    # fraction of the rest would spend it all by midnight. Inside the margin only
    # a trickle runs.
    keep = math.ceil(margin * spendable)
    budget = left - keep if left > keep else left / 4

    # The largest rate whose demand fits the budget (demand grows with the rate).
    stretch = 1.0
    specs = tuple(jobs)
    open_b, closed_b = _bounds(specs, open_=True), _bounds(specs, open_=False)
    floor = _demand(open_b, closed_b, open_s, closed_s, 1e-12)
    if floor > budget:
        # Even at every job's longest interval the day does not fit: stretch them all.
        stretch = floor / budget if budget > 0 else math.inf
        rate = 1e-12
    else:
        rate = _largest_rate(((open_b, open_s), (closed_b, closed_s)), budget)

    is_open = hours.is_open(now, tz)
    current = _intervals_for(open_b if is_open else closed_b, rate)
    open_iv = _intervals_for(open_b, rate)
    closed_iv = _intervals_for(closed_b, rate)
    next_run: dict[str, dt.datetime] = {}
    interval: dict[str, dt.timedelta | None] = {}
    expected: dict[str, int] = {}
    for job in jobs:
        seconds = current[job.name]
        if left < job.cost or math.isinf(stretch):  # a run it cannot afford waits for tomorrow
            next_run[job.name] = day_end + dt.timedelta(seconds=5)
            interval[job.name] = None
            expected[job.name] = 0
            continue
        if seconds is None:
            opening = hours.next_opening(now, tz) or day_end
            due = opening
            interval[job.name] = None
        else:
            seconds *= stretch
            interval[job.name] = dt.timedelta(seconds=seconds)
            last = last_runs.get(job.name)
            due = now if last is None else last + dt.timedelta(seconds=seconds)
            if not is_open:
                # Closed now: never later than the next opening.
                reopens = hours.next_opening(now, tz)
                if reopens is not None and reopens < due:
                    due = reopens
        next_run[job.name] = max(due, now)
        runs = 0.0
        for span, iv in ((open_s, open_iv[job.name]), (closed_s, closed_iv[job.name])):
            if iv is not None and span > 0:
                runs += span / (iv * stretch)
        expected[job.name] = round(runs) * job.cost
    return Plan(next_run, interval, expected, left, needed=math.ceil(floor))
