"""Load benchmark: the API's bytes to committed rows, ours beside the ceiling, in one run.

Pages are rendered by the bundled simulator exactly as the API sends them (lines
with subproduct slots, 9 payment fields, string numbers, decimal commas), one JSON
body per window of `--window` orders, and kept as bytes. Timed, per window as the
client receives it: decoding the bytes (the client's `decode_json`), parsing
(`syncer.sync.parse_records`: every rule, quarantine, `extra`, content hash) and
loading (`syncer.load.load`, one transaction per window, as the backfill does), all
through `syncer.sync.apply_answer`.
Each scenario runs in its own process, so its peak RSS is its own.

Scenarios (each on a fresh schema / file):
- ours (`syncer.sync.apply_answer`, what a pull runs after its request): the first
  load into empty tables, a re-scan of the same windows (unchanged: every record
  parsed and compared, 0 rows written, counted by Postgres itself), and the re-scan
  again (each answer equal to the last one loaded for its parameters: not parsed);
- the ceiling: the same bytes decoded by the same decoder, turned into minimal typed
  rows (int(), Decimal(text with "." for ","), datetime.fromisoformat in the zone;
  no checks, no DST rule, no extra, no hash) and written with plain COPY on Postgres
  or plain executemany INSERTs on SQLite and MariaDB (PyMySQL sends those as multi-row
  INSERTs), one transaction for everything;
- optionally (`--naive-orders N`) a naive per-row ORM `session.merge()` loader on the
  first N orders (~100x slower).

    python -m benchmarks.load                         # 200,000 and 50,000 orders, Postgres and SQLite
    python -m benchmarks.load --orders 50000 --db postgresql mariadb sqlite   # the three databases
    python -m benchmarks.load --orders 50000 --repeat 3 --db postgresql   # the noise
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
from syncer import tables
from syncer.client import decode_json
from syncer.db import dumps, make_engine, migrate
from syncer.load import Counts
from syncer.parse import ParseContext, Rows
from syncer.resources import ORDERS
from syncer.sync import apply_answer, parse_records

LICENSE = "bench"
TZ = ZoneInfo("Europe/Brussels")
CTX = ParseContext(tz=TZ, secnr_key=b"benchmark", store_national_number=False)
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


def pages(path: Path) -> Iterator[bytes]:
    """The API's answers as bytes, one window at a time (the last is let go before the next)."""
    with path.open("rb") as src:
        yield from src


def parsed_pages(path: Path, limit_orders: int | None = None) -> Iterator[list[Rows]]:
    """Decoded and parsed windows (for the naive loader, which is not timed on parsing)."""
    left = limit_orders
    for content in pages(path):
        records = decode_json(content)["data"]
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


# --- the ceiling's minimal typed rows ------------------------------------------------------

_SLOTS = [(f"subproduct{n}id", f"subproduct{n}price", f"subproduct{n}tax", n) for n in range(1, 11)]
_PAYMENTS = [(m, f"{m}payment") for m in tables.PAYMENT_METHODS]


def _num(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return value if type(value) is Decimal else Decimal(str(value).replace(",", "."))


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _local(value: str | None) -> dt.datetime | None:
    if not value or value.startswith("0000"):
        return None
    return dt.datetime.fromisoformat(value).replace(tzinfo=TZ)


def minimal_rows(records: list[dict[str, Any]], stamp: dt.datetime) -> dict[str, list[tuple[Any, ...]]]:
    """The order tables' rows with the least conversion that gives typed columns."""
    orders, lines, slots, payments = [], [], [], []
    for r in records:
        oid = int(r["id"])
        get = r.get
        at = _local(r.get("ordertime"))
        orders.append((LICENSE, oid, _int(get("customerid")) or None, _int(get("kassaid")),
                       _int(get("user")), _num(get("totalprice")), at, _local(get("clockin")),
                       _local(get("clockout")),
                       "-", None, at and at.date(), at and at.hour, at and at.isoweekday(), stamp))
        for no, line in enumerate(r.get("orderdetail") or (), 1):
            lines.append((LICENSE, oid, no, _num(line.get("quantity")), _int(line.get("productid")),
                          _num(line.get("productprice")), _num(line.get("producttax")), None, stamp))
            for id_key, price_key, tax_key, slot in _SLOTS:
                sid = line.get(id_key)
                if sid and sid != "0":
                    slots.append((LICENSE, oid, no, slot, int(sid), _num(line.get(price_key)),
                                  _num(line.get(tax_key)), stamp))
        for method, key in _PAYMENTS:
            amount = _num(get(key))
            if amount:
                payments.append((LICENSE, oid, method, amount, stamp))
    return {"orders": orders, "order_lines": lines, "order_line_subproducts": slots,
            "order_payments": payments}


CEILING_COLUMNS = {
    "orders": ["license", "id", "customer_id", "register_id", "user_id", "total_price", "ordered_at",
               "clock_in", "clock_out", "content_hash", "extra", "business_date", "local_hour",
               "local_weekday", "synced_at"],
    "order_lines": ["license", "order_id", "line_no", "quantity", "product_id", "price", "tax_rate",
                    "extra", "synced_at"],
    "order_line_subproducts": ["license", "order_id", "line_no", "slot", "subproduct_id", "price",
                               "tax_rate", "synced_at"],
    "order_payments": ["license", "order_id", "method", "amount", "synced_at"],
}


# --- databases -----------------------------------------------------------------------------


class Database:
    """A scratch database (see benchmarks.scratch), migrated.

    The server runs on this machine: the CPU of the connection serving us is read from
    /proc (a Postgres backend process, a MariaDB connection thread), so the figures hold
    while other work shares the machine (wall time does not)."""

    # The OS id of the process or thread serving this connection.
    BACKEND_ID = {"postgresql": "SELECT pg_backend_pid()",
                  "mariadb": "SELECT tid FROM information_schema.processlist WHERE id = connection_id()"}

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self.server_cpu = 0.0  # CPU seconds of the server's backends while checked out
        if kind in self.BACKEND_ID:
            sa.event.listen(self.engine, "checkout", self._checkout)
            sa.event.listen(self.engine, "checkin", self._checkin)
        if kind == "mariadb":  # per-table row counts (information_schema.table_statistics)
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SET GLOBAL userstat = 1")

    @staticmethod
    def _backend_cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if "backend" not in record.info:
            cur = dbapi_conn.cursor()
            cur.execute(self.BACKEND_ID[self.kind])
            record.info["backend"] = cur.fetchone()[0]
            cur.close()
        try:
            record.info["cpu_at"] = self._backend_cpu(record.info["backend"])
        except OSError:  # a server on another machine: no server CPU
            record.info["cpu_at"] = None

    def _checkin(self, dbapi_conn: Any, record: Any) -> None:
        started = record.info.pop("cpu_at", None)
        if started is not None:
            self.server_cpu += self._backend_cpu(record.info["backend"]) - started

    @property
    def counts_writes(self) -> bool:
        """Whether the server counts the rows written (else the loader's own counts stand)."""
        return self.kind in ("postgresql", "mariadb")

    def writes(self) -> int:
        """The server's own count of rows inserted, updated and deleted in the order tables."""
        names = [tbl.name for tbl in ORDER_TABLES]
        if self.kind == "mariadb":
            with self.engine.connect() as conn:
                return int(conn.execute(sa.text(
                    "SELECT coalesce(sum(rows_changed), 0) FROM information_schema.table_statistics "
                    "WHERE table_schema = database() AND table_name IN :names"
                ).bindparams(sa.bindparam("names", expanding=True)), {"names": names}).scalar_one())
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


LABELS = {"first": "ours, first load", "rescan": "ours, re-scan", "again": "ours, re-scan again"}

# Ours, three times over the same bytes and windows: the first load into empty tables
# (a backfill: no marks are kept past the cursor); a re-scan of the same windows (no
# mark yet: every record parsed and compared row by row, 0 rows written); and that
# re-scan again (each answer equals the one loaded for its parameters, `answer_marks`:
# decoded and not parsed).
PASSES = ("first", "rescan", "again")


def run_ours(db: Database, path: Path) -> dict[str, Any]:
    """The loads through `sync.apply_answer` (what a pull does after its request), a
    transaction per window."""
    out: dict[str, Any] = {}
    window_rows: list[int] = []  # rows each window makes, counted in the first pass
    for label in PASSES:
        before = db.writes() if db.counts_writes else 0
        counts, rows = Counts(), 0
        spent = {"decode": 0.0, "parse": 0.0, "database": 0.0}
        cpu0, server0 = time.process_time(), db.server_cpu
        for number, content in enumerate(pages(path)):
            started = time.perf_counter()
            records = decode_json(content)["data"]
            decoded = time.perf_counter()
            params = {"start": number * len(records) + 1, "end": (number + 1) * len(records)}
            with db.engine.begin() as conn:
                applied = apply_answer(conn, LICENSE, ORDERS, records, content, params, CTX, _now(),
                                       full_list=False, remember=label != "first")
            done = time.perf_counter()
            assert not applied.parsed.rejected, applied.parsed.rejected[:1]
            counts += applied.counts
            spent["decode"] += decoded - started
            spent["parse"] += applied.parse_seconds
            spent["database"] += done - decoded - applied.parse_seconds
            if label == "first":
                window_rows.append(row_count(applied.parsed.rows))
            rows += window_rows[number]
            del records, applied
        out[label] = {"rows": rows, "seconds": sum(spent.values()), **spent,
                      "cpu": time.process_time() - cpu0, "server_cpu": db.server_cpu - server0,
                      "counts": counts.__dict__,
                      "written": (db.writes() - before) if db.counts_writes else counts.written}
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_ceiling(db: Database, path: Path) -> dict[str, Any]:
    """Decode, minimal typed rows, plain COPY (Postgres) or executemany INSERT (SQLite),
    into the same empty tables, in one transaction."""
    from syncer.dialects.postgres import copy_rows

    rows = 0
    spent = {"decode": 0.0, "parse": 0.0, "database": 0.0}
    cpu0 = time.process_time()
    stamp = _now()
    by_name = {tbl.name: tbl for tbl in ORDER_TABLES}
    with db.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        cur = driver.cursor() if db.kind == "postgresql" else None
        for content in pages(path):
            started = time.perf_counter()
            records = decode_json(content)["data"]
            decoded = time.perf_counter()
            typed = minimal_rows(records, stamp)
            converted = time.perf_counter()
            for name, tuples in typed.items():
                columns = CEILING_COLUMNS[name]
                if cur is not None:
                    copy_rows(cur, name, columns, tuples)
                else:
                    conn.execute(sa.insert(by_name[name]), [dict(zip(columns, t, strict=True))
                                                            for t in tuples])
                rows += len(tuples)
            done = time.perf_counter()
            spent["decode"] += decoded - started
            spent["parse"] += converted - decoded
            spent["database"] += done - converted
            del records, typed
        started = time.perf_counter()
        if cur is not None:
            cur.close()
        conn.commit()
        spent["database"] += time.perf_counter() - started
    return {"first": {"rows": rows, "seconds": sum(spent.values()), **spent,
                      "cpu": time.process_time() - cpu0, "server_cpu": db.server_cpu}}


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
    for window in parsed_pages(path, limit):
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
            elif args.worker == "ceiling":
                result = run_ceiling(db, Path(args.pages))
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


def cpu(part: dict[str, Any]) -> float:
    """CPU seconds of the loader's process plus its server backends."""
    return float(part["cpu"]) + float(part["server_cpu"])


def rate(part: dict[str, Any]) -> float:
    return float(part["rows"]) / float(part["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, nargs="+", default=[200_000, 50_000])
    parser.add_argument("--db", nargs="+", default=["postgresql", "sqlite"],
                        choices=["postgresql", "mariadb", "sqlite"])
    parser.add_argument("--window", type=int, default=5000,
                        help="orders per page (the backfill's max_window)")
    parser.add_argument("--naive-orders", type=int, default=0,
                        help="also run the naive ORM loader on this many orders")
    parser.add_argument("--repeat", type=int, default=1,
                        help="repeat ours and the ceiling: min/median/max of the CPU ratios")
    parser.add_argument("--worker", choices=["ours", "ceiling", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--pages", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.db = args.db[0]
        worker(args)
        return

    def say(text: str) -> None:
        print(text, flush=True)

    say(f"load benchmark: the API's bytes to committed rows, {args.window} orders per page, "
        f"{os.cpu_count()} CPUs; times in s, ratio = time / the ceiling's")
    say(f"{'database':<10} {'orders':>7} {'run':<22} {'rows':>9} {'wall':>6} {'decode':>6} "
        f"{'parse':>6} {'db':>6} {'ratio':>6} {'CPU':>6} {'ratio':>6} {'RSS MB':>6} {'written':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for orders in args.orders:
            path = Path(tmp) / f"orders-{orders}.jsonl"
            generated = write_pages(orders, args.window, path)
            gc.collect()
            say(f"(simulator generated {orders} orders in {generated:.1f} s; "
                f"{path.stat().st_size / 1e6:.0f} MB of API JSON)")
            for db in args.db:
                ratios: dict[str, list[float]] = {label: [] for label in PASSES}
                for _ in range(args.repeat):
                    # Interleaved, so both see the same machine.
                    ceiling = spawn("ceiling", db, path, args.naive_orders)
                    ours = spawn("ours", db, path, args.naive_orders)
                    c = ceiling["first"]
                    line = (f"{db:<10} {orders:>7} {{:<22}} {{rows:>9}} {{seconds:>6.1f}} "
                            "{decode:>6.1f} {parse:>6.1f} {database:>6.1f} {ratio:>5.2f}x {total_cpu:>6.1f} "
                            "{cpu_ratio:>5.2f}x {rss:>6.0f} {written:>9}")
                    say(line.format("ceiling (COPY)" if db == "postgresql" else "ceiling (executemany)",
                                    **c, ratio=1.0, total_cpu=cpu(c), cpu_ratio=1.0,
                                    rss=ceiling["peak_rss_mb"], written=""))
                    for label in PASSES:
                        p = ours[label]
                        say(line.format(LABELS[label], **{
                            **p, "ratio": p["seconds"] / c["seconds"], "total_cpu": cpu(p),
                            "cpu_ratio": cpu(p) / cpu(c), "rss": ours["peak_rss_mb"]}))
                        ratios[label].append(cpu(p) / cpu(c))
                if args.naive_orders:
                    n = spawn("naive", db, path, args.naive_orders)["first"]
                    say(f"{db:<10} {orders:>7} {'naive merge (first ' + str(args.naive_orders) + ')':<22} "
                        f"{n['rows']:>9} {n['seconds']:>6.1f}  rows/s {rate(n):.0f} (ours first: "
                        f"{rate(ours['first']):.0f})")
                if args.repeat > 1:
                    for label, values in ratios.items():
                        say(f"  -> {db} {orders}, {args.repeat} runs, ours {label} / ceiling (CPU): "
                            f"min {min(values):.2f}x median {statistics.median(values):.2f}x "
                            f"max {max(values):.2f}x")


if __name__ == "__main__":
    main()
