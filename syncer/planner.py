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
    # Runs more often when the shop is expected to sell, less when not (see SalesProfile).
    follows_sales: bool = False
    # Polls the closed hours near open ones (SHOULDER), where a shop that opens early or
    # closes late sells: the orders' own job; their re-check need not.
    watches_shoulders: bool = False
    # What it reads changes only while the shop sells (open tables, charge cards): in the
    # quiet open hours (see SalesProfile) it runs at its longest interval, and what it
    # does not spend there goes to the jobs that watch the shoulders (the orders).
    rests_when_quiet: bool = False


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
    # The rest of the day hour by hour: requests planned beside the sales expected.
    hourly: tuple[HourPlan, ...] = ()


@dataclass(frozen=True)
class HourPlan:
    """One local hour (or the rest of it) of a plan."""

    start: dt.datetime
    requests: float  # planned in it, all jobs
    sales: float | None  # orders expected in it (None: no sales profile, nothing learned)
    open: bool


# (name, cost, weight, shortest, longest interval in seconds) of each job, while open
# or while closed: what its interval depends on, worked out once per plan (the search
# for the rate asks for the demand some 80 times).
_Bounds = tuple[tuple[str, int, float, float, float | None], ...]
# A piece of the day's rule: (open, factor of the jobs that follow sales, a shoulder).
_Rule = tuple[bool, float, bool]


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


# --- sales-aware planning ------------------------------------------------------------
#
# A job that follows sales (the orders, their day re-check) gets its share of the open
# time's budget spread by the sales expected in each hour. Polling at interval T, an
# order waits T/2 on average: for arrivals at rate s(t) the mean wait over a fixed
# number of polls is least with T proportional to 1/sqrt(s), but that starves the
# hours in between, whose orders then make the 95th percentile. So: the quietest open
# hours, which together sell no more than QUIET_SHARE of the day, get the least
# (SALES_FACTOR's low end: the job's longest interval then rules, 15 minutes for the
# orders); every other hour gets (expected / the day's mean) ** SALES_EXPONENT, a
# gentle slope; all within SALES_FACTOR and normalised so that the job's share of the
# day stays what it was (`_scale`). Chosen on `benchmarks.simulated_day`'s shapes.
SALES_EXPONENT = 0.15
SALES_FACTOR = (0.2, 3.0)
QUIET_SHARE = 0.05
# Learned from the last weeks: that many, each weekday shrunk toward all days (a day
# seen once is half its own, half the average day) so that one odd day does not rule.
PROFILE_WEEKS = 4
_SHRINK_DAYS = 1.0
# An hour counts as open when the weeks behind it sold at least this many orders in it
# on average (one order every other week is a lonely sale, not opening hours).
OPEN_SALES = 0.5
# A configured hour the history contradicts is closed: after CONTRADICTED_DAYS days of
# history, less than CONTRADICTED_SALES orders in it on average (about none in four
# weeks). The configured hours are a hint: a bar configured 10:00-23:00 that never sold
# before 16:00 polls its evenings, not its empty afternoons.
CONTRADICTED_DAYS = 14
CONTRADICTED_SALES = 0.05
# Closed hours this close to open ones (learned or configured) are where a shop that
# opens early or closes late sells: a job that follows sales runs there at least this
# often, so that such a day is seen within half an hour.
SHOULDER = dt.timedelta(hours=2)
SHOULDER_INTERVAL = dt.timedelta(minutes=30)
# Orders seen in the last hour well beyond the profile's expectation (twice, and two
# more): today differs from the past (a holiday, an event), and the next hours follow
# what is seen.
RECENT_SPAN = dt.timedelta(hours=1)
_RECENT_AHEAD = 2  # hours (the current one and the next) that follow what was seen


@dataclass(frozen=True)
class SalesProfile:
    """Orders expected per local hour of each weekday, `expected[weekday][hour]` (0 =
    Monday), learned from a license's own orders (`learn_profile`), and the hours it is
    open by them. `days`: days of history behind it (0: nothing learned yet)."""

    expected: tuple[tuple[float, ...], ...]
    open: tuple[tuple[bool, ...], ...]
    days: int

    def factor(self, weekday: int, rate: float) -> float:
        """How much more (or less) often than on average over the weekday's open hours a
        job that follows sales runs where `rate` orders an hour are expected."""
        mean, norm, quiet = _scale(self, weekday, SALES_EXPONENT)
        low, high = SALES_FACTOR
        if rate <= quiet:
            return low
        return min(max(_raw(rate, mean, SALES_EXPONENT) / norm, low), high)


def _raw(rate: float, mean: float, exponent: float) -> float:
    return float((max(rate, 0.0) / mean) ** exponent) if rate > 0 else 0.0


@functools.lru_cache(maxsize=256)
def _scale(profile: SalesProfile, weekday: int, exponent: float) -> tuple[float, float, float]:
    """A weekday's orders per open hour; the divisor of its factors, so that their mean
    over its open hours is 1 (the jobs that follow sales keep their share of the day,
    and the other jobs theirs, wherever in the day it goes); and the sales at or below
    which an hour is one of the quiet ones."""
    values = [e for e, o in zip(profile.expected[weekday], profile.open[weekday], strict=True) if o]
    total = sum(values)
    if not values or total <= 0:
        return 1.0, 1.0, -1.0
    mean = total / len(values)
    quiet, kept = -1.0, 0.0
    for value in sorted(values):
        if kept + value > QUIET_SHARE * total:
            break
        kept += value
        quiet = value
    low, high = SALES_FACTOR
    raw = [None if v <= quiet else _raw(v, mean, exponent) for v in values]
    lively = [r for r in raw if r is not None]
    norm = sum(lively) / len(lively) if lively and sum(lively) > 0 else 1.0
    for _ in range(8):  # the mean of the factors as clamped, not before: 1
        clamped = sum(low if r is None else min(max(r / norm, low), high) for r in raw) / len(raw)
        norm *= clamped
    return mean, norm, quiet


def learn_profile(counts: Mapping[tuple[dt.date, int], int], *, today: dt.date,
                  hint: OpeningHours, tz: ZoneInfo, weeks: int = PROFILE_WEEKS) -> SalesProfile:
    """The sales profile from `counts`: orders per (local date, local hour) before `today`.

    Days before the first one with a sale are not counted (a new shop); days after it
    without sales are (a closed day). Each weekday's hours are the average of its own
    days, shrunk toward all days' average, so that a weekday seen rarely, or a day
    unlike the past, leans on the rest. An hour is open when it sold `OPEN_SALES` on
    average, or when `hint` (the configured opening hours) has it open and at least
    `CONTRADICTED_DAYS` of history do not contradict it (`CONTRADICTED_SALES`): sales add
    the hours a shop forgot to configure, and take away those it never sells in."""
    first = today - dt.timedelta(days=7 * weeks)
    seen = [day for (day, _), n in counts.items() if n > 0 and first <= day < today]
    hinted = tuple(tuple(_hint_open(hint, wd, h, tz, today) for h in range(24)) for wd in range(7))
    if not seen:
        return SalesProfile(tuple((0.0,) * 24 for _ in range(7)), hinted, 0)
    start = min(seen)
    days = [start + dt.timedelta(days=i) for i in range((today - start).days)]
    per_weekday = [0] * 7
    own = [[0.0] * 24 for _ in range(7)]
    every = [0.0] * 24
    for day in days:
        per_weekday[day.weekday()] += 1
        for h in range(24):
            n = counts.get((day, h), 0)
            own[day.weekday()][h] += n
            every[h] += n
    average = [n / len(days) for n in every]
    expected = []
    for wd in range(7):
        k = per_weekday[wd]
        expected.append(tuple((own[wd][h] + _SHRINK_DAYS * average[h]) / (k + _SHRINK_DAYS)
                              for h in range(24)))
    judged = len(days) >= CONTRADICTED_DAYS
    opened = tuple(tuple(expected[wd][h] >= OPEN_SALES
                         or (hinted[wd][h] and not (judged and expected[wd][h] < CONTRADICTED_SALES))
                         for h in range(24))
                   for wd in range(7))
    return SalesProfile(tuple(expected), opened, len(days))


def _hint_open(hint: OpeningHours, weekday: int, hour: int, tz: ZoneInfo, near: dt.date) -> bool:
    """Whether the configured hours have any of that local hour open, on a weekday near `near`."""
    day = near + dt.timedelta(days=(weekday - near.weekday()) % 7)
    start = dt.datetime.combine(day, dt.time(hour), tzinfo=tz)
    return hint.open_seconds(start, start + dt.timedelta(hours=1), tz) > 0


@dataclass(frozen=True)
class _Slice:
    """A piece of the rest of the day with one rule: open or not, the factor of the jobs
    that follow sales, and the orders expected in it."""

    start: float  # timestamps
    end: float
    open: bool
    factor: float
    shoulder: bool
    sales: float | None


def _hour_starts(now: dt.datetime, day_end: dt.datetime, tz: ZoneInfo) -> list[float]:
    """`now`, then each local hour's start until `day_end` (timestamps)."""
    local = now.astimezone(tz)
    top = local.replace(minute=0, second=0, microsecond=0).timestamp()
    out = [now.timestamp()]
    edge = top + 3600
    while edge < day_end.timestamp():
        out.append(edge)
        edge += 3600
    return out


def _slices(now: dt.datetime, day_end: dt.datetime, tz: ZoneInfo, hours: OpeningHours,
            profile: SalesProfile | None, recent: int | None) -> list[_Slice]:
    starts = _hour_starts(now, day_end, tz)
    ends = [*starts[1:], day_end.timestamp()]
    learned = profile is not None and profile.days > 0
    # What the profile expected of the hour just past (and of this one): sales seen
    # well above it say today differs. Not the current hour's alone: the last hour
    # still counts a peak that is ending.
    usual = 0.0
    if learned and profile and recent:
        for moment in (now, now - RECENT_SPAN):
            local = moment.astimezone(tz)
            usual = max(usual, profile.expected[local.weekday()][local.hour])
    out: list[_Slice] = []
    for index, (a, b) in enumerate(zip(starts, ends, strict=True)):
        local = dt.datetime.fromtimestamp(a, tz)
        wd, h = local.weekday(), local.hour
        sales = profile.expected[wd][h] * (b - a) / 3600 if learned and profile else None
        seen = recent if recent and index < _RECENT_AHEAD else None
        if learned and profile:
            rate = profile.expected[wd][h]
            is_open = profile.open[wd][h]
            if seen is not None and seen > 2 * max(rate, usual) + 2:
                rate, is_open = float(seen), True
            factor = profile.factor(wd, rate) if is_open else 1.0
            out.append(_Slice(a, b, is_open, factor, _shoulder(profile, wd, h, is_open), sales))
            continue
        # Nothing learned: the configured hours, exactly (a range may end mid-hour).
        lo, hi = dt.datetime.fromtimestamp(a, tz), dt.datetime.fromtimestamp(b, tz)
        open_s = hours.open_seconds(lo, hi, tz)
        if seen is not None and open_s < b - a:
            open_s = b - a  # sales now where the hours say closed: open it is
        near = profile is not None and _hint_shoulder(hours, lo, tz)
        if open_s > 0:
            out.append(_Slice(a, a + open_s, True, 1.0, False, None))
        if open_s < b - a:
            out.append(_Slice(a + open_s, b, False, 1.0, near, None))
    return out


def _shoulder(profile: SalesProfile, weekday: int, hour: int, is_open: bool) -> bool:
    if is_open:
        return False
    reach = int(SHOULDER.total_seconds() // 3600)
    for step in range(-reach, reach + 1):
        wd, h = divmod(weekday * 24 + hour + step, 24)
        if profile.open[wd % 7][h]:
            return True
    return False


def _hint_shoulder(hours: OpeningHours, moment: dt.datetime, tz: ZoneInfo) -> bool:
    return hours.open_seconds(moment - SHOULDER, moment + SHOULDER, tz) > 0


def _followed(bounds: _Bounds, jobs: tuple[JobSpec, ...], factor: float,
              shoulder: bool, quiet: bool = False) -> _Bounds:
    """`bounds` with the jobs that follow sales at `factor` times their weight (open), and
    those that watch the shoulders at most SHOULDER_INTERVAL apart (a closed hour near
    open ones)."""
    if factor == 1.0 and not shoulder:
        return bounds
    cap = SHOULDER_INTERVAL.total_seconds()
    out: list[tuple[str, int, float, float, float | None]] = []
    for job, (name, cost, weight, low, high) in zip(jobs, bounds, strict=True):
        if job.rests_when_quiet and quiet and high is not None:
            out.append((name, cost, weight, high, high))
        elif job.watches_shoulders and shoulder:
            out.append((name, cost, weight, low, cap if high is None else min(high, cap)))
        elif job.follows_sales:  # a shoulder is closed: its factor is 1
            out.append((name, cost, weight * factor, low, high))
        else:
            out.append((name, cost, weight, low, high))
    return tuple(out)


def _next_open(slices: Sequence[_Slice], profile: SalesProfile | None, hours: OpeningHours,
               now: dt.datetime, day_end: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    """When the shop opens next after `now`: by the profile where it learned something."""
    for piece in slices:
        if piece.open and piece.start > now.timestamp():
            return dt.datetime.fromtimestamp(piece.start, tz)
    if profile is None or profile.days == 0:
        return hours.next_opening(now, tz)
    edge = day_end.timestamp()
    for _ in range(24 * 7):
        local = dt.datetime.fromtimestamp(edge, tz)
        if profile.open[local.weekday()][local.hour]:
            return local
        edge += 3600
    return None


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
    profile: SalesProfile | None = None,
    recent: int | None = None,
    by_hour: bool = False,
) -> Plan:
    """Decide the next run of every job for the rest of the license's API day.

    `profile`: the license's sales (see `SalesProfile`): which hours are open, and how
    the jobs that follow sales spread their share over them; without one (or with
    nothing learned) the configured `hours` decide, evenly. `recent`: orders seen in
    the last `RECENT_SPAN`, which overrule a profile that expected fewer. `by_hour`:
    also the plan per hour (`Plan.hourly`), for the people who look at it."""
    day_end = next_midnight(now, tz)
    left = max(spendable - spent, 0)
    slices = _slices(now, day_end, tz, hours, profile, recent)
    # Keep a margin (5% of the day) for retries and catch-up runs: re-planning a
    # fraction of the rest would spend it all by midnight. Inside the margin only
    # a trickle runs.
    keep = math.ceil(margin * spendable)
    budget = left - keep if left > keep else left / 4

    specs = tuple(jobs)
    open_b, closed_b = _bounds(specs, open_=True), _bounds(specs, open_=False)
    # Slices with the same rule share their bounds (and their span, for the solver).
    ruled: dict[_Rule, float] = {}
    for piece in slices:
        key = (piece.open, piece.factor, piece.shoulder)
        ruled[key] = ruled.get(key, 0.0) + piece.end - piece.start
    bounds_of = {key: _followed(open_b if key[0] else closed_b, specs, key[1], key[2],
                                key[0] and key[1] <= SALES_FACTOR[0])
                 for key in ruled}
    spans = [(bounds_of[key], span) for key, span in ruled.items()]

    # The largest rate whose demand fits the budget (demand grows with the rate).
    stretch = 1.0
    floor = sum(_demand(b, (), span, 0.0, 1e-12) for b, span in spans)
    if floor > budget:
        # Even at every job's longest interval the day does not fit: stretch them all.
        stretch = floor / budget if budget > 0 else math.inf
        rate = 1e-12
    else:
        rate = _largest_rate(spans, budget)
    followed = stretch == 1.0 and any(f != 1.0 or shoulder for _, f, shoulder in ruled)
    per_rule = ((_own_shares(specs, ruled, bounds_of, open_b, closed_b, budget) if followed else None)
                or {key: _intervals_for(b, rate) for key, b in bounds_of.items()})

    here = slices[0] if slices else _Slice(now.timestamp(), now.timestamp(), False, 1.0, False, None)
    is_open = here.open
    current = (per_rule[(here.open, here.factor, here.shoulder)] if slices
               else _intervals_for(closed_b, rate))
    reopens = None if is_open else _next_open(slices, profile, hours, now, day_end, tz)
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
            due = reopens or day_end
            interval[job.name] = None
        else:
            seconds *= stretch
            interval[job.name] = dt.timedelta(seconds=seconds)
            last = last_runs.get(job.name)
            due = now if last is None else _due(slices, per_rule, job.name, last, now,
                                                seconds, stretch)
            # Closed now: never later than the next opening.
            if reopens is not None and reopens < due:
                due = reopens
        next_run[job.name] = max(due, now)
        runs = 0.0
        for key, span in ruled.items():
            iv = per_rule[key][job.name]
            if iv is not None and span > 0:
                runs += span / (iv * stretch)
        expected[job.name] = round(runs) * job.cost
    hourly = (_hourly(slices, per_rule, specs, stretch, left, tz)
              if by_hour and not math.isinf(stretch) else ())
    return Plan(next_run, interval, expected, left, needed=math.ceil(floor), hourly=hourly)


def _due(slices: Sequence[_Slice], per_rule: Mapping[_Rule, Mapping[str, float | None]],
         name: str, last: dt.datetime, now: dt.datetime, seconds: float,
         stretch: float) -> dt.datetime:
    """When a job that last ran at `last` is due: where one interval has passed, each
    piece of the day counting at its own (`seconds` now). A night poll at 07:10 two
    hours apart is followed at 08:17 where 08:00 starts the hours before opening
    (polled every 30 minutes), not at 09:10, and one at 16:50 in a quiet hour's 15
    minutes at 17:01 where 17:00 starts a busy hour's 3. Counted so, the runs are the
    ones the plan's budget counts. Except at closing: the last run of the open hours is
    followed one interval later at the latest, which sees the day's last changes."""
    plain = dt.datetime.fromtimestamp(last.timestamp() + seconds, dt.UTC)
    owed = 1.0 - (now - last).total_seconds() / seconds  # of an interval, still to pass
    if owed <= 0 or not slices:
        return now if owed <= 0 else plain
    at, iv, closes = now.timestamp(), seconds, False
    for piece in slices:
        closes = closes or (slices[0].open and not piece.open)
        rule = per_rule[(piece.open, piece.factor, piece.shoulder)][name]
        if rule is None:  # no runs in this piece: its time does not count
            at = piece.end
            continue
        iv = rule * stretch
        if owed * iv <= piece.end - at:
            break
        owed -= (piece.end - at) / iv
        at = piece.end
    due = dt.datetime.fromtimestamp(at + owed * iv, dt.UTC)
    return min(plain, due) if closes else due


def _hourly(slices: Sequence[_Slice], per_rule: Mapping[_Rule, Mapping[str, float | None]],
            jobs: Sequence[JobSpec], stretch: float, left: int, tz: ZoneInfo) -> tuple[HourPlan, ...]:
    """The plan per local hour: requests (all jobs) beside the orders expected."""
    by_hour: dict[float, list[_Slice]] = {}
    for piece in slices:
        local = dt.datetime.fromtimestamp(piece.start, tz)
        top = local.replace(minute=0, second=0, microsecond=0).timestamp()
        by_hour.setdefault(top, []).append(piece)
    out = []
    for top, pieces in by_hour.items():
        requests = 0.0
        for piece in pieces:
            intervals = per_rule[(piece.open, piece.factor, piece.shoulder)]
            for job in jobs:
                seconds = intervals[job.name]
                if seconds is not None:
                    requests += job.cost * (piece.end - piece.start) / (seconds * stretch)
        sales = [p.sales for p in pieces if p.sales is not None]
        out.append(HourPlan(dt.datetime.fromtimestamp(max(top, pieces[0].start), tz),
                            0.0 if left <= 0 else requests,
                            sum(sales) if sales else None, any(p.open for p in pieces)))
    return tuple(out)


def _own_shares(jobs: tuple[JobSpec, ...], ruled: Mapping[_Rule, float],
                bounds_of: Mapping[_Rule, _Bounds], open_b: _Bounds, closed_b: _Bounds,
                budget: float) -> dict[_Rule, dict[str, float | None]] | None:
    """Intervals per rule where every job runs at the intervals an even plan over the
    same open and closed hours gives it (one that rests when quiet at its longest in
    the quiet hours), a job that follows sales spreads its even share over the day by
    its factors, and the jobs that watch the shoulders share what is left (their polls
    in the closed hours near open ones come out of their own share).

    Without it the sales' extra polls (the shoulders, an hour's clamp at the longest
    interval) came out of every job's share: the catalog's products ran less often, and
    the day re-check's clamps in quiet hours took from the orders. None when the rest
    does not cover the least the shoulder watchers need (every interval at its longest):
    the one shared rate then stands."""
    even_spans: dict[bool, float] = {}
    for key, span in ruled.items():
        even_spans[key[0]] = even_spans.get(key[0], 0.0) + span
    plain = {True: open_b, False: closed_b}
    rate = _largest_rate([(plain[o], span) for o, span in even_spans.items()], budget)
    own = {o: _intervals_for(plain[o], rate) for o in even_spans}
    followers = {job.name for job in jobs if job.follows_sales and not job.watches_shoulders}
    watchers = {job.name for job in jobs if job.watches_shoulders}
    # The others at the even rate, each rule's bounds (resting in the quiet hours).
    steady = {key: {name: _interval(cost, weight, low, high, rate)
                    for name, cost, weight, low, high in bounds_of[key]
                    if name not in watchers and name not in followers} for key in ruled}
    kept = sum(cost * ruled[key] / seconds for key in ruled
               for name, cost, *_ in bounds_of[key]
               if (seconds := steady[key].get(name)) is not None)
    spread: dict[str, float] = {}  # each follower's rate: its even share, spread by sales
    for name in followers:
        share = sum(cost * span / seconds for o, span in even_spans.items()
                    for job, cost, *_ in plain[o] if job == name and (seconds := own[o][name]))
        alone = [(tuple(b for b in bounds_of[key] if b[0] == name), span)
                 for key, span in ruled.items()]
        least = sum(_demand(b, (), span, 0.0, 1e-12) for b, span in alone)
        # Its longest intervals may cost more than its share: the watchers pay the difference.
        spread[name] = 1e-12 if least > share else _largest_rate(alone, share)
        kept += max(least, share)
    theirs = [(tuple(b for b in bounds_of[key] if b[0] in watchers), span)
              for key, span in ruled.items()]
    rest = budget - kept
    if sum(_demand(b, (), span, 0.0, 1e-12) for b, span in theirs) > rest:
        return None
    shared = _largest_rate(theirs, rest)
    out: dict[_Rule, dict[str, float | None]] = {}
    for key in ruled:
        mine = _intervals_for(bounds_of[key], shared)
        out[key] = {}
        for name, cost, weight, low, high in bounds_of[key]:
            if name in watchers:
                out[key][name] = mine[name]
            elif name in followers:
                out[key][name] = _interval(cost, weight, low, high, spread[name])
            else:
                out[key][name] = steady[key][name]
    return out
