"""How long does `syncer export` take, and how much memory: a busy month's pack and a year's.

`syncer backfill` (the real CLI, a subprocess) loads the simulator's history (200 to 300
orders a day, 250 on average, ending on 30 November 2026) into SQLite and into Postgres; then
`syncer export` (a subprocess too) writes the pack of November (`--period 2026-11`) and
of the year to its end (`--from 2025-12-01 --to 2026-11-30`, twelve whole months). Measured per export: wall
time, the exporting process's peak RSS, the workbook's size, and the tickets in it.

    python -m benchmarks.export                       # a month (7,750 orders) and a year (91,250)
    python -m benchmarks.export --db postgresql --skip-year
    python -m benchmarks.export --db sqlite --skip-year --keep pack.xlsx   # the month's pack

docs/export-summary.png is the first sheet of the kept pack, drawn by LibreOffice:
`soffice --headless --convert-to png pack.xlsx`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.scratch import scratch_url
from syncer import reports
from syncer.db import make_engine
from syncer.simulator import Simulator, generate

TOKEN = "export-token-0000"
LAST_DAY = dt.date(2026, 11, 30)
PERIODS = {"month": ("--period", "2026-11"), "year": ("--from", "2025-12-01", "--to", "2026-11-30")}
SPANS = {"month": (dt.date(2026, 11, 1), LAST_DAY), "year": (dt.date(2025, 12, 1), LAST_DAY)}


def run(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, int]:
    """Run `python -m syncer ARGS`; its wall seconds and peak RSS (MB), or exit on failure."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "syncer", *args], env=env, cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4: the resources of this child alone (not of the backfill before it).
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    _, err = child.communicate()
    if child.returncode != 0:
        sys.exit(f"syncer {' '.join(args)} failed ({child.returncode}): {err.decode()[-2000:]}")
    return seconds, usage.ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--skip-year", action="store_true", help="only the month")
    parser.add_argument("--keep", type=Path, default=None, help="keep the month's pack here")
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    sizes = {"month": 7_750} if args.skip_year else {"month": 7_750, "year": 91_250}
    for label, orders in sizes.items():
        data = generate(seed=7, orders=orders, anchor=LAST_DAY, day_orders=(200, 300))
        sim = Simulator(data, licenses={"demo": TOKEN})
        sim.start()
        try:
            for kind in kinds:
                with tempfile.TemporaryDirectory() as tmp, \
                        scratch_url(kind, Path(tmp), "export") as url:
                    env = {**{k: v for k, v in os.environ.items()
                              if not k.startswith(("SYNCER_", "CLOUDPOS_"))},
                           "SYNCER_DATABASE_URL": url, "CLOUDPOS_BASE_URL": sim.base_url,
                           "CLOUDPOS_LICNAME": "demo", "CLOUDPOS_TOKEN": TOKEN}
                    run(["backfill"], env, tmp)
                    since, until = SPANS[label]
                    engine = make_engine(url)
                    tickets = len(reports.fetch(engine, reports.get("tickets"), since=since,
                                                until=until))
                    engine.dispose()
                    days = (until - since).days + 1
                    out = Path(tmp, "pack.xlsx")
                    seconds, rss = run(["export", *PERIODS[label], "--out", str(out)], env, tmp)
                    print(f"{kind}: {label} pack, {tickets:,} tickets ({tickets / days:.0f} a day): "
                          f"{seconds:.1f} s, peak RSS {rss} MB, "
                          f"{out.stat().st_size / 1e6:.1f} MB workbook")
                    if args.keep is not None and label == "month":
                        shutil.copyfile(out, args.keep)
        finally:
            sim.stop()


if __name__ == "__main__":
    main()
