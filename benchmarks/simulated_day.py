"""A shop's day, simulated: the real planner and sync jobs against the simulator, on a fake clock.

After some weeks of history (loaded with a backfill the evening before), orders
arrive in the day's shape (`syncer.simulator.shapes`: a restaurant's two peaks, a flat
shop, a morning bakery, a late bar, and a restaurant's day unlike its history), a few
products change and some of the day's tickets are re-opened and changed; the daemon's
jobs run when the planner says, over real HTTP, into a real database. By default every
shape runs twice, under today's planner (the configured hours, the orders' share
spread evenly) and the one that follows the shop's sales, and one Markdown table
shows per shape: the delay from an order's creation, a product change and a ticket's
edit to its arrival in the database (median, 95th percentile, max), what is not in
the database at midnight, and the requests used (must stay <= daily_budget -
reserve). Each shape's day is drawn `--days` times (3; seeds `--seed` on) and the
delays pooled, so that one lucky draw decides nothing; `--reserves 50,49,48` runs each
day at those reserves too, which moves every poll's phase (differences of a few
percent between the planners are within what the phases decide).

`--detail PLANNER` runs one day and reports, besides those, CPU three ways: the
syncer's own (the daemon's calls, HTTP client included, timed on
the thread that makes them), the simulator's (its request threads) and the rest
(this harness: adding orders, checking arrivals). The syncer's is split in two: the
job runs (`LicenseJobs.run`, what `syncer run` does for each fired job) and this
harness's scans for what is due at each step of the fake clock (`Daemon.due_now`,
`next_due`). `syncer run` scans nothing: each job has its own APScheduler timer. So
the figure "as deployed" is the job runs plus one APScheduler fire per run, its CPU
measured here on an empty job (`scheduler_fire_cpu`).

Then what the job runs are made of: statements and transactions per run (`RunShape`),
the CPU as deployed by part (`CpuParts`: database, HTTP, JSON, parse, plan, ...), and
the floor: the CPU of the cheapest run this design allows, measured with the real
parts (`cheapest_run_cpu`), times the day's runs. No version of the code that keeps
the design's rules and this stack spends less per license-day than that floor.

    python -m benchmarks.simulated_day                      # every shape, both planners
    python -m benchmarks.simulated_day --shape flat --days 9 --reserves 50,49,48
    python -m benchmarks.simulated_day --detail sales       # one restaurant day, CPU figures
    python -m benchmarks.simulated_day --detail sales --licenses 200 --orders-per-day 120
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import random
import resource
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
from pydantic import SecretStr
from sqlalchemy import Connection, Engine, event, func, select

from syncer import archive
from syncer import client as client_module
from syncer import daemon as daemon_module
from syncer import sync as sync_module
from syncer import tables as t
from syncer.backfill import Backfill
from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
from syncer.daemon import Daemon, make_scheduler
from syncer.db import make_engine, migrate
from syncer.leases import claim_on, finish_on
from syncer.load import Counts
from syncer.resources import RESOURCES
from syncer.runtime import Runtime
from syncer.simulator import Simulator, generate, server
from syncer.simulator.shapes import SHAPES, DayShape

TZ = ZoneInfo("Europe/Brussels")
TOKEN = "benchmark-token-0000"


class SimulatorCpu:
    """CPU seconds of the simulator's request threads (each connection has one)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()
        original = server._Handler.handle

        self.active = 0

        def handle(handler: Any) -> None:
            with self._lock:
                self.active += 1
            started = time.thread_time()
            try:
                original(handler)
            finally:
                with self._lock:
                    self.seconds += time.thread_time() - started
                    self.active -= 1

        server._Handler.handle = handle  # type: ignore[method-assign,assignment]

    def settled(self, timeout: float = 10.0) -> float:
        """The seconds so far, once the connection threads a stop closed have ended."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.seconds


@functools.cache
def _simulator_cpu() -> SimulatorCpu:
    return SimulatorCpu()  # patches the simulator's handler once


class RunShape:
    """Statements and transactions the job runs send, counted only while a job runs
    (the harness's own queries are not): transactions by SQLAlchemy's commit event;
    statements by its cursor events on SQLite, on Postgres on psycopg's cursors (the
    loader sends its upserts and COPYs on the driver's cursor, past SQLAlchemy)."""

    def __init__(self, engine: Any) -> None:
        self.on = False
        self.statements = self.commits = 0

        @event.listens_for(engine, "commit")
        def _commit(*_args: Any) -> None:
            self.commits += self.on

        if engine.dialect.name != "postgresql":
            @event.listens_for(engine, "before_cursor_execute")
            def _statement(*_args: Any) -> None:
                self.statements += self.on
            return
        for name in ("execute", "executemany", "copy"):
            setattr(psycopg.Cursor, name, self._counted(getattr(psycopg.Cursor, name)))

    def _counted(self, function: Any) -> Any:
        @functools.wraps(function)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.statements += self.on
            return function(*args, **kwargs)
        return counted


class CpuParts:
    """CPU of the job runs by part, on the running thread: each part is a set of
    functions wrapped with a timer; a call inside a timed call counts for the outer
    one (a statement inside the load counts as the database's, once). Counted only
    while `shape.on` (a job runs), like the statements."""

    PARTS: dict[str, tuple[tuple[Any, str], ...]] = {
        "database": ((Connection, "execute"), (Connection, "_commit_impl"),
                     (Connection, "_rollback_impl"), (Engine, "connect"), (Connection, "close"),
                     (psycopg.Cursor, "execute"), (psycopg.Cursor, "copy")),
        "http": ((httpx.Client, "get"),),
        "json": ((client_module, "decode_body"),),
        "parse": ((sync_module, "parse_records"),),
        "plan": ((daemon_module, "plan"),),
        "archive compression": ((archive, "compress"),),
    }

    def __init__(self, shape: RunShape) -> None:
        self.shape = shape
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self._inside = threading.local()
        for part, targets in self.PARTS.items():
            for owner, name in targets:
                setattr(owner, name, self._timed(part, getattr(owner, name)))

    def _timed(self, part: str, function: Any) -> Any:
        inside, seconds, shape = self._inside, self.seconds, self.shape

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not shape.on or getattr(inside, "on", False):
                return function(*args, **kwargs)
            inside.on = True
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[part] += time.thread_time() - started
                inside.on = False
        return timed


def cheapest_run_cpu(engine: Any, config: Config, clock: Clock, n: int = 200) -> float:
    """CPU seconds, on the calling thread, of the cheapest job run this design allows,
    measured with the real parts: the lease claimed (`leases.claim_on`); one request
    through the real client and ledger (the spend and the ledger row committed before it
    leaves, its outcome after: rules 1 and 8); the answer archived and the job's state,
    next run and lease stored in one transaction (`archive.keep`, `leases.finish_on`).
    The answer is a list equal to the last one (the tables list): nothing to parse,
    write or plan. Every run of a day costs at least this."""
    lic = config.licenses[0]
    ttl = dt.timedelta(seconds=45)
    with Runtime(engine, config, lic, purpose="call", clock=clock) as rt:
        rt.client.fetch("get-tables")  # the credential probe, once per process
        started = time.thread_time()
        for _ in range(n):
            now = clock()
            with engine.begin() as conn:
                assert claim_on(conn, lic.name, "__cheapest__", "bench:0:0", now, ttl).taken
            page = rt.client.fetch("get-tables")
            with engine.begin() as conn:
                archive.keep(conn, lic.name, "get-tables", None, page, kind=archive.FULL_LIST,
                             state={}, counts=Counts(unchanged=len(page.records)),
                             received_at=now)
                finish_on(conn, lic.name, "__cheapest__", "bench:0:0", next_run_at=now,
                          last_attempt_at=now, last_success_at=now)
        return (time.thread_time() - started) / n


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def arrivals(day: dt.date, count: int, rng: random.Random) -> list[dt.datetime]:
    """Order times: a lunch peak, a dinner peak, a trickle in between (10:00-23:00)."""
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.4:
            minute = rng.gauss(12.75 * 60, 45)
        elif roll < 0.9:
            minute = rng.gauss(19.5 * 60, 60)
        else:
            minute = rng.uniform(10 * 60, 23 * 60)
        minute = min(max(minute, 10 * 60 + 1), 23 * 60 - 1)
        out.append(dt.datetime.combine(day, dt.time(), tzinfo=TZ) + dt.timedelta(minutes=minute))
    return sorted(out)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# The shapes run by default: (name, the history's shape, the day's shape).
RUNS = (("restaurant", "restaurant", "restaurant"), ("flat shop", "flat", "flat"),
        ("bakery", "bakery", "bakery"), ("late bar", "bar", "bar"),
        ("unlike its history", "restaurant", "holiday"))
PLANNERS = (("today", False), ("sales", True))  # (label, Daemon(follow_sales=...))


@dataclass
class DayResult:
    """What one simulated day measured (delays in minutes)."""

    orders: list[float]
    missing: int
    products: list[float]
    edits: list[float]
    edits_missing: int
    spent: dict[str, int]
    budget: int
    runs: int
    detail: dict[str, Any] = field(default_factory=dict)


def simulate(args: argparse.Namespace, history: DayShape, today: DayShape, *,
             follow_sales: bool, detail: bool = False) -> DayResult:
    """One day of `syncer run` against the simulator, after `args.weeks` weeks of history
    in the shape `history`, the day's orders in the shape `today`."""
    rng = random.Random(args.seed)
    day = args.day
    start = dt.datetime.combine(day, dt.time(), tzinfo=TZ)
    end = start + dt.timedelta(days=1)
    clock = Clock(start - dt.timedelta(hours=1))
    names = [f"shop{i:03d}" for i in range(args.licenses)]
    past = args.history if args.history is not None else args.weeks * 7 * 225
    sim = Simulator(generate(seed=args.seed, orders=past, anchor=day - dt.timedelta(days=1),
                             shape=history),
                    licenses=dict.fromkeys(names, TOKEN), clock=clock)
    base_url = sim.start()
    tmp = tempfile.TemporaryDirectory()
    url = args.db or f"sqlite:///{Path(tmp.name) / 'day.db'}"
    engine = make_engine(url)
    migrate(engine)
    config = Config(database=DatabaseConfig(url=url),
                    api=ApiConfig(base_url=base_url, reserve=args.reserve),
                    licenses=tuple(LicenseConfig(name=n, token=SecretStr(TOKEN)) for n in names))

    # History is loaded the evening before, as a user would with `syncer backfill`.
    for lic in config.licenses:
        with Runtime(engine, config, lic, purpose="backfill", clock=clock) as rt:
            Backfill(rt).run(RESOURCES)

    archived = archive.sizes(engine)  # after the history: the day's share is the difference
    order_times = today.times(day, args.orders_per_day, rng, TZ)
    product_ids = sorted(sim.dataset.products)
    # The catalogue is edited while the shop is open (today's hours).
    change_times = sorted(start + dt.timedelta(hours=rng.uniform(today.opens, min(today.closes, 24)))
                          for _ in range(args.product_changes))
    # Tickets re-opened and changed: an order of the day, some minutes after it was made.
    edit_times = sorted(rng.sample(order_times, min(args.late_edits, len(order_times))))
    edit_times = [min(when + dt.timedelta(minutes=rng.uniform(5, 45)), end - dt.timedelta(minutes=1))
                  for when in edit_times]
    edit_times.sort()
    clock.now = start
    daemon = Daemon(engine, config, clock=clock, follow_sales=follow_sales)
    shape = RunShape(engine) if detail else None
    parts = CpuParts(shape) if shape is not None else None
    created: dict[int, dt.datetime] = {}
    arrived: dict[tuple[str, int], dt.datetime] = {}
    touched: list[tuple[dt.datetime, int]] = []
    product_seen: dict[tuple[str, int, dt.datetime], dt.datetime] = {}
    edited: dict[int, tuple[dt.datetime, Any]] = {}  # order id: (when, its new total)
    edit_seen: dict[tuple[str, int], dt.datetime] = {}
    runs = 0
    cpu0 = time.process_time()
    simulator_cpu = _simulator_cpu()
    sim_cpu0 = simulator_cpu.seconds
    runs_cpu = scan_cpu = 0.0  # the job runs; the harness's scans for what is due
    wall0 = time.perf_counter()
    oi = ci = ei = 0
    while clock.now < end:
        started = time.thread_time()
        due = daemon.next_due() or end
        scan_cpu += time.thread_time() - started
        nxt = min(due,
                  order_times[oi] if oi < len(order_times) else end,
                  change_times[ci] if ci < len(change_times) else end,
                  edit_times[ei] if ei < len(edit_times) else end,
                  end)
        clock.now = max(nxt, clock.now)
        while oi < len(order_times) and order_times[oi] <= clock.now:
            for order_id in sim.add_orders(1, at=order_times[oi]):
                created[order_id] = order_times[oi]
            oi += 1
        while ci < len(change_times) and change_times[ci] <= clock.now:
            pid = rng.choice(product_ids)
            sim.touch("products", [pid])
            touched.append((change_times[ci], pid))
            ci += 1
        while ei < len(edit_times) and edit_times[ei] <= clock.now:
            made = [i for i, when in created.items() if i not in edited and when < edit_times[ei]]
            if made:
                order_id = rng.choice(made)
                sim.touch("orders", [order_id])
                order = sim.dataset.orders.get(order_id)
                assert order is not None
                edited[order_id] = (edit_times[ei], order.total_price)
            ei += 1
        if due <= clock.now:
            started = time.thread_time()
            jobs = daemon.due_now()
            scan_cpu += time.thread_time() - started
            for jobs_of, job in jobs:
                started = time.thread_time()
                if shape is not None:
                    shape.on = True
                runs += jobs_of.run(job).ran
                if shape is not None:
                    shape.on = False
                runs_cpu += time.thread_time() - started
            _record_arrivals(engine, names, created, arrived, touched, product_seen, clock.now)
            _record_edits(engine, names, edited, edit_seen, clock.now)
        if clock.now >= end:
            break
    wall = time.perf_counter() - wall0
    sim.stop()  # its connections close: their threads' CPU is counted
    cpu = time.process_time() - cpu0
    served = simulator_cpu.settled() - sim_cpu0

    with engine.connect() as conn:
        spent = dict(conn.execute(select(t.request_budget.c.license, t.request_budget.c.spent)
                                  .where(t.request_budget.c.day == day)).all())
        stored = conn.execute(select(func.count()).select_from(t.orders)).scalar_one()
    budget = config.spendable(config.licenses[0])
    order_delays = [(arrived[(n, i)] - c).total_seconds() / 60 for n in names
                    for i, c in created.items() if (n, i) in arrived]
    product_delays = [(seen - when).total_seconds() / 60
                      for (_n, _pid, when), seen in product_seen.items()]
    edit_delays = [(seen - edited[i][0]).total_seconds() / 60 for (_n, i), seen in edit_seen.items()]
    result = DayResult(order_delays, len(created) * len(names) - len(order_delays), product_delays,
                       edit_delays, len(edited) * len(names) - len(edit_delays), spent, budget, runs)
    assert max(spent.values()) <= budget, "the budget was passed"
    if detail:
        assert shape is not None and parts is not None
        result.detail = {"engine": engine, "config": config, "clock": clock, "names": names,
                         "cpu": cpu, "wall": wall, "served": served, "stored": stored,
                         "runs_cpu": runs_cpu, "scan_cpu": scan_cpu, "shape": shape,
                         "parts": parts, "archived": archived, "end": end, "tmp": tmp}
    else:
        engine.dispose()
        tmp.cleanup()
    return result


def _minutes(values: list[float]) -> str:
    if not values:
        return "- / - / -"
    return (f"{statistics.median(values):.2f} / {percentile(values, 0.95):.2f} / "
            f"{max(values):.2f}")


def pooled(args: argparse.Namespace, history: DayShape, today: DayShape, *,
           follow_sales: bool) -> DayResult:
    """`args.days` days of one shape, each drawn with its own seed (`args.seed` on) and run
    at each of `args.reserves`, their delays pooled: a 95th percentile of one day's 20
    re-opened tickets is its 19th value, and one draw can favour either planner. A
    reserve one request smaller moves every poll's phase: the flat shop's median moved
    by up to 4% that way under either planner (nine days; see docs/performance.md)."""
    results = [simulate(argparse.Namespace(**{**vars(args), "seed": args.seed + n,
                                              "reserve": reserve}),
                        history, today, follow_sales=follow_sales)
               for n in range(args.days) for reserve in args.reserves]
    spent: dict[str, int] = {}
    for r in results:
        for name, n in r.spent.items():
            spent[name] = max(spent.get(name, 0), n)
    return DayResult([d for r in results for d in r.orders], sum(r.missing for r in results),
                     [d for r in results for d in r.products], [d for r in results for d in r.edits],
                     sum(r.edits_missing for r in results), spent, max(r.budget for r in results),
                     sum(r.runs for r in results))


def table(args: argparse.Namespace) -> None:
    """Every shape under today's planner and the sales-following one, as a Markdown table."""
    reserves = "" if args.reserves == [50] else \
        f", each at reserves {', '.join(map(str, args.reserves))}"
    print(f"simulated day {args.day} ({args.day:%A}) drawn {args.days} times (seeds {args.seed}-"
          f"{args.seed + args.days - 1}{reserves}), {args.weeks} weeks of history, "
          f"{args.orders_per_day} orders, {args.product_changes} product changes, "
          f"{args.late_edits} re-opened tickets a day, default config (opening_hours "
          "10:00-23:00, 500 requests a day); delays in minutes, median / p95 / max, pooled")
    print("| day | planner | order delay | orders missing | product change delay | "
          "late edit delay | late edits missing | requests (limit) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, history, today in RUNS:
        if args.shape and args.shape not in (history, today):
            continue
        for planner, follow in PLANNERS:
            r = pooled(args, SHAPES[history], SHAPES[today], follow_sales=follow)
            shown = label if history == today else f"{label} ({history} history, {today} day)"
            print(f"| {shown} | {planner} | {_minutes(r.orders)} | {r.missing} | "
                  f"{_minutes(r.products)} | {_minutes(r.edits)} | {r.edits_missing} | "
                  f"{max(r.spent.values())} ({r.budget}) |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--licenses", type=int, default=1)
    parser.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2026, 11, 25))
    parser.add_argument("--orders-per-day", type=int, default=250)
    parser.add_argument("--weeks", type=int, default=4, help="weeks of history before the day")
    parser.add_argument("--history", type=int, default=None,
                        help="orders before the day (default: the weeks' worth)")
    parser.add_argument("--product-changes", type=int, default=200)
    parser.add_argument("--late-edits", type=int, default=20)
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="only the days of this shape")
    parser.add_argument("--detail", choices=[p for p, _ in PLANNERS], default=None,
                        help="one day (restaurant, or --shape) under this planner, with CPU figures")
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=3,
                        help="days drawn per shape and planner (seeds --seed on), delays pooled")
    parser.add_argument("--reserves", type=lambda v: [int(x) for x in v.split(",")], default=[50],
                        help="run each day at each of these reserves (e.g. 50,49,48: the polls' "
                             "phases move), delays pooled")
    args = parser.parse_args()
    if args.detail is None:
        table(args)
        return
    chosen = SHAPES[args.shape or "restaurant"]
    args.reserve = args.reserves[0]
    r = simulate(args, chosen, chosen, follow_sales=dict(PLANNERS)[args.detail], detail=True)
    report(args, r)


def report(args: argparse.Namespace, r: DayResult) -> None:
    """The detailed figures of one day: delays, requests, CPU by part, the archive."""
    d = r.detail
    engine, config, clock, names = d["engine"], d["config"], d["clock"], d["names"]
    runs, runs_cpu, scan_cpu, shape, parts = r.runs, d["runs_cpu"], d["scan_cpu"], d["shape"], d["parts"]
    cpu, served, archived, end = d["cpu"], d["served"], d["archived"], d["end"]
    day = args.day
    spent = r.spent
    print(f"simulated day {day} ({day:%A}), shape {args.shape or 'restaurant'}, planner "
          f"{args.detail}, {len(names)} license(s)")
    print(f"orders created during the day: {args.orders_per_day}; not yet in the database at "
          f"midnight: {r.missing}")
    print(f"requests used: min {min(spent.values())}, max {max(spent.values())} per license "
          f"(limit daily_budget - reserve = {r.budget}); job runs: {runs}")
    print(f"order delay (min): median / p95 / max {_minutes(r.orders)}")
    print(f"product change delay (min): median / p95 / max {_minutes(r.products)}")
    print(f"late edit delay (min): median / p95 / max {_minutes(r.edits)}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process: CPU {cpu:.1f} s, wall {d['wall']:.1f} s for the day, peak RSS {peak_mb:.0f} MB "
          f"(simulator included); {d['stored']} orders stored in all")
    fire = scheduler_fire_cpu()
    deployed = runs_cpu + runs * fire
    syncer_cpu = runs_cpu + scan_cpu
    print(f"CPU: syncer {syncer_cpu:.1f} s (job runs {runs_cpu:.2f} s + this harness's due scans "
          f"{scan_cpu:.2f} s), simulator {served:.1f} s, harness and the rest "
          f"{cpu - syncer_cpu - served:.1f} s")
    print(f"syncer CPU per license-day as deployed: {deployed / len(names):.2f} s (the job runs, "
          f"plus {runs} APScheduler fires at {fire * 1e6:.0f} us each: `syncer run` fires each "
          "job from its own timer and scans nothing)")
    requests = sum(spent.values())
    print(f"per job run: {shape.statements / runs:.1f} statements in {shape.commits / runs:.1f} "
          f"transactions, {requests / runs:.2f} requests")
    shares = {**parts.seconds, "APScheduler fires": runs * fire}
    shares["the rest (the syncer's Python around them)"] = deployed - sum(shares.values())
    print("syncer CPU as deployed by part: " + ", ".join(
        f"{name} {seconds / len(names):.2f} s ({seconds / deployed:.0%})"
        for name, seconds in shares.items()))
    day_archive = {k: v - archived[k] for k, v in archive.sizes(engine).items()}
    print(f"archive for the day: {day_archive['answers'] / len(names):.0f} answers, "
          f"{day_archive['bodies'] / len(names):.0f} bodies, "
          f"{day_archive['stored_bytes'] / len(names) / 1024:.1f} KiB stored "
          f"({day_archive['raw_bytes'] / len(names) / 1024:.1f} KiB raw) per license-day")
    # What stays once the day is past [archive] keep_days (retention with keep_days = 0).
    archive.retention(engine, 0, end + dt.timedelta(days=1))
    kept = {k: v - archived[k] for k, v in archive.sizes(engine).items()}
    print(f"archive kept after the retention: {kept['answers'] / len(names):.0f} answers, "
          f"{kept['stored_bytes'] / len(names) / 1024:.1f} KiB stored per license-day "
          "(the history's answers are all kept)")
    # Last, on a simulator of its own and the next API day: it spends requests and
    # archives answers, which the figures above must not count.
    floor_sim = Simulator(generate(seed=args.seed, orders=10, anchor=day),
                          licenses={names[0]: TOKEN}, clock=clock)
    config = config.model_copy(update={"api": ApiConfig(base_url=floor_sim.start())})
    try:
        cheapest = cheapest_run_cpu(engine, config, clock)
    finally:
        floor_sim.stop()
    floor = runs * (cheapest + fire)
    print(f"the cheapest run this design allows (an unchanged answer: 6 statements in 4 "
          f"transactions, one request, nothing parsed or planned) costs {cheapest * 1e3:.2f} ms "
          f"here: {runs} of them and their fires are {floor / len(names):.2f} s per license-day")
    engine.dispose()
    d["tmp"].cleanup()


def scheduler_fire_cpu(fires: int = 2000, jobs: int = 16) -> float:
    """CPU seconds APScheduler spends per fired job, on the scheduler `syncer run` makes
    (`daemon.make_scheduler`), each of `jobs` date jobs re-adding itself after its run
    as `Daemon._fire` does, job body empty."""
    scheduler = make_scheduler()
    finished = threading.Event()
    count = 0
    lock = threading.Lock()

    def fire(job: int) -> None:
        nonlocal count
        with lock:
            count += 1
            again = count <= fires - jobs  # then the jobs' last runs end at `fires`
            if count == fires:
                finished.set()
        if again:
            scheduler.add_job(fire, "date", run_date=dt.datetime.now(dt.UTC), args=[job],
                              id=f"job{job}", replace_existing=True)

    scheduler.start()
    started = time.process_time()
    for job in range(jobs):
        scheduler.add_job(fire, "date", run_date=dt.datetime.now(dt.UTC), args=[job], id=f"job{job}")
    finished.wait(60)
    cpu = time.process_time() - started
    scheduler.shutdown(wait=True)
    return cpu / max(count, 1)


def _record_arrivals(engine: Any, names: list[str], created: dict[int, dt.datetime],
                     arrived: dict[tuple[str, int], dt.datetime],
                     touched: list[tuple[dt.datetime, int]],
                     product_seen: dict[tuple[str, int, dt.datetime], dt.datetime],
                     now: dt.datetime) -> None:
    pending = [i for i in created if any((n, i) not in arrived for n in names)]
    with engine.connect() as conn:
        if pending:
            rows = conn.execute(select(t.orders.c.license, t.orders.c.id)
                                .where(t.orders.c.id.in_(pending))).all()
            for lic, order_id in rows:
                arrived.setdefault((lic, order_id), now)
        for when, pid in touched:
            waiting = [n for n in names if (n, pid, when) not in product_seen]
            if not waiting:
                continue
            rows = conn.execute(select(t.products.c.license).where(
                t.products.c.id == pid, t.products.c.modified_at >= when - dt.timedelta(seconds=1),
                t.products.c.license.in_(waiting))).all()
            for (lic,) in rows:
                product_seen[(lic, pid, when)] = now


def _record_edits(engine: Any, names: list[str], edited: dict[int, tuple[dt.datetime, Any]],
                  seen: dict[tuple[str, int], dt.datetime], now: dt.datetime) -> None:
    """Re-opened tickets whose new total is in the database by `now`."""
    waiting = [i for i in edited if any((n, i) not in seen for n in names)]
    if not waiting:
        return
    with engine.connect() as conn:
        rows = conn.execute(select(t.orders.c.license, t.orders.c.id, t.orders.c.total_price)
                            .where(t.orders.c.id.in_(waiting))).all()
    for lic, order_id, total in rows:
        if total == edited[order_id][1]:
            seen.setdefault((lic, order_id), now)


if __name__ == "__main__":
    main()
