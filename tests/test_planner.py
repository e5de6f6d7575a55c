"""The budget planner: opening hours, and a whole day of re-planning after every run.

Pure: no I/O, no clock. The simulation below stands in for the daemon: it runs the job
with the earliest `next_run`, counts its cost as spent and re-plans, from local
midnight to the next one, in Europe/Brussels with `DEFAULT_JOBS` unless said otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer.jobs import DEFAULT_JOBS
from syncer.planner import (
    CLOSED_MIN_INTERVAL,
    SALES_FACTOR,
    SHOULDER_INTERVAL,
    JobSpec,
    OpeningHours,
    Plan,
    SalesProfile,
    hours,
    learn_profile,
    minutes,
    plan,
)

BRUSSELS = ZoneInfo("Europe/Brussels")
UTC = dt.UTC
SHOP = OpeningHours.parse("10:00-23:00")
SPENDABLE = 450  # 500 a day minus a reserve of 50

ORDINARY_DAY = dt.date(2026, 3, 18)  # a Wednesday, far from any DST change
SPRING_FORWARD = dt.date(2026, 3, 29)  # 23 hours in Brussels
FALL_BACK = dt.date(2026, 10, 25)  # 25 hours in Brussels

CATALOG = ("categories", "users", "payment_methods", "printers")
COST = {job.name: job.cost for job in DEFAULT_JOBS}


def local(day: dt.date, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    """A wall-clock time in Brussels."""
    return dt.datetime.combine(day, dt.time(hour, minute, second), tzinfo=BRUSSELS)


def midnight_after(day: dt.date) -> dt.datetime:
    return local(day + dt.timedelta(days=1))


def make_plan(now: dt.datetime, *, spent: int = 0, spendable: int = SPENDABLE,
              last_runs: Mapping[str, dt.datetime | None] | None = None,
              jobs: Sequence[JobSpec] = DEFAULT_JOBS, shop: OpeningHours = SHOP,
              profile: SalesProfile | None = None, recent: int | None = None) -> Plan:
    return plan(jobs, now=now, tz=BRUSSELS, hours=shop, spent=spent, spendable=spendable,
                last_runs=last_runs if last_runs is not None else {}, profile=profile,
                recent=recent, by_hour=True)


# --- the simulation ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Day:
    """What one simulated day ran: (job, when) in order, and the requests it spent."""

    runs: tuple[tuple[str, dt.datetime], ...]
    spent: int

    def times(self, job: str) -> list[dt.datetime]:
        return [when for name, when in self.runs if name == job]

    def while_open(self, job: str) -> list[dt.datetime]:
        return [when for when in self.times(job) if SHOP.is_open(when, BRUSSELS)]

    def counts(self) -> Counter[str]:
        return Counter(name for name, _ in self.runs)


def simulate(day: dt.date, *, spendable: int = SPENDABLE, jobs: Sequence[JobSpec] = DEFAULT_JOBS,
             shop: OpeningHours = SHOP, profile: SalesProfile | None = None,
             recent: Callable[[dt.datetime], int | None] = lambda _now: None,
             spent: int = 0) -> Day:
    """Run the planner's choices from local midnight to the next one; `now` in UTC, like
    the daemon's clock."""
    cost = {job.name: job.cost for job in jobs}
    now = local(day).astimezone(UTC)
    end = midnight_after(day)
    last_runs: dict[str, dt.datetime | None] = {}
    runs: list[tuple[str, dt.datetime]] = []
    for _ in range(5000):
        current = plan(jobs, now=now, tz=BRUSSELS, hours=shop, spent=spent, spendable=spendable,
                       last_runs=last_runs, profile=profile, recent=recent(now))
        assert set(current.next_run) == set(cost)
        assert all(when >= now for when in current.next_run.values()), "a next_run in the past"
        job, when = min(current.next_run.items(), key=lambda item: (item[1], item[0]))
        if when >= end:
            return Day(tuple(runs), spent)
        now = when
        spent += cost[job]
        last_runs[job] = now
        runs.append((job, now))
    raise AssertionError(f"no end of the day after {len(runs)} runs: {Counter(n for n, _ in runs)}")


@functools.cache
def typical_day(day: dt.date = ORDINARY_DAY) -> Day:
    return simulate(day)


def gaps(times: Sequence[dt.datetime]) -> list[dt.timedelta]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# --- OpeningHours ----------------------------------------------------------------------


def test_one_range_is_every_day() -> None:
    parsed = OpeningHours.parse("10:00-23:00")
    assert parsed.ranges == {day: ((dt.time(10), dt.time(23)),) for day in range(7)}


def test_weekday_table_with_closed_and_default() -> None:
    parsed = OpeningHours.parse({"mon": "closed", "sun": " 12:00 - 15:00 ", "default": "10:00-23:00"})
    assert parsed.ranges[0] == ()
    assert parsed.ranges[6] == ((dt.time(12), dt.time(15)),)
    for day in range(1, 6):
        assert parsed.ranges[day] == ((dt.time(10), dt.time(23)),)
    # Without a default, days not named are closed; "Closed" and "" are closed too.
    sparse = OpeningHours.parse({"fri": "18:00-23:00", "sat": "Closed", "sun": ""})
    assert sparse.ranges[4] == ((dt.time(18), dt.time(23)),)
    assert all(sparse.ranges[day] == () for day in (0, 1, 2, 3, 5, 6))
    monday, tuesday = dt.date(2026, 3, 16), dt.date(2026, 3, 17)
    assert not parsed.is_open(local(monday, 12), BRUSSELS)
    assert parsed.is_open(local(tuesday, 12), BRUSSELS)
    assert parsed.next_opening(local(monday, 9), BRUSSELS) == local(tuesday, 10)


def test_range_past_midnight() -> None:
    late = OpeningHours.parse("18:00-02:00")
    assert late.ranges[0] == ((dt.time(18), dt.time(2)),)
    day = ORDINARY_DAY
    # The night before still counts: 00:00-02:00 from yesterday, 18:00-24:00 from today.
    assert late.open_seconds(local(day), midnight_after(day), BRUSSELS) == 8 * 3600
    assert late.is_open(local(day, 1, 59), BRUSSELS)
    assert not late.is_open(local(day, 2), BRUSSELS)
    assert not late.is_open(local(day, 17, 59, 59), BRUSSELS)
    assert late.is_open(local(day, 18), BRUSSELS)
    assert late.is_open(local(day, 23, 59, 59), BRUSSELS)
    assert late.next_opening(local(day, 1), BRUSSELS) == local(day, 18)
    # Only the night after a day the shop opens: Monday closed, so Tuesday 01:00 is closed.
    weekly = OpeningHours.parse({"mon": "closed", "default": "18:00-02:00"})
    assert not weekly.is_open(local(dt.date(2026, 3, 17), 1), BRUSSELS)
    assert weekly.is_open(local(dt.date(2026, 3, 16), 1), BRUSSELS)  # Sunday night


def test_several_ranges_a_day() -> None:
    split = OpeningHours.parse("11:30-14:00,18:00-22:30")
    assert split.ranges[2] == ((dt.time(11, 30), dt.time(14)), (dt.time(18), dt.time(22, 30)))
    day = ORDINARY_DAY
    assert split.open_seconds(local(day), midnight_after(day), BRUSSELS) == 7 * 3600
    assert split.open_seconds(local(day, 13), local(day, 19), BRUSSELS) == 2 * 3600
    assert [split.is_open(local(day, h, m), BRUSSELS)
            for h, m in ((11, 29), (11, 30), (13, 59), (14, 0), (15, 0), (18, 0), (22, 29), (22, 30))] == [
        False, True, True, False, False, True, True, False]
    assert split.next_opening(local(day, 15), BRUSSELS) == local(day, 18)
    assert split.next_opening(local(day, 12), BRUSSELS) == local(day, 18)
    assert split.next_opening(local(day, 23), BRUSSELS) == local(day + dt.timedelta(days=1), 11, 30)


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("nonsense", "mon"),
        ({"tue": "10-23"}, "tue"),
        ({"wed": "10:00-25:00"}, "wed"),
        ({"thu": "10:60-12:00"}, "thu"),
        ({"fri": "10:00-12:00;14:00-16:00"}, "fri"),
        ({"sat": "11:00-14:00,"}, "sat"),
        ({"default": "10:00-23:00", "sun": "noon-late"}, "sun"),
        ({"monday": "10:00-23:00"}, "monday"),
    ],
)
def test_bad_opening_hours_name_the_day(value: str | dict[str, str], day: str) -> None:
    with pytest.raises(ValueError, match=day):
        OpeningHours.parse(value)


@pytest.mark.parametrize(
    ("day", "length"),
    [(ORDINARY_DAY, 24), (SPRING_FORWARD, 23), (FALL_BACK, 25)],
)
def test_open_seconds_counts_real_seconds_on_dst_days(day: dt.date, length: int) -> None:
    always = OpeningHours.parse("00:00-00:00")
    start, end = local(day), midnight_after(day)
    assert always.open_seconds(start, end, BRUSSELS) == length * 3600
    # The same instants given in UTC.
    assert always.open_seconds(start.astimezone(UTC), end.astimezone(UTC), BRUSSELS) == length * 3600
    # Daytime hours do not cross the change: 13 hours whatever the day.
    assert SHOP.open_seconds(start, end, BRUSSELS) == 13 * 3600
    # A night that spans the change: Saturday 20:00 to Sunday 04:00.
    night = OpeningHours.parse("20:00-04:00")
    saturday = day - dt.timedelta(days=1)
    assert night.open_seconds(local(saturday, 12), local(day, 12), BRUSSELS) == (length - 16) * 3600


def test_is_open_and_next_opening() -> None:
    day = ORDINARY_DAY
    assert not SHOP.is_open(local(day, 9, 59, 59), BRUSSELS)
    assert SHOP.is_open(local(day, 10), BRUSSELS)
    assert SHOP.is_open(local(day, 22, 59, 59), BRUSSELS)
    assert not SHOP.is_open(local(day, 23), BRUSSELS)
    assert SHOP.is_open(local(day, 12).astimezone(UTC), BRUSSELS)
    assert SHOP.next_opening(local(day, 8), BRUSSELS) == local(day, 10)
    # Strictly after: at the opening itself, the next one is tomorrow's.
    assert SHOP.next_opening(local(day, 10), BRUSSELS) == local(day + dt.timedelta(days=1), 10)
    assert SHOP.next_opening(local(day, 23, 30).astimezone(UTC), BRUSSELS) == local(
        day + dt.timedelta(days=1), 10)
    assert SHOP.next_opening(local(SPRING_FORWARD, 1), BRUSSELS) == local(SPRING_FORWARD, 10)
    assert OpeningHours.parse("closed").next_opening(local(day, 8), BRUSSELS) is None
    assert not OpeningHours.parse({}).is_open(local(day, 12), BRUSSELS)


# --- a whole day with the defaults ---------------------------------------------------------


def test_a_typical_day_uses_the_budget_without_passing_it() -> None:
    day = typical_day()
    assert 300 <= day.spent <= SPENDABLE
    assert all(when < midnight_after(ORDINARY_DAY) for _, when in day.runs)
    assert [when for _, when in day.runs] == sorted(when for _, when in day.runs)


def test_orders_get_most_of_the_budget_while_open() -> None:
    day = typical_day()
    opening, closing = local(ORDINARY_DAY, 10), local(ORDINARY_DAY, 23)
    orders = day.while_open("orders")
    assert orders[0] == opening
    assert max(gaps([*orders, closing])) <= minutes(15)
    assert statistics.median(gap.total_seconds() for gap in gaps(orders)) < 5 * 60
    spent_open = Counter({job: COST[job] * len(day.while_open(job)) for job in COST})
    assert spent_open.most_common(1)[0][0] == "orders"
    hot = spent_open["orders"] + spent_open["pos_tables"] + spent_open["customer_credits"]
    assert hot >= 2 / 3 * sum(spent_open.values())


def test_tables_and_credits_run_many_times_while_open() -> None:
    day = typical_day()
    closing = local(ORDINARY_DAY, 23)
    tables = day.while_open("pos_tables")
    credits_ = day.while_open("customer_credits")
    assert len(tables) >= 26  # more than twice an hour
    assert max(gaps([*tables, closing])) <= minutes(30)
    assert len(credits_) >= 13  # more than once an hour
    assert len(tables) > len(credits_) > day.counts()["products"]


def test_catalog_tables_run_a_few_times_a_day() -> None:
    counts = typical_day().counts()
    for job in CATALOG:
        assert 1 <= counts[job] <= 4, (job, counts[job])


def test_almost_nothing_runs_at_night() -> None:
    day = typical_day()
    night = [(job, when) for job, when in day.runs if when < local(ORDINARY_DAY, 9)]
    assert len(night) <= 25, night
    assert "pos_tables" not in {job for job, _ in night}
    # No job without a share of the closed hours runs while the shop is closed.
    idle = {job.name for job in DEFAULT_JOBS if job.closed_weight == 0 and job.closed_max_interval is None}
    assert "pos_tables" in idle
    assert not [(job, when) for job, when in day.runs if job in idle and not SHOP.is_open(when, BRUSSELS)]
    # And what does run at night keeps CLOSED_MIN_INTERVAL apart.
    for job in {job for job, _ in night}:
        assert all(gap >= CLOSED_MIN_INTERVAL for gap in gaps([w for j, w in night if j == job]))


@pytest.mark.parametrize("day", [SPRING_FORWARD, FALL_BACK], ids=["23h", "25h"])
def test_dst_days_keep_the_budget(day: dt.date) -> None:
    assert (midnight_after(day) - local(day).astimezone(UTC)) != dt.timedelta(hours=24)
    ran = typical_day(day)
    assert 300 <= ran.spent <= SPENDABLE
    orders = [when.astimezone(BRUSSELS) for when in ran.while_open("orders")]
    assert orders[0] == local(day, 10)
    assert max(gaps([*orders, local(day, 23)])) <= minutes(15)
    assert "pos_tables" not in {job for job, when in ran.runs if when < local(day, 9)}


@pytest.mark.parametrize("day", [SPRING_FORWARD, FALL_BACK], ids=["23h", "25h"])
@pytest.mark.parametrize("hour", [0, 1, 12])
def test_the_plan_does_not_depend_on_the_clocks_timezone(day: dt.date, hour: int) -> None:
    """The daemon's clock is UTC; a Brussels `now` (same instant) must plan the same day."""
    now = local(day, hour)
    last: dict[str, dt.datetime | None] = {"orders": now - minutes(3), "products": now - hours(3)}
    in_utc = make_plan(now.astimezone(UTC), spent=20, last_runs=last)
    in_brussels = make_plan(now, spent=20, last_runs=last)
    assert in_utc.expected == in_brussels.expected
    assert in_utc.interval == in_brussels.interval
    assert in_utc.next_run == in_brussels.next_run


# --- re-planning after requests spent elsewhere ---------------------------------------------


def test_a_backfill_stretches_the_rest_of_the_day() -> None:
    now = local(ORDINARY_DAY, 12)
    last: dict[str, dt.datetime | None] = {job.name: now for job in DEFAULT_JOBS}
    fresh = make_plan(now, spent=0, last_runs=last)
    after_backfill = make_plan(now, spent=400, last_runs=last)
    assert after_backfill.budget_left == 50
    assert sum(after_backfill.expected.values()) <= 50
    assert sum(fresh.expected.values()) <= SPENDABLE
    assert sum(fresh.expected.values()) > sum(after_backfill.expected.values())
    for job in DEFAULT_JOBS:
        before, after = fresh.interval[job.name], after_backfill.interval[job.name]
        assert before is not None and after is not None
        assert after >= before, job.name
        assert after_backfill.next_run[job.name] >= fresh.next_run[job.name]
    assert after_backfill.interval["orders"] > fresh.interval["orders"]  # type: ignore[operator]


@pytest.mark.parametrize("spent", [SPENDABLE, SPENDABLE + 37])
@pytest.mark.parametrize("hour", [0, 3, 12, 23])
def test_a_spent_day_waits_for_the_next_midnight(spent: int, hour: int) -> None:
    now = local(ORDINARY_DAY, hour, 30)
    result = make_plan(now.astimezone(UTC), spent=spent, last_runs={"orders": now - minutes(1)})
    assert result.budget_left == 0
    assert all(when >= midnight_after(ORDINARY_DAY) for when in result.next_run.values())
    assert set(result.expected.values()) == {0}


@pytest.mark.parametrize("spendable", [1, 2, 5, 10, 25])
def test_a_tiny_budget_stretches_every_interval(spendable: int) -> None:
    now = local(ORDINARY_DAY).astimezone(UTC)
    result = make_plan(now, spendable=spendable)
    assert sum(result.expected.values()) <= spendable
    # Not even every job at its longest interval fits: the plan stretches past the bounds.
    if spendable == 10:
        orders = result.interval["orders"]
        assert orders is not None and orders > hours(2)  # its closed_max_interval


@pytest.mark.parametrize("shop", ["10:00-23:00", "closed", "18:00-02:00"])
@pytest.mark.parametrize("spendable", [1, 3, 5, 8, 11, 27, 60])
def test_a_tiny_budget_is_never_overspent(spendable: int, shop: str) -> None:
    # Jobs of cost 2 (the rechecks) must not start with a single request left.
    day = simulate(ORDINARY_DAY, spendable=spendable, shop=OpeningHours.parse(shop))
    assert spendable // 2 <= day.spent <= spendable


def test_the_plan_fits_whenever_it_is_made() -> None:
    for hour in range(0, 24, 3):
        for spent in (0, 100, 300, 440):
            result = make_plan(local(ORDINARY_DAY, hour, 7), spent=spent)
            assert sum(result.expected.values()) <= SPENDABLE - spent, (hour, spent)


# --- the rate logic on two jobs ------------------------------------------------------


ALWAYS = OpeningHours.parse("00:00-00:00")


def pair(a: JobSpec, b: JobSpec, *, spendable: int = 200) -> dict[str, float]:
    """Intervals (seconds) of two jobs at noon with the shop always open."""
    result = make_plan(local(ORDINARY_DAY, 12), spendable=spendable, jobs=(a, b), shop=ALWAYS)
    out: dict[str, float] = {}
    for name, interval in result.interval.items():
        assert interval is not None
        out[name] = interval.total_seconds()
    assert sum(result.expected.values()) <= spendable
    return out


SECOND = dt.timedelta(seconds=1)
DAY = dt.timedelta(days=1)


def spec(name: str, weight: float = 1.0, *, cost: int = 1, low: dt.timedelta = SECOND,
         high: dt.timedelta = DAY) -> JobSpec:
    """A job free to run anywhere between every second and once a day."""
    return JobSpec(name, weight, low, high, cost=cost)


def test_equal_weights_get_equal_intervals() -> None:
    intervals = pair(spec("a"), spec("b"))
    assert intervals["a"] == pytest.approx(intervals["b"])
    # 12 hours left and 200 requests: most of them shared by the two jobs.
    runs = 12 * 3600 / intervals["a"]
    assert 0.8 * 200 <= 2 * runs <= 200


def test_double_weight_halves_the_interval() -> None:
    intervals = pair(spec("a", 2.0), spec("b", 1.0))
    assert intervals["a"] == pytest.approx(intervals["b"] / 2)


def test_bounds_clamp_the_interval_and_the_others_get_the_rest() -> None:
    free = pair(spec("a", 2.0), spec("b", 1.0))
    capped = pair(spec("a", 2.0, low=hours(1)), spec("b", 1.0))
    assert capped["a"] == 3600
    assert capped["b"] < free["b"]  # the budget `a` cannot use goes to `b`
    floored = pair(spec("a", 2.0), spec("b", 1.0, high=minutes(10)))
    assert floored["b"] == 600
    assert floored["a"] > free["a"]  # `b` runs more than its weight asks, `a` pays


def test_double_cost_doubles_the_interval() -> None:
    intervals = pair(spec("a", cost=2), spec("b", cost=1))
    assert intervals["a"] == pytest.approx(2 * intervals["b"])


# --- when a job is due ----------------------------------------------------------------------


def test_a_job_never_run_is_due_now() -> None:
    now = local(ORDINARY_DAY, 12)
    result = make_plan(now, last_runs={job.name: None for job in DEFAULT_JOBS})
    assert all(when == now for when in result.next_run.values())
    assert make_plan(now, last_runs={}).next_run == result.next_run
    # While closed too, for the jobs that run at night; the others wait for the opening.
    night = local(ORDINARY_DAY, 3)
    closed = make_plan(night, last_runs={"orders": None, "pos_tables": None})
    assert closed.next_run["orders"] == night
    assert closed.next_run["pos_tables"] == local(ORDINARY_DAY, 10)


def test_next_run_is_the_last_run_plus_the_interval() -> None:
    now = local(ORDINARY_DAY, 12).astimezone(UTC)
    last = now - minutes(1)
    result = make_plan(now, last_runs={"orders": last, "products": now - hours(9)})
    interval = result.interval["orders"]
    assert interval is not None and interval > minutes(1)
    assert result.next_run["orders"] == last + interval
    assert result.next_run["products"] == now  # overdue: now, not in the past


def test_closed_jobs_wait_no_later_than_the_opening() -> None:
    now = local(ORDINARY_DAY, 9, 45)
    result = make_plan(now, last_runs={"orders": now - minutes(5)})
    interval = result.interval["orders"]
    assert interval is not None and interval >= CLOSED_MIN_INTERVAL
    assert result.next_run["orders"] == local(ORDINARY_DAY, 10)


def test_the_rate_is_the_largest_that_fits_as_a_bisection_finds_it() -> None:
    """`_largest_rate` solves the piecewise-linear demand exactly; on random job sets it
    must agree with a plain bisection of the demand function (what it replaced)."""
    import random

    from syncer import planner as p

    def bisect(spans: tuple[tuple[p._Bounds, float], ...], budget: float) -> float:
        (open_b, open_s), (closed_b, closed_s) = spans
        lo, hi = 0.0, 1.0
        while p._demand(open_b, closed_b, open_s, closed_s, hi) <= budget and hi < 1e6:
            lo, hi = hi, hi * 2
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if p._demand(open_b, closed_b, open_s, closed_s, mid) <= budget else (lo, mid)
        return lo

    rng = random.Random(11)
    checked = 0
    for _ in range(3000):
        jobs = tuple(JobSpec(
            f"j{k}", rng.choice([0.0, rng.uniform(0.01, 10)]),
            dt.timedelta(seconds=rng.choice([0, rng.uniform(10, 3600)])),
            dt.timedelta(seconds=rng.uniform(3600, 86400)), rng.choice([0.0, rng.uniform(0, 1)]),
            rng.choice([None, dt.timedelta(hours=rng.uniform(1, 24))]), rng.choice([1, 2]))
            for k in range(rng.randint(1, 16)))
        spans = ((p._bounds(jobs, open_=True), rng.choice([0.0, rng.uniform(0, 86400)])),
                 (p._bounds(jobs, open_=False), rng.uniform(0, 86400)))
        budget = rng.uniform(0, 600)
        if p._demand(spans[0][0], spans[1][0], spans[0][1], spans[1][1], 1e-12) > budget:
            continue  # the plan stretches instead (tested above)
        expected = bisect(spans, budget)
        assert p._largest_rate(spans, budget) == pytest.approx(expected, rel=1e-9)
        checked += 1
    assert checked > 1000


# --- following the shop's sales ------------------------------------------------------


def profile_of(per_hour: Mapping[int, float], *, weeks: int = 4, today: dt.date = ORDINARY_DAY,
               hint: OpeningHours = SHOP) -> SalesProfile:
    """A profile learned from `weeks` weeks of the same day every day: orders per local hour."""
    counts = {}
    for back in range(1, 7 * weeks + 1):
        day = today - dt.timedelta(days=back)
        for hour, n in per_hour.items():
            counts[(day, hour)] = round(n)
    return learn_profile(counts, today=today, hint=hint, tz=BRUSSELS)


# A restaurant's two peaks, a trickle around them (orders per hour, 10:00-23:00).
RESTAURANT = {10: 2, 11: 8, 12: 40, 13: 35, 14: 8, 15: 3, 16: 3, 17: 6, 18: 25, 19: 45, 20: 40,
              21: 15, 22: 4}
BAR = {18: 5, 19: 8, 20: 15, 21: 25, 22: 30, 23: 30, 0: 20, 1: 10}


def orders_interval(made: Plan) -> dt.timedelta:
    interval = made.interval["orders"]
    assert interval is not None
    return interval


def test_nothing_learned_is_the_configured_hours_and_even_spread() -> None:
    fresh = learn_profile({}, today=ORDINARY_DAY, hint=SHOP, tz=BRUSSELS)
    assert fresh.days == 0
    assert [fresh.open[2][h] for h in range(24)] == [10 <= h < 23 for h in range(24)]
    # Every open hour alike: the plan of the rest of the day has the same rate in each.
    made = make_plan(local(ORDINARY_DAY, 12), profile=fresh)
    open_hours = [h.requests for h in made.hourly if h.open]
    assert max(open_hours) == pytest.approx(min(open_hours))
    # Near today's plan with no profile at all; a little less while open, for the
    # closed hours near the opening ones (a shop that opens early is seen).
    today, learned = make_plan(local(ORDINARY_DAY, 12)).interval["orders"], made.interval["orders"]
    assert learned is not None and today is not None
    assert today <= learned <= 1.05 * today


def test_a_new_shop_counts_from_its_first_sale_and_a_weekday_leans_on_the_rest() -> None:
    today = ORDINARY_DAY  # a Wednesday
    # Three days of history: Sunday, Monday, Tuesday; 10 orders at noon each, 40 on Monday.
    counts = {(today - dt.timedelta(days=3), 12): 10, (today - dt.timedelta(days=2), 12): 40,
              (today - dt.timedelta(days=1), 12): 10}
    learned = learn_profile(counts, today=today, hint=SHOP, tz=BRUSSELS)
    assert learned.days == 3
    average = 60 / 3
    assert learned.expected[0][12] == pytest.approx((40 + average) / 2)  # Monday, seen once
    assert learned.expected[2][12] == pytest.approx(average)  # Wednesday, never seen yet
    assert learned.expected[2][9] == 0


def test_orders_poll_where_the_sales_are_and_keep_their_share() -> None:
    profile = profile_of(RESTAURANT)
    peak = make_plan(local(ORDINARY_DAY, 19, 30), profile=profile).interval["orders"]
    quiet = make_plan(local(ORDINARY_DAY, 16, 0), profile=profile).interval["orders"]
    assert peak is not None and quiet is not None
    assert peak * 2 < quiet <= minutes(15)
    even, learned = typical_day(), simulate(ORDINARY_DAY, profile=profile)
    assert learned.spent <= SPENDABLE
    # Orders poll at the peaks much more, and as often over the day (within 10%).
    in_peaks = [w for w in learned.while_open("orders") if w.astimezone(BRUSSELS).hour in (12, 19)]
    evenly = [w for w in even.while_open("orders") if w.astimezone(BRUSSELS).hour in (12, 19)]
    assert len(in_peaks) > 1.3 * len(evenly)
    assert len(learned.times("orders")) == pytest.approx(len(even.times("orders")), rel=0.1)
    # The catalog and the other jobs keep what they had (within 10%, or one run).
    for job in ("products", "customers", "invoices", "orders_recheck", "pos_tables", *CATALOG):
        had = even.counts()[job]
        assert learned.counts()[job] >= min(0.9 * had, had - 1), job


def test_hours_learned_from_sales_are_open_though_not_configured() -> None:
    bar = profile_of(BAR)  # the configured hours say 10:00-23:00
    at_one = make_plan(local(ORDINARY_DAY, 1, 0), profile=bar)
    assert at_one.interval["orders"] is not None and at_one.interval["orders"] <= minutes(15)
    assert orders_interval(make_plan(local(ORDINARY_DAY, 1, 0))) > CLOSED_MIN_INTERVAL
    # The tables follow the open hours too.
    assert at_one.interval["pos_tables"] is not None


def test_sales_where_the_history_has_none_are_followed_at_once() -> None:
    restaurant = profile_of(RESTAURANT)
    eight = local(ORDINARY_DAY, 8, 0)
    quiet = make_plan(eight, profile=restaurant)
    # Two hours before the usual opening: at most half an hour between polls.
    assert quiet.interval["orders"] is not None and quiet.interval["orders"] <= SHOULDER_INTERVAL
    assert orders_interval(make_plan(eight)) > SHOULDER_INTERVAL  # today's planner
    busy = make_plan(eight, profile=restaurant, recent=30)  # a holiday: 30 orders this hour
    assert busy.interval["orders"] is not None and busy.interval["orders"] <= minutes(5)
    # Far from any open hour, and nothing sold: the night stays quiet.
    assert orders_interval(make_plan(local(ORDINARY_DAY, 4), profile=restaurant)) > SHOULDER_INTERVAL


def test_only_the_orders_pay_for_the_shoulders() -> None:
    # Their day re-check follows sales while open, but an early sale is news for the
    # orders job: the re-check keeps its closed-hours pace two hours before opening.
    eight = make_plan(local(ORDINARY_DAY, 8, 0), profile=profile_of(RESTAURANT))
    assert orders_interval(eight) <= SHOULDER_INTERVAL
    recheck = eight.interval["orders_recheck"]
    assert recheck is not None and recheck > SHOULDER_INTERVAL


def test_every_other_job_keeps_its_even_share_when_the_orders_follow_sales() -> None:
    # The same open hours, one with a restaurant's peaks and one flat: the catalog and
    # the other jobs that do not follow sales get the same intervals, and so do the
    # tables, charge cards and invoices in every hour that sells; the orders and their
    # re-check spread theirs, and the re-check keeps its total.
    shaped, flat = profile_of(RESTAURANT), profile_of(dict.fromkeys(RESTAURANT, 17))
    assert shaped.open == flat.open
    for hour in (10, 12, 16, 19, 22):
        at = local(ORDINARY_DAY, hour, 30)
        peaks, even = make_plan(at, profile=shaped), make_plan(at, profile=flat)
        quiet = shaped.factor(2, shaped.expected[2][hour]) <= SALES_FACTOR[0]
        for job in DEFAULT_JOBS:
            if job.rests_when_quiet and quiet:
                assert peaks.interval[job.name] == job.max_interval, (hour, job.name)
            elif not (job.follows_sales or job.watches_shoulders):
                assert peaks.interval[job.name] == even.interval[job.name], (hour, job.name)
        assert peaks.expected["orders_recheck"] == pytest.approx(even.expected["orders_recheck"], abs=2)
    lunch = make_plan(local(ORDINARY_DAY, 12, 30), profile=shaped).interval["orders_recheck"]
    lull = make_plan(local(ORDINARY_DAY, 16, 0), profile=shaped).interval["orders_recheck"]
    assert lunch is not None and lull is not None and lunch < lull


def test_what_the_tables_do_not_spend_in_quiet_hours_goes_to_the_orders() -> None:
    # Open tables, charge cards and invoices change while guests are in: in the hours
    # that together sell no more than QUIET_SHARE of the day (this restaurant's 10:00,
    # 15:00 and 16:00) they run at their longest interval, and the orders poll
    # the busy hours more often by what that leaves; the catalog's share is untouched.
    shaped = profile_of(RESTAURANT)
    tireless = tuple(dataclasses.replace(job, rests_when_quiet=False) for job in DEFAULT_JOBS)
    assert tireless != DEFAULT_JOBS  # some default jobs rest
    at = local(ORDINARY_DAY, 9, 0)
    rests, works = make_plan(at, profile=shaped), make_plan(at, profile=shaped, jobs=tireless)
    quiet = [h for h in range(10, 23) if shaped.factor(2, shaped.expected[2][h]) <= SALES_FACTOR[0]]
    assert quiet == [10, 15, 16]
    freed = sum(works.expected[job.name] - rests.expected[job.name]
                for job in DEFAULT_JOBS if job.rests_when_quiet)
    assert freed >= 15
    assert rests.expected["orders"] - works.expected["orders"] == pytest.approx(freed, abs=2)
    for job in DEFAULT_JOBS:
        if not (job.rests_when_quiet or job.follows_sales or job.watches_shoulders):
            assert rests.expected[job.name] == works.expected[job.name], job.name
    assert sum(rests.expected.values()) == pytest.approx(sum(works.expected.values()), abs=2)
    lunch = local(ORDINARY_DAY, 12, 30)
    assert orders_interval(make_plan(lunch, profile=shaped)) < \
        orders_interval(make_plan(lunch, profile=shaped, jobs=tireless))


def test_a_run_is_due_sooner_where_the_intervals_ahead_are_shorter() -> None:
    # A job's next run counts each piece of the day at its own interval: the night's
    # last orders poll before the hours next to opening is followed within them (a
    # holiday that opens at 08:00 is seen), a quiet hour's last poll before a busy hour
    # early in it; the open hours' last poll by one after closing, one interval later.
    profile = profile_of(RESTAURANT)
    night = local(ORDINARY_DAY, 7, 10)
    made = make_plan(night, profile=profile, last_runs={"orders": night})
    assert orders_interval(made) > dt.timedelta(hours=1)
    assert local(ORDINARY_DAY, 8, 0) < made.next_run["orders"] < local(ORDINARY_DAY, 8, 30)
    lull = local(ORDINARY_DAY, 16, 50)  # 230 requests spent, as on a restaurant's day
    made = make_plan(lull, profile=profile, last_runs={"orders": lull}, spent=230)
    assert orders_interval(made) == dt.timedelta(minutes=15)
    assert made.next_run["orders"] < local(ORDINARY_DAY, 17, 2)
    closing = local(ORDINARY_DAY, 22, 55)  # the last run of the open hours: one interval
    made = make_plan(closing, profile=profile, last_runs={"orders": closing}, spent=420)
    assert made.next_run["orders"] == closing + orders_interval(made) < local(ORDINARY_DAY, 23, 15)


def test_configured_hours_the_history_never_sells_in_are_closed() -> None:
    # A bar configured 10:00-23:00 that sells from 18:00: after two weeks its empty
    # afternoons are closed (the catalog and the tables poll its evenings instead);
    # after one week the configured hours still stand.
    weeks = {n: profile_of(BAR, weeks=n) for n in (1, 4)}
    assert weeks[1].open[2][12] and not weeks[4].open[2][12]
    assert weeks[4].open[2][20] and weeks[4].open[2][1]  # sold in, configured or not
    afternoon = local(ORDINARY_DAY, 14, 0)
    assert make_plan(afternoon, profile=weeks[4]).interval["products"] != \
        make_plan(afternoon, profile=weeks[1]).interval["products"]
    assert make_plan(afternoon, profile=weeks[4]).interval["pos_tables"] is None  # closed


def test_the_plan_shows_requests_per_hour_beside_the_sales_expected() -> None:
    profile = profile_of(RESTAURANT)
    made = make_plan(local(ORDINARY_DAY, 9, 30), profile=profile)
    assert [h.start.astimezone(BRUSSELS).hour for h in made.hourly] == list(range(9, 24))
    assert made.hourly[0].start == local(ORDINARY_DAY, 9, 30)
    by_hour = {h.start.astimezone(BRUSSELS).hour: h for h in made.hourly}
    assert by_hour[19].sales == pytest.approx(45)  # every day alike: its own average
    assert by_hour[19].requests > 1.3 * by_hour[16].requests
    assert sum(h.requests for h in made.hourly) == pytest.approx(sum(made.expected.values()), abs=8)
    assert not by_hour[23].open and by_hour[12].open


_hour_counts = st.dictionaries(st.integers(0, 23), st.integers(0, 80), max_size=24)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(per_hour=_hour_counts, weeks=st.integers(0, 4), spendable=st.integers(1, 600),
       reserve=st.integers(0, 100), spent=st.integers(0, 650), hour=st.integers(0, 23),
       minute=st.integers(0, 59), recent=st.one_of(st.none(), st.integers(0, 200)),
       shop=st.sampled_from(["10:00-23:00", "closed", "18:00-02:00", "07:00-14:00"]))
def test_any_profile_plans_within_the_budget(per_hour: dict[int, int], weeks: int, spendable: int,
                                              reserve: int, spent: int, hour: int, minute: int,
                                              recent: int | None, shop: str) -> None:
    hint = OpeningHours.parse(shop)
    profile = profile_of(per_hour, weeks=weeks, hint=hint)
    usable = max(spendable - reserve, 0)  # daily_budget - reserve: the reserve is not planned
    made = make_plan(local(ORDINARY_DAY, hour, minute), spent=spent, spendable=usable,
                     shop=hint, profile=profile, recent=recent)
    left = max(usable - spent, 0)
    assert made.budget_left == left
    assert sum(made.expected.values()) <= left
    assert all(when >= local(ORDINARY_DAY, hour, minute) for when in made.next_run.values())
    if left == 0:
        assert all(when >= midnight_after(ORDINARY_DAY) for when in made.next_run.values())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(per_hour=_hour_counts, spendable=st.sampled_from([7, 60, 200, 450]),
       surprise=st.integers(0, 23), shop=st.sampled_from(["10:00-23:00", "18:00-02:00"]))
def test_a_day_under_any_profile_never_passes_the_budget(per_hour: dict[int, int], spendable: int,
                                                          surprise: int, shop: str) -> None:
    hint = OpeningHours.parse(shop)
    profile = profile_of(per_hour, hint=hint)

    def recent(now: dt.datetime) -> int | None:  # sales out of the blue from `surprise` on
        return 40 if now.astimezone(BRUSSELS).hour >= surprise else 0

    day = simulate(ORDINARY_DAY, spendable=spendable, shop=hint, profile=profile, recent=recent)
    assert day.spent <= spendable  # daily_budget - reserve: the reserve stays untouched
    assert day.spent >= spendable // 2  # and the budget is used, not hoarded


def test_the_end_of_a_peak_is_not_taken_for_a_day_unlike_the_past() -> None:
    # At 22:30 the last hour still counts the end of the dinner (15 orders expected at
    # 21:00, 4 at 22:00): 12 seen is the usual, not a surprise.
    restaurant = profile_of(RESTAURANT)
    late = local(ORDINARY_DAY, 22, 30)
    usual = make_plan(late, profile=restaurant, recent=12, spent=300)
    assert usual.interval == make_plan(late, profile=restaurant, recent=0, spent=300).interval
    # 60 is a surprise: the next hour, closed by the profile, is planned open.
    surprised = make_plan(late, profile=restaurant, recent=60, spent=300)
    assert surprised.hourly[-1].open and not usual.hourly[-1].open
