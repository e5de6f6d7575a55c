"""End-to-end backfill benchmark: `syncer backfill` against `syncer simulate`, both as real processes.

The simulator serves N orders over HTTP in its own process; `syncer backfill` runs
as a subprocess into a fresh Postgres schema (or SQLite file), then runs again on
the unchanged source. Reported per run: wall time, requests used (against
ceil(orders / max_window) + the 10 full lists + 1 empty window), peak RSS of the
syncer process (its own rusage from wait4), where its time went (the backfill's
closing log line: HTTP + JSON decode, parsing to rows, database), and the CPU
the simulator spent generating and serving (so it is not what is measured).

    python -m benchmarks.end_to_end                          # 200,000 and 50,000 orders, Postgres
    python -m benchmarks.end_to_end --orders 200000 --db postgresql sqlite
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.scratch import scratch_url

MAX_WINDOW = 5000  # the default [resources.X] max_window
FULL_LISTS = 10
TIMINGS = re.compile(r"time in HTTP \+ JSON ([\d.]+) s, parsing to rows ([\d.]+) s, database ([\d.]+) s")
REQUESTS = re.compile(r"([\d,]+) requests? in ([\d.]+) s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_simulator(orders: int) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncer", "simulate", "--port", str(port), "--orders", str(orders),
         "--daily-limit", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise RuntimeError("the simulator exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/api/", time.perf_counter() - started


def run_backfill(db_url: str, base_url: str, cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    env.update({"SYNCER_DATABASE_URL": db_url, "CLOUDPOS_BASE_URL": base_url,
                "CLOUDPOS_LICNAME": "demo", "CLOUDPOS_TOKEN": "demo-token", "COLUMNS": "200"})
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "syncer", "backfill"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"backfill exited {proc.returncode}:\n{out[-2000:]}\n{err[-2000:]}")
    timings = TIMINGS.search(err)
    requests = REQUESTS.search(out)
    assert timings and requests, (out[-1000:], err[-1000:])
    http_json, parse, database = map(float, timings.groups())
    return {"wall": wall, "requests": int(requests.group(1).replace(",", "")), "http_json": http_json,
            "parse": parse, "database": database}


def backfill_in_child(db_url: str, base_url: str, cwd: Path) -> dict[str, Any]:
    """One backfill in a fresh intermediate process, so RUSAGE_CHILDREN's peak is this backfill's alone."""
    code = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "from benchmarks.end_to_end import run_backfill\n"
        "r = run_backfill(sys.argv[1], sys.argv[2], Path(sys.argv[3]))\n"
        "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps(r))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, db_url, base_url, str(cwd)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    import json

    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, nargs="+", default=[200_000, 50_000])
    parser.add_argument("--db", nargs="+", default=["postgresql"], choices=["postgresql", "sqlite"])
    args = parser.parse_args()
    print(f"end-to-end backfill, {os.cpu_count()} CPUs; requests ideal = ceil(orders/{MAX_WINDOW}) "
          f"+ {FULL_LISTS} full lists + 1 empty window per id resource (+ invoices and coupons)")
    print(f"{'db':<10} {'orders':>7} {'run':<7} {'wall s':>6} {'requests':>8} {'RSS MB':>6} "
          f"{'http+json':>9} {'parse':>6} {'database':>8} {'db share':>8} {'sim CPU s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for orders in args.orders:
            sim, base_url, ready = start_simulator(orders)
            try:
                print(f"(simulator: {orders} orders generated and listening in {ready:.1f} s, "
                      f"{cpu_seconds(sim.pid):.1f} s CPU)")
                for kind in args.db:
                    with scratch_url(kind, Path(tmp), "e2e") as url:
                        for run in ("first", "second"):
                            cpu = cpu_seconds(sim.pid)
                            r = backfill_in_child(url, base_url, Path(tmp))
                            served = cpu_seconds(sim.pid) - cpu
                            print(f"{kind:<10} {orders:>7} {run:<7} {r['wall']:>6.1f} {r['requests']:>8} "
                                  f"{r['peak_rss_mb']:>6.0f} {r['http_json']:>9.1f} {r['parse']:>6.1f} "
                                  f"{r['database']:>8.1f} {r['database'] / r['wall']:>8.0%} "
                                  f"{served:>9.1f}", flush=True)
                print(f"  -> ideal requests for the order history alone: ceil({orders}/{MAX_WINDOW}) = "
                      f"{math.ceil(orders / MAX_WINDOW)}")
            finally:
                sim.terminate()
                sim.wait()


if __name__ == "__main__":
    main()
