"""A fleet on one Postgres: a simulated day of N licenses across R replica processes.

What is real: R separate `syncer` replica processes (each a `Daemon` with every
license of the config, as replicas of one deployment are), one shared Postgres
schema (leases and due times in `sync_state`, the ledger), the bundled
simulator over real HTTP (in this, the coordinating process). What is shared and
faked: the clock. It is one number in shared memory that only the coordinator
moves, from one event to the next (the earliest due time any replica reports, or
the next order); at each step every replica runs what is due at that moment, all
at once, so they race for the same jobs exactly as real replicas do at one instant.
A step ends when every replica has finished its runs (real replicas would overlap
steps; here a slow run delays the fake clock, never the figures).

Asserted (the exit status is 1 when one fails):
- every license within `daily_budget - reserve` (the ledger's `request_budget`);
- no job run twice for one due time, across all replicas.
Reported, per license-day: the syncer's CPU (the replicas' calls, their HTTP client
included; the simulator's and this coordinator's CPU apart), split into the job runs
(`LicenseJobs.run`, races lost included: what `syncer run` replicas do when their
timers fire) and this harness's scans for what is due at each step (`Daemon._due`,
`next_due`: `syncer run` has APScheduler timers instead), the statements sent to
Postgres (counted on psycopg's cursors in each replica; an executemany counts one per
row), rows written and table growth (the schema's own `pg_stat_user_tables` and
relation sizes: the server is shared, so its WAL and database counters are not ours),
and the order delay against a single license with one replica, run first (the
same harness, `--licenses 1 --replicas 1`).

    python -m benchmarks.fleet --licenses 1000 --replicas 4 --history 300 --tick 15
    python -m benchmarks.fleet --licenses 20 --replicas 4 --history 500

`--tick 15` moves the clock in 15-second steps instead of from event to event: a
thousand licenses have ~600,000 distinct due times a day, each a round of messages
to every replica; in ticks they are 5,760 rounds. Jobs due within one tick run
together, up to 15 s late (the single-license baseline runs on the same ticks, so
the delay ratios compare like with like). Order delays are timed on the first
`--watch` licenses (20): every license gets the same orders, and looking up an order
id across all licenses' rows would cost the harness more than the fleet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from benchmarks.scratch import scratch_url
from benchmarks.simulated_day import TOKEN, TZ, SimulatorCpu, arrivals, percentile

# --- one replica (a child process) ---------------------------------------------------------


class SharedClock:
    """The fake clock: unix seconds in shared memory, read by every process."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.value.value, dt.UTC)


def _count_statements() -> Counter[str]:
    """Counts what each psycopg cursor sends (SQLAlchemy and the COPY loader alike)."""
    import psycopg

    counts: Counter[str] = Counter()
    execute, executemany, copy = psycopg.Cursor.execute, psycopg.Cursor.executemany, psycopg.Cursor.copy

    def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["statements"] += 1
        return execute(self, *args, **kwargs)

    def counted_executemany(self: Any, query: Any, params_seq: Any, **kwargs: Any) -> Any:
        params = list(params_seq)
        counts["statements"] += len(params)
        return executemany(self, query, params, **kwargs)

    def counted_copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["statements"] += 1
        return copy(self, *args, **kwargs)

    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign]
    psycopg.Cursor.copy = counted_copy  # type: ignore[method-assign]
    return counts


def replica(conn: Connection, clock_value: Any, url: str, base_url: str, names: list[str]) -> None:
    """Run what is due whenever told; answer with the runs, the next due time and CPU."""
    counts = _count_statements()
    from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
    from syncer.daemon import Daemon
    from syncer.db import make_engine

    clock = SharedClock(clock_value)
    engine = make_engine(url)
    config = Config(database=DatabaseConfig(url=url), api=ApiConfig(base_url=base_url),
                    licenses=tuple(LicenseConfig(name=n, token=SecretStr(TOKEN)) for n in names))
    daemon = Daemon(engine, config, clock=clock)
    # The due time a run is for: `next_run_at` as the claim that took the job's lease
    # returned it (None: never planned, due at once), not as this replica last listed it.
    import syncer.daemon
    import syncer.leases

    claim_on = syncer.leases.claim_on
    claimed: dict[str, Any] = {}

    def claiming(*args: Any) -> Any:
        taken = claim_on(*args)
        if taken.taken:
            claimed.setdefault("due", taken.state.next_run_at)
        return taken

    setattr(syncer.daemon, "claim_on", claiming)  # what the daemon calls  # noqa: B010
    runs_cpu = scan_cpu = 0.0  # the job runs; this harness's scans for what is due
    lost = 0  # runs that found the job's lease taken or the job already run
    while True:
        command = conn.recv()
        if command == "stop":
            conn.send({"cpu": runs_cpu + scan_cpu, "runs_cpu": runs_cpu, "scan_cpu": scan_cpu,
                       "lost": lost, "statements": counts["statements"]})
            break
        runs: list[tuple[str, str, float | None]] = []
        if command == "run":
            started = time.thread_time()
            # Daemon.run_due, timed apart, keeping each run's due time (as the run read
            # it) for the no-double-run check.
            due = daemon.due_now()
            scan_cpu += time.thread_time() - started
            for lic, job in due:
                claimed.clear()
                started = time.thread_time()
                ran = lic.run(job).ran
                runs_cpu += time.thread_time() - started
                if ran:
                    stored = claimed.get("due")  # None: its first run
                    runs.append((lic.name, job, stored and stored.timestamp()))
                else:
                    lost += 1
        started = time.thread_time()
        nxt = daemon.next_due()
        scan_cpu += time.thread_time() - started
        conn.send({"runs": runs, "next": nxt.timestamp() if nxt else None})
    for lic in daemon.licenses:
        lic.close()
    engine.dispose()


# --- the coordinator --------------------------------------------------------------------------


def schema_figures(engine: sa.Engine) -> dict[str, int]:
    """Rows written and bytes held by this schema's tables (Postgres's own counters)."""
    engine.dispose()  # backends flush their table counters when they end
    time.sleep(1.0)
    with engine.connect() as conn:
        written = conn.execute(sa.text(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema()")).scalar_one()
        size = conn.execute(sa.text(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r'")).scalar_one()
        orders = conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one()
    return {"written": int(written), "bytes": int(size), "orders": int(orders)}


def run_day(args: argparse.Namespace, licenses: int, replicas: int,
            simulator_cpu: SimulatorCpu) -> dict[str, Any]:
    from syncer import tables as t
    from syncer.backfill import Backfill
    from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
    from syncer.db import make_engine, migrate
    from syncer.resources import RESOURCES
    from syncer.runtime import Runtime
    from syncer.simulator import Simulator, generate

    rng = random.Random(args.seed)
    day = args.day
    start = dt.datetime.combine(day, dt.time(), tzinfo=TZ)
    end = start + dt.timedelta(days=1)
    ctx = mp.get_context("spawn")
    clock_value = ctx.Value("d", (start - dt.timedelta(hours=1)).timestamp(), lock=False)
    clock = SharedClock(clock_value)
    names = [f"shop{i:04d}" for i in range(licenses)]
    sim = Simulator(generate(seed=args.seed, orders=args.history, anchor=day - dt.timedelta(days=1)),
                    licenses=dict.fromkeys(names, TOKEN), clock=clock)
    base_url = sim.start()
    with tempfile.TemporaryDirectory() as tmp, scratch_url("postgresql", Path(tmp), "fleet") as url:
        engine = make_engine(url)
        migrate(engine)
        config = Config(database=DatabaseConfig(url=url), api=ApiConfig(base_url=base_url),
                        licenses=tuple(LicenseConfig(name=n, token=SecretStr(TOKEN)) for n in names))
        for lic in config.licenses:  # the history, the evening before (`syncer backfill`)
            with Runtime(engine, config, lic, purpose="backfill", clock=clock) as rt:
                Backfill(rt).run(RESOURCES)
        before = schema_figures(engine)

        pipes, procs = [], []
        for _ in range(replicas):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=replica, args=(theirs, clock_value, url, base_url, names))
            proc.start()
            pipes.append(ours)
            procs.append(proc)

        def step(command: str) -> list[dict[str, Any]]:
            for pipe in pipes:
                pipe.send(command)
            return [pipe.recv() for pipe in pipes]

        order_times = arrivals(day, args.orders_per_day, rng)
        watched = names[:args.watch]
        created: dict[int, dt.datetime] = {}
        arrived: dict[tuple[str, int], dt.datetime] = {}
        runs: Counter[tuple[str, str, float | None]] = Counter()
        clock_value.value = start.timestamp()
        wall0 = time.perf_counter()
        sim_cpu0 = simulator_cpu.seconds
        answers = step("next")
        oi = steps = 0
        while clock() < end:
            due = min((a["next"] for a in answers if a["next"] is not None), default=end.timestamp())
            nxt = min(due, order_times[oi].timestamp() if oi < len(order_times) else end.timestamp(),
                      end.timestamp())
            if args.tick:  # on the tick grid: what falls due within one tick runs together
                nxt = min(math.ceil(nxt / args.tick) * args.tick, end.timestamp())
            clock_value.value = max(nxt, clock_value.value)
            now = clock()
            while oi < len(order_times) and order_times[oi] <= now:
                for order_id in sim.add_orders(1, at=order_times[oi]):
                    created[order_id] = order_times[oi]
                oi += 1
            if now >= end:
                break
            answers = step("run" if due <= clock_value.value else "next")
            steps += 1
            for answer in answers:
                runs.update(tuple(r) for r in answer["runs"])
            _record_arrivals(engine, t.orders, created, arrived, now, watched)
        wall = time.perf_counter() - wall0
        totals = step("stop")
        for proc in procs:
            proc.join()
        sim.stop()
        served = simulator_cpu.settled() - sim_cpu0
        with engine.connect() as conn:
            spent = dict(conn.execute(sa.select(t.request_budget.c.license, t.request_budget.c.spent)
                                      .where(t.request_budget.c.day == day)).all())
        after = schema_figures(engine)
        engine.dispose()
    delays = [(arrived[(n, i)] - c).total_seconds() / 60 for n in watched
              for i, c in created.items() if (n, i) in arrived]
    return {
        "licenses": licenses, "replicas": replicas, "steps": steps, "wall": wall,
        "spent": spent, "budget": config.spendable(config.licenses[0]), "runs": runs,
        "doubled": {k: v for k, v in runs.items() if v > 1},
        "missing": len(created) * len(watched) - len(delays), "watched": len(watched),
        "median": statistics.median(delays) if delays else float("nan"),
        "p95": percentile(delays, 0.95),
        "cpu": sum(a["cpu"] for a in totals), "statements": sum(a["statements"] for a in totals),
        "runs_cpu": sum(a["runs_cpu"] for a in totals),
        "scan_cpu": sum(a["scan_cpu"] for a in totals), "lost": sum(a["lost"] for a in totals),
        "simulator_cpu": served,
        "written": after["written"] - before["written"], "bytes": after["bytes"] - before["bytes"],
        "orders_day": after["orders"] - before["orders"],
    }


def _record_arrivals(engine: sa.Engine, orders: sa.Table, created: dict[int, dt.datetime],
                     arrived: dict[tuple[str, int], dt.datetime], now: dt.datetime,
                     watched: list[str]) -> None:
    """When each order created so far arrived for each watched license (its primary
    key is (license, id): one index range per license, whatever the fleet's size)."""
    pending = [i for i in created if any((n, i) not in arrived for n in watched)]
    if not pending:
        return
    with engine.connect() as conn:
        for lic, order_id in conn.execute(sa.select(orders.c.license, orders.c.id)
                                          .where(orders.c.license.in_(watched),
                                                 orders.c.id.in_(pending))):
            arrived.setdefault((lic, order_id), now)


def report(result: dict[str, Any]) -> list[str]:
    n = result["licenses"]
    spent = result["spent"]
    return [
        f"{n} license(s) on {result['replicas']} replica(s): {result['steps']} clock steps, "
        f"{sum(result['runs'].values())} job runs, wall {result['wall']:.0f} s",
        f"  requests per license: min {min(spent.values())}, max {max(spent.values())} "
        f"(limit daily_budget - reserve = {result['budget']})",
        f"  job runs for one due time: max {max(result['runs'].values(), default=0)} "
        f"({len(result['doubled'])} doubled)",
        f"  order delay (min, {result['watched']} license(s) watched): median "
        f"{result['median']:.2f}, p95 {result['p95']:.2f}; not in the database at midnight: "
        f"{result['missing']}",
        f"  per license-day: syncer CPU {result['cpu'] / n:.2f} s (job runs "
        f"{result['runs_cpu'] / n:.2f} s, {result['lost'] / n:.0f} of them lost races; this "
        f"harness's due scans {result['scan_cpu'] / n:.2f} s), Postgres statements "
        f"{result['statements'] / n:,.0f}, rows written {result['written'] / n:,.0f}, tables grew "
        f"{result['bytes'] / n / 1e6:.2f} MB ({result['orders_day'] / n:.0f} orders); "
        f"simulator CPU {result['simulator_cpu']:.1f} s in all",
        f"  database per license-year at this pace: {result['bytes'] / n * 365 / 1e9:.2f} GB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--licenses", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2026, 11, 25))
    parser.add_argument("--orders-per-day", type=int, default=250)
    parser.add_argument("--history", type=int, default=2000, help="orders before the day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tick", type=float, default=0.0,
                        help="move the fake clock in steps of this many seconds (0: from "
                             "event to event); jobs due within one tick run together")
    parser.add_argument("--watch", type=int, default=20,
                        help="licenses whose order arrivals are timed (the first ones)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the single-license run the delays are compared with")
    args = parser.parse_args()

    failures: list[str] = []
    simulator_cpu = SimulatorCpu()
    single = None if args.no_baseline else run_day(args, 1, 1, simulator_cpu)
    if single is not None:
        for line in report(single):
            print(line, flush=True)
    fleet = run_day(args, args.licenses, args.replicas, simulator_cpu)
    for line in report(fleet):
        print(line, flush=True)
    if max(fleet["spent"].values()) > fleet["budget"]:
        failures.append("a license passed daily_budget - reserve")
    if len(fleet["spent"]) != args.licenses:
        failures.append(f"{args.licenses - len(fleet['spent'])} license(s) spent nothing")
    if fleet["doubled"]:
        shown = [(lic, job, due and dt.datetime.fromtimestamp(due, TZ).isoformat())
                 for lic, job, due in list(fleet["doubled"])[:5]]
        failures.append(f"{len(fleet['doubled'])} job(s) ran twice for one due time, e.g. {shown}")
    if single is not None:
        for figure in ("median", "p95"):
            ratio = fleet[figure] / single[figure]
            print(f"  order delay {figure}: fleet / single license {ratio:.2f} "
                  f"({'within' if abs(ratio - 1) <= 0.10 else 'OUTSIDE'} 10%)")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
