"""The reliability figures: run the slow reliability suite and sum what its tests counted.

    python -m benchmarks.reliability [--write] [--workers N]

Two pytest runs: `tests/reliability --slow -n N` (everything but the Postgres restart),
then the Postgres server restart test alone (SYNCER_TEST_PG_RESTART=1), since it
restarts the shared server. Each test writes its counters to a JSON file in a
temporary directory (tests/reliability/conftest.py, `figures`); this sums them per
row of the suite and prints a Markdown table. `--write` puts the table in
docs/reliability.md between the reliability markers. Exit 1 if a test failed or a row was
lost or doubled.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (("inputs", "inputs tried"), ("faults", "faults injected"),
           ("crashes", "crashes survived"), ("sim_requests", "requests (simulator)"),
           ("ledger_requests", "requests (ledger)"), ("rows_lost", "rows lost"),
           ("rows_doubled", "rows doubled"))
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
RESTART_TEST = ("tests/reliability/test_database_faults.py::"
                "test_the_daemon_recovers_by_itself_from_a_postgres_restart")


def run_pytest(args: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    summary = next((line for line in reversed(proc.stdout.splitlines()) if " in " in line), "")
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
    return proc.returncode, time.monotonic() - started, summary.strip("= ")


def collect(directory: Path) -> tuple[dict[str, Counter[str]], Counter[str]]:
    rows: dict[str, Counter[str]] = {}
    tests: Counter[str] = Counter()
    for file in sorted(directory.glob("*.json")):
        data = json.loads(file.read_text())
        for row, counts in data["rows"].items():
            rows.setdefault(row, Counter()).update(counts)
            tests[row] += 1
    return rows, tests


def table(rows: dict[str, Counter[str]], tests: Counter[str]) -> str:
    head = "| row | tests | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    total: Counter[str] = Counter()
    for row in sorted(rows):
        total.update(rows[row])
        cells = [str(rows[row].get(key, 0)) for key, _ in COLUMNS]
        lines.append(f"| {row} | {tests[row]} | " + " | ".join(cells) + " |")
    cells = [f"**{total.get(key, 0)}**" for key, _ in COLUMNS]
    lines.append(f"| **total** | **{sum(tests.values())}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the table in docs/reliability.md")
    parser.add_argument("--workers", default="2", help="pytest-xdist workers for the first run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        env = {**os.environ, "SYNCER_RELIABILITY_FIGURES": tmp}
        env.pop("SYNCER_TEST_PG_RESTART", None)
        code1, took1, sum1 = run_pytest(["--slow", "-n", args.workers, "tests/reliability"], env)
        code2, took2, sum2 = run_pytest(["--slow", RESTART_TEST],
                                        {**env, "SYNCER_TEST_PG_RESTART": "1"})
        rows, tests = collect(Path(tmp))
    text = table(rows, tests)
    lost = sum(r.get("rows_lost", 0) + r.get("rows_doubled", 0) for r in rows.values())
    note = (f"Last run {dt.date.today().isoformat()}: slow suite ({sum1}) in {took1:.0f} s with "
            f"`-n {args.workers}`; Postgres restart ({sum2}) in {took2:.0f} s.")
    print(text)
    print()
    print(note)
    if args.write:
        page = ROOT / "docs" / "reliability.md"
        content = page.read_text()
        start, end = content.index(BEGIN) + len(BEGIN), content.index(END)
        page.write_text(content[:start] + "\n" + text + "\n\n" + note + "\n" + content[end:])
    return 1 if code1 or code2 or lost else 0


if __name__ == "__main__":
    sys.exit(main())
