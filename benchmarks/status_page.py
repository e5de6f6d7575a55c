"""Status page benchmark: the response time of `/` (and `/metrics`) for many licenses.

A database is filled as a day of `syncer run` leaves it for `--licenses` shops: 16 jobs
of sync state each, today's budget, `--requests` ledger rows a day for `--days` days
(today's spread over the hours so far), `--orders` orders each, a few quarantined
records, one license stopped for its credentials and one paused. Then the real server
(`syncer.ops.serve`, over a `Daemon` that is not started, so nothing else runs) answers
GETs over loopback HTTP, timed end to end:

- `/` cold: the planner's per-minute plans dropped before each request (the first
  render in a minute);
- `/` warm: the plans kept (a reload, or a scrape, in the same minute);
- `/metrics`, warm (it also counts the whole ledger).

Figures are medians (and the 95th percentile) of `--repeat` requests, from one run; the
machine is shared, so compare the ratios within a run.

    python -m benchmarks.status_page                    # 200 licenses, SQLite
    python -m benchmarks.status_page --db postgresql --licenses 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr

from benchmarks.scratch import scratch_url
from syncer import status as read_model
from syncer import tables as t
from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
from syncer.daemon import Daemon
from syncer.db import make_engine, migrate
from syncer.ledger import api_day, utcnow
from syncer.ops import serve
from syncer.status import _job_names

FUNCTIONS = ("get-orders", "get-tables", "get-customercredits", "get-invoices", "get-products")


def fill(engine: sa.Engine, licenses: list[str], *, requests: int, days: int, orders: int,
         now: dt.datetime, tz_config: Config) -> None:
    tz = tz_config.api.tz
    today = api_day(now, tz)
    start_of_day = dt.datetime.combine(today, dt.time(), tzinfo=tz)
    so_far = max((now - start_of_day).total_seconds(), 60.0)
    with engine.begin() as conn:
        for n, name in enumerate(licenses):
            conn.execute(sa.insert(t.sync_state), [{
                "license": name, "resource": job, "cursor": orders if job == "orders" else None,
                "window": 500, "last_success_at": now - dt.timedelta(minutes=(n + i) % 40),
                "last_attempt_at": now - dt.timedelta(minutes=(n + i) % 40),
                "last_error": "API error 2000: not found" if (n + i) % 97 == 0 else None,
                "last_error_at": now if (n + i) % 97 == 0 else None,
                "next_run_at": now + dt.timedelta(minutes=(n + i) % 30)}
                for i, job in enumerate(_job_names())])
            # Each license has spent its own number today: their plans differ.
            spent_today = requests // 2 + n % 97
            conn.execute(sa.insert(t.request_budget), [
                {"license": name, "day": today - dt.timedelta(days=d),
                 "spent": requests if d else spent_today} for d in range(days)])
            ledger = []
            for d in range(days):
                count = requests if d else spent_today
                for i in range(count):
                    sent = (now - dt.timedelta(seconds=so_far * i / count) if d == 0
                            else start_of_day - dt.timedelta(days=d - 1, seconds=86400 * i / count))
                    ledger.append({"license": name, "day": api_day(sent, tz), "sent_at": sent,
                                   "function": FUNCTIONS[i % len(FUNCTIONS)], "purpose": "run",
                                   "attempt": 1 if i % 50 else 2,
                                   "outcome": "ok" if i % 50 else "failed", "http_status": 200})
            conn.execute(sa.insert(t.request_ledger), ledger)
            conn.execute(sa.insert(t.orders), [{
                "license": name, "id": i, "total_price": Decimal("12.50"), "ordered_at": now,
                "content_hash": "0" * 32, "synced_at": now} for i in range(1, orders + 1)])
            if n % 20 == 0:
                conn.execute(sa.insert(t.quarantine), [{
                    "license": name, "resource": "orders", "record_key": str(k), "raw": "{}",
                    "raw_hash": f"{n}-{k}", "reason": "bench", "first_seen_at": now,
                    "last_seen_at": now, "seen_count": 1} for k in range(3)])
        if len(licenses) < 3:
            return  # one license: a healthy one
        refused = next(lic for lic in tz_config.licenses if lic.name == licenses[0])
        blank = {"auth_rejected_fingerprint": None, "auth_rejected_at": None,
                 "auth_rejected_reason": None, "blocked_until": None, "blocked_reason": None}
        conn.execute(sa.insert(t.license_state), [
            {**blank, "license": licenses[0],
             "auth_rejected_fingerprint": refused.fingerprint(tz_config.api.base_url),
             "auth_rejected_at": now, "auth_rejected_reason": "API error 1002: name or token not valid",
             "updated_at": now},
            {**blank, "license": licenses[1], "blocked_until": now + dt.timedelta(hours=1),
             "blocked_reason": "daily request limit reached (API error 1003)", "updated_at": now}])


def timed(url: str, repeat: int, *, cold: bool) -> list[float]:
    out = []
    for _ in range(repeat):
        if cold:
            read_model._plans.clear()
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as resp:
            body = resp.read()
            assert resp.status == 200 and body
        out.append((time.perf_counter() - started) * 1000)
    return out


def describe(label: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{label:<14} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ms)})"


def measure(kind: str, licenses: int, args: argparse.Namespace) -> dict[str, list[float] | int]:
    names = [f"shop{n:03d}" for n in range(licenses)]
    now = utcnow()
    with tempfile.TemporaryDirectory() as tmp, scratch_url(kind, Path(tmp), "status") as url:
        config = Config(database=DatabaseConfig(url=url), api=ApiConfig(),
                        licenses=tuple(LicenseConfig(name=n, token=SecretStr(f"token-{n}"))
                                       for n in names))
        engine = make_engine(url)
        migrate(engine)
        started = time.perf_counter()
        fill(engine, names, requests=args.requests, days=args.days, orders=args.orders, now=now,
             tz_config=config)
        print(f"{kind}: {licenses} license(s), {licenses * args.requests * args.days:,} "
              f"ledger rows, {licenses * args.orders:,} orders (filled in "
              f"{time.perf_counter() - started:.1f} s)")
        daemon = Daemon(engine, config)
        server = serve(daemon, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            timed(f"{base}/", 2, cold=False)  # connections, caches
            cold = timed(f"{base}/", args.repeat, cold=True)
            warm = timed(f"{base}/", args.repeat, cold=False)
            timed(f"{base}/metrics", 1, cold=False)  # the first scrape counts the whole ledger
            scrape = timed(f"{base}/metrics", max(args.repeat // 4, 3), cold=False)
            with urllib.request.urlopen(f"{base}/", timeout=60) as resp:
                size = len(resp.read())
        finally:
            server.shutdown()
            engine.dispose()
    print(describe("/ cold", cold))
    print(describe("/ warm", warm))
    print(describe("/metrics warm", scrape))
    print(f"page size {size / 1024:.0f} KiB")
    return {"cold": cold, "warm": warm, "metrics": scrape, "size": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--licenses", type=int, default=200)
    parser.add_argument("--requests", type=int, default=450, help="ledger rows per license and day")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--orders", type=int, default=1000, help="orders per license")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    one = measure(args.db, 1, args)
    many = measure(args.db, args.licenses, args)

    def median(result: dict[str, list[float] | int], key: str) -> float:
        value = result[key]
        assert isinstance(value, list)
        return statistics.median(value)

    print(f"{args.licenses} licenses against 1, same run: page warm "
          f"{median(many, 'warm') / median(one, 'warm'):.1f}x, cold "
          f"{median(many, 'cold') / median(one, 'cold'):.1f}x, /metrics "
          f"{median(many, 'metrics') / median(one, 'metrics'):.1f}x; {args.licenses} licenses, warm "
          f"page against the 200 ms target: {median(many, 'warm') / 200:.2f}x; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
