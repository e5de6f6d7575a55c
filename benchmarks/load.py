"""Load benchmark: parsed `get-orders` pages to committed rows, ours beside the baselines, in one run.

Pages are rendered by the bundled simulator exactly as the API sends them (lines
with subproduct slots, 9 payment fields, string numbers), read with
`json.loads(parse_float=Decimal)` and parsed by `syncer.parse`, a window at a time.
Timed is what the database step costs: from the parsed `Rows` of a window to its
committed rows (one transaction per window, as the backfill does). Each scenario
runs in its own process, so its peak RSS is its own.

Scenarios (each on a fresh schema / file):
- ours, first load into empty tables, then a second load of the same pages;
- plain COPY of the same rows into the same empty tables, one transaction (the ceiling);
- a naive per-row ORM `session.merge()` loader (what a quick build does), on the
  first `--naive-orders` orders only (it is ~100x slower; on small tables it is at
  its fastest, so the ratio against it is conservative).

    python -m benchmarks.load                         # 200,000 and 50,000 orders, Postgres and SQLite
    python -m benchmarks.load --orders 50000 --repeat 3 --db postgresql
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from benchmarks.scratch import scratch_url
from syncer.db import dumps, make_engine, migrate
from syncer.load import Counts, load
from syncer.parse import ParseContext, Rows
from syncer.resources import ORDERS
from syncer.sync import parse_records

LICENSE = "bench"
CTX = ParseContext(tz=ZoneInfo("Europe/Brussels"), secnr_key=b"benchmark", store_national_number=False)
ORDER_TABLES = [ORDERS.table, *ORDERS.children]


# --- data ------------------------------------------------------------------------------


def write_pages(orders: int, window: int, path: Path) -> float:
    """Render the simulator's orders as API pages (one JSON body per line); returns generation time."""
    from syncer.simulator import generate
    from syncer.simulator.data import RENDERERS

    started = time.perf_counter()
    ds = generate(seed=1, orders=orders)
    generated = time.perf_counter() - started
    render = RENDERERS["orders"]
    records = list(ds.orders)
    with path.open("wb") as out:
        for i in range(0, len(records), window):
            body = {"success": 1, "data": [render(o) for o in records[i : i + window]]}
            out.write(json.dumps(body, separators=(",", ":")).encode() + b"\n")
    return generated


def pages(path: Path, limit_orders: int | None = None) -> Iterator[list[Rows]]:
    """Parsed windows, one at a time (the page is released before the next is read)."""
    left = limit_orders
    with path.open("rb") as src:
        for line in src:
            records = json.loads(line, parse_float=Decimal)["data"]
            if left is not None:
                records = records[:left]
                left -= len(records)
            parsed = parse_records(ORDERS, records, CTX)
            assert not parsed.rejected, parsed.rejected[:1]
            yield parsed.rows
            if left is not None and left <= 0:
                return


def row_count(rows: list[Rows]) -> int:
    return len(rows) + sum(len(v) for r in rows for v in r.children.values())


# --- databases -----------------------------------------------------------------------------


class Database:
    """A scratch database (see benchmarks.scratch), migrated."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)

    def writes(self) -> int:
        """Postgres's own count of rows inserted, updated and deleted in the order tables."""
        names = [tbl.name for tbl in ORDER_TABLES]
        previous = None
        # Backends flush their counters when idle or exiting: close the pool, read until stable.
        self.engine.dispose()
        for _ in range(50):
            time.sleep(0.2)
            with self.engine.connect() as conn:
                current = conn.execute(sa.text(
                    "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
                    "WHERE schemaname = current_schema() AND relname = ANY(:names)"), {"names": names}
                ).scalar_one()
            self.engine.dispose()
            if current == previous:
                return int(current)
            previous = current
        raise RuntimeError("pg_stat_user_tables did not settle")

    def close(self) -> None:
        self.engine.dispose()


# --- loaders -------------------------------------------------------------------------------


def run_ours(db: Database, path: Path) -> dict[str, Any]:
    """First load into empty tables, then the same pages again; a transaction per window."""
    out: dict[str, Any] = {}
    for label in ("first", "second"):
        before = db.writes() if db.kind == "postgresql" else 0
        counts, rows, spent, parse = Counts(), 0, 0.0, 0.0
        started = time.perf_counter()
        for window in pages(path):
            parsed_at = time.perf_counter()
            stamp = _now()
            with db.engine.begin() as conn:
                counts += load(conn, ORDERS.table, ORDERS.children, LICENSE, window, stamp,
                               full_list=False)
            done = time.perf_counter()
            spent += done - parsed_at
            rows += row_count(window)
            parse += parsed_at - started
            started = done
        out[label] = {"rows": rows, "seconds": spent, "parse_seconds": parse,
                      "counts": counts.__dict__,
                      "written": (db.writes() - before) if db.kind == "postgresql" else counts.written}
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_copy(db: Database, path: Path) -> dict[str, Any]:
    """Plain COPY of the same rows into the same empty tables, in one transaction."""
    assert db.kind == "postgresql"
    from syncer.load import _copy_rows, _tuples

    rows, spent = 0, 0.0
    stamp = _now()
    with db.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cur:
            for window in pages(path):
                started = time.perf_counter()
                for table in ORDER_TABLES:
                    data = [c.name for c in table.columns if c.name not in ("license", "synced_at")]
                    dicts = ([r.parent for r in window] if table is ORDERS.table
                             else [row for r in window for row in r.children.get(table.name, ())])
                    _copy_rows(cur, table.name, ["license", *data, "synced_at"],
                               _tuples(dicts, table, data, LICENSE, stamp))
                spent += time.perf_counter() - started
                rows += row_count(window)
        started = time.perf_counter()
        conn.commit()
        spent += time.perf_counter() - started
    return {"first": {"rows": rows, "seconds": spent}}


def run_naive(db: Database, path: Path, limit: int) -> dict[str, Any]:
    """What a quick build does: an ORM class per table and `session.merge()` for every row."""
    from sqlalchemy.orm import Session, registry

    mapper = registry()
    classes = {}
    for table in ORDER_TABLES:
        cls = type(table.name.title().replace("_", ""), (), {})
        mapper.map_imperatively(cls, table)
        classes[table.name] = cls
    rows, spent = 0, 0.0
    stamp = _now()
    for window in pages(path, limit):
        started = time.perf_counter()
        with Session(db.engine) as session:
            for r in window:
                session.merge(classes["orders"](**r.parent, license=LICENSE, synced_at=stamp))
                for name, children in r.children.items():
                    for row in children:
                        session.merge(classes[name](**row, license=LICENSE, synced_at=stamp))
            session.commit()
        spent += time.perf_counter() - started
        rows += row_count(window)
    return {"first": {"rows": rows, "seconds": spent}}


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp, scratch_url(args.db, Path(tmp)) as url:
        db = Database(args.db, url)
        try:
            if args.worker == "ours":
                result = run_ours(db, Path(args.pages))
            elif args.worker == "copy":
                result = run_copy(db, Path(args.pages))
            else:
                result = run_naive(db, Path(args.pages), args.naive_orders)
        finally:
            db.close()
    result["peak_rss_mb"] = peak_rss_mb()
    print(dumps(result))


# --- the run -----------------------------------------------------------------------------


def spawn(kind: str, db: str, path: Path, naive_orders: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.load", "--worker", kind, "--db", db, "--pages", str(path),
           "--naive-orders", str(naive_orders)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def rate(part: dict[str, Any]) -> float:
    return float(part["rows"]) / float(part["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, nargs="+", default=[200_000, 50_000])
    parser.add_argument("--db", nargs="+", default=["postgresql", "sqlite"],
                        choices=["postgresql", "sqlite"])
    parser.add_argument("--window", type=int, default=5000,
                        help="orders per page (the backfill's max_window)")
    parser.add_argument("--naive-orders", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=1, help="repeat ours and COPY for min/median/max")
    parser.add_argument("--worker", choices=["ours", "copy", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--pages", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.db = args.db[0]
        worker(args)
        return

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"load benchmark: window {args.window} orders/page, naive loader on the first "
        f"{args.naive_orders} orders, {os.cpu_count()} CPUs")
    say(f"{'database':<10} {'orders':>7} {'loader':<14} {'rows':>9} {'s':>7} {'rows/s':>9} "
        f"{'parse s':>7} {'RSS MB':>6} {'2nd written':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for orders in args.orders:
            path = Path(tmp) / f"orders-{orders}.jsonl"
            generated = write_pages(orders, args.window, path)
            gc.collect()
            say(f"(simulator generated {orders} orders in {generated:.1f} s; "
                f"{path.stat().st_size / 1e6:.0f} MB of API JSON)")
            for db in args.db:
                ours_runs, copy_runs = [], []
                for _ in range(args.repeat):
                    ours_runs.append(spawn("ours", db, path, args.naive_orders))
                    if db == "postgresql":
                        copy_runs.append(spawn("copy", db, path, args.naive_orders))
                naive = spawn("naive", db, path, args.naive_orders)
                ours = ours_runs[0]
                for label in ("first", "second"):
                    p = ours[label]
                    say(f"{db:<10} {orders:>7} {'ours ' + label:<14} {p['rows']:>9} {p['seconds']:>7.1f} "
                        f"{rate(p):>9.0f} {p['parse_seconds']:>7.1f} {ours['peak_rss_mb']:>6.0f} "
                        f"{p['written'] if label == 'second' else '':>11}")
                if copy_runs:
                    c = copy_runs[0]["first"]
                    say(f"{db:<10} {orders:>7} {'plain COPY':<14} {c['rows']:>9} {c['seconds']:>7.1f} "
                        f"{rate(c):>9.0f} {'':>7} {copy_runs[0]['peak_rss_mb']:>6.0f}")
                n = naive["first"]
                say(f"{db:<10} {orders:>7} {'naive merge':<14} {n['rows']:>9} {n['seconds']:>7.1f} "
                    f"{rate(n):>9.0f} {'':>7} {naive['peak_rss_mb']:>6.0f}")
                first = rate(ours["first"])
                speedup = ours["first"]["seconds"] / ours["second"]["seconds"]
                ratios = [f"ours/naive {first / rate(n):.1f}x",
                          f"second load {speedup:.1f}x faster than the first"]
                if copy_runs:
                    ratios.insert(0, f"ours/COPY {first / rate(copy_runs[0]['first']):.0%}")
                say(f"  -> {db} {orders}: " + ", ".join(ratios))
                if args.repeat > 1 and copy_runs:
                    share = sorted(rate(o["first"]) / rate(c["first"]) for o, c in zip(ours_runs, copy_runs,
                                                                                       strict=True))
                    say(f"  -> {args.repeat} runs, ours/COPY min {share[0]:.0%} median "
                        f"{statistics.median(share):.0%} max {share[-1]:.0%}")
                if args.repeat > 1:
                    rates = sorted(rate(o["first"]) for o in ours_runs)
                    say(f"  -> {args.repeat} runs, ours first-load rows/s min {rates[0]:.0f} median "
                        f"{statistics.median(rates):.0f} max {rates[-1]:.0f}")


if __name__ == "__main__":
    main()
