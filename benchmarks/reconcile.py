"""Do the report views reconcile with the tickets? A 60-day history, checked to the cent.

`syncer backfill` (the real CLI, a subprocess) loads the simulator's history into SQLite
and into Postgres; the figures of the views are then compared with the same figures
computed here in Python, from the simulator's own records, with Decimal:

- report_daily_sales per business day and register: revenue = the tickets' total_price,
  paid = their payments, VAT and base = the sum of each ticket's per-rate VAT;
- report_vat per business day and rate: each ticket's lines at that rate rounded to the
  cent, base = round(gross / (1 + rate/100)), summed;
- report_register_day: the tickets line of each register's day.

It prints the largest absolute difference per view and database (must be 0.00), and, for
comparison, how far the rule of revision 0002 (VAT split per day/register/rate group)
drifts from the per-ticket VAT on the same data.

    python -m benchmarks.reconcile                         # 60 days (about 13,500 tickets)
    python -m benchmarks.reconcile --day-starts-at 04:00 --orders 6000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.scratch import scratch_url
from syncer import reports
from syncer.config import ReportsConfig
from syncer.db import make_engine
from syncer.simulator import Dataset, Simulator, generate

CENT = Decimal("0.01")
TOKEN = "reconcile-token-0000"


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, ROUND_HALF_UP)


def split(gross: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
    total = cents(gross)
    base = cents(total * 100 / (100 + rate))
    return base, total - base


def expected(ds: Dataset, start_minute: int) -> dict[str, dict[Any, Decimal]]:
    """Every compared figure, computed from the simulator's records."""
    out: dict[str, dict[Any, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    groups: dict[Any, Decimal] = defaultdict(Decimal)  # the 0002 rule: day, register, rate
    for o in ds.orders:
        if o.is_labour:
            continue
        day = reports.business_day(o.ordered_at, ds.zone, start_minute)
        key = (day, o.register_id)
        gross: dict[Decimal, Decimal] = defaultdict(Decimal)
        for line in o.lines:
            gross[line.tax_rate] += line.quantity * line.price
            for sub in line.subproducts:
                gross[sub.tax_rate] += line.quantity * sub.price
        out["revenue"][key] += cents(o.total_price)
        out["paid"][key] += cents(sum(o.payments.values(), Decimal(0)))
        out["tickets"][key] += 1
        for rate, amount in gross.items():
            base, vat = split(amount, rate)
            out["vat"][key] += vat
            out["base"][key] += base
            out["rate_total"][day, rate] += cents(amount)
            out["rate_vat"][day, rate] += vat
            out["rate_base"][day, rate] += base
            groups[day, o.register_id, rate] += amount
    for (day, register, rate), amount in groups.items():
        out["vat_0002"][day, register] += split(amount, rate)[1]
    return out


def compare(engine: sa.Engine, license: str, want: dict[str, dict[Any, Decimal]]) -> dict[str, Decimal]:
    """The largest absolute difference of each view's figures against `want`."""
    got: dict[str, dict[Any, Decimal]] = defaultdict(dict)
    for row in reports.fetch(engine, reports.get("report_daily_sales"), license=license):
        key = (row["day"], row["register_id"])
        got["revenue"][key] = row["revenue_incl_vat"]
        got["paid"][key] = row["paid"]
        got["vat"][key] = row["vat"]
        got["base"][key] = row["revenue_excl_vat"]
        got["tickets"][key] = Decimal(row["orders"])
    for row in reports.fetch(engine, reports.get("report_vat"), license=license):
        key = (row["day"], row["tax_rate"])
        got["rate_total"][key], got["rate_vat"][key], got["rate_base"][key] = (
            row["total"], row["vat"], row["base"])
    for row in reports.fetch(engine, reports.get("report_register_day"), license=license):
        if row["section"] == "tickets":
            got["z_amount"][row["day"], row["register_id"]] = row["amount"]
            got["z_count"][row["day"], row["register_id"]] = Decimal(row["count"])
    want = {**want, "z_amount": want["revenue"], "z_count": want["tickets"]}
    largest = {}
    for name in ("revenue", "paid", "tickets", "vat", "base", "rate_total", "rate_vat", "rate_base",
                 "z_amount", "z_count"):
        keys = set(got[name]) | set(want[name])
        largest[name] = max(abs(got[name].get(k, Decimal(0)) - want[name].get(k, Decimal(0)))
                            for k in keys)
    return largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=13500, help="about 225 a day: 60 days")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--day-starts-at", default="00:00")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    setting = ReportsConfig(day_starts_at=args.day_starts_at)
    sim = Simulator(generate(seed=args.seed, orders=args.orders), licenses={"demo": TOKEN})
    sim.start()
    want = expected(sim.dataset, setting.day_start_minute)
    days = len({key[0] for key in want["revenue"]})
    print(f"{int(sum(want['tickets'].values()))} tickets on {days} business days "
          f"(day starts at {setting.day_starts_at})")
    drift = max(abs(want["vat_0002"][k] - want["vat"][k]) for k in want["vat"])
    print(f"0002's rule (VAT split per day/register/rate group) against per-ticket VAT: "
          f"largest difference {drift} EUR on a register's day")
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    try:
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp, scratch_url(kind, Path(tmp), "reconcile") as url:
                Path(tmp, "syncer.toml").write_text(
                    f'[reports]\nday_starts_at = "{setting.day_starts_at}"\n')
                env = {**{k: v for k, v in os.environ.items()
                          if not k.startswith(("SYNCER_", "CLOUDPOS_"))},
                       "SYNCER_DATABASE_URL": url, "CLOUDPOS_BASE_URL": sim.base_url,
                       "CLOUDPOS_LICNAME": "demo", "CLOUDPOS_TOKEN": TOKEN}
                done = subprocess.run([sys.executable, "-m", "syncer", "backfill"], env=env,
                                      cwd=tmp, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"backfill failed ({done.returncode}): {done.stderr[-2000:]}")
                engine = make_engine(url)
                started = time.perf_counter()
                largest = compare(engine, "demo", want)
                seconds = time.perf_counter() - started
                engine.dispose()
                print(f"{kind}: largest difference, view against the tickets: "
                      + ", ".join(f"{name} {value}" for name, value in largest.items())
                      + f" (the three views read in {seconds:.1f} s, right after the load)")
                if any(largest.values()):
                    sys.exit(f"{kind}: the views do not reconcile")
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
