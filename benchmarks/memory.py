"""Peak memory of the client for answers that are too large: a 200 MB answer, a 1 GB
streamed one and a gzip bomb (1 MB that inflates to 1 GB).

The hostile fake CloudPOS (tests/hostile.py) serves each answer on loopback; each case
runs `CloudPosClient.fetch` in a fresh process, whose peak RSS (ru_maxrss) is the
figure. Before `[api] max_answer_mib` the client read every answer whole (and parsed
it); with it, reading stops at the cap (default 64 MiB) and the answer is refused.

    .venv/bin/python -m benchmarks.memory            # the figures, with the code as it is
    cd /path/to/older/checkout && /path/to/.venv/bin/python -m benchmarks.memory   # before
                                 # (not PYTHONPATH: -m puts the working directory first)

Results: docs/performance.md#memory.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import subprocess
import sys
import time
from typing import Any

from syncer.client import CloudPosClient, OpenDoor
from syncer.simulator import Simulator, generate
from tests.hostile import Answer, gzip_bomb, hostile

MB = 1_000_000
RECORD = json.dumps({"id": 1, "date": "2026-11-28 12:00:00", "total": "12.50",
                     "lines": [{"product": "Koffie", "qty": 1, "price": "2.50"}] * 4}).encode()


def answer(case: str) -> Answer:
    if case == "gzip bomb 1 GB":
        return Answer(gzip_bomb(1 << 30), encoding="gzip")
    size = {"answer 60 MB": 60 * MB, "answer 200 MB": 200 * MB}.get(case, 1000 * MB)
    # The 1 GB one says no Content-Length: only reading it tells its size.
    return Answer(RECORD + b",", repeat=size // (len(RECORD) + 1), head=b'{"data": [',
                  tail=RECORD + b"]}", length=case != "answer 1 GB streamed")


# The first is under the cap (read and parsed whole, as before): what an accepted answer
# may cost.
CASES = ("answer 60 MB", "answer 200 MB", "answer 1 GB streamed", "gzip bomb 1 GB")


def fetch(base_url: str, limit_mib: int) -> None:
    """One case, in this (fresh) process under an address-space limit of `limit_mib`
    (a shared machine must not be run out of memory): print what came of it and the
    peak RSS. Past the limit the process ends in MemoryError, as a daemon under a
    memory limit would."""
    limit = limit_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    kwargs: dict[str, Any] = {}
    if "max_answer_bytes" in inspect.signature(CloudPosClient).parameters:
        kwargs["max_answer_bytes"] = 64 * 1024 * 1024  # the default of [api] max_answer_mib
    client = CloudPosClient(base_url, "demo", "bench-token", door=OpenDoor(), timeout=300,
                            max_attempts=1, **kwargs)
    started = time.perf_counter()
    try:
        page = client.fetch("get-orders", {"start": 1, "end": 500})
        outcome = f"{len(page.records):,} records"
    except MemoryError:
        outcome = f"MemoryError at the {limit_mib:,} MiB limit"
    except Exception as exc:  # the figure is the memory either way
        outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
    finally:
        client.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_mb": round(peak), "seconds": round(time.perf_counter() - started, 1),
                      "outcome": outcome}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", metavar="BASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--limit-mib", type=int, default=4096,
                        help="address-space limit of each case's process (default 4096)")
    args = parser.parse_args()
    if args.fetch:
        fetch(args.fetch, args.limit_mib)
        return
    limit = ["--limit-mib", str(args.limit_mib)]
    sim = Simulator(generate(seed=1, orders=50), licenses={"demo": "bench-token"})
    sim.start()
    try:
        baseline = json.loads(subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--fetch", sim.base_url, *limit],
            check=True, capture_output=True, text=True).stdout)
        print(f"| a small answer (the process's own size) | {baseline['peak_mb']} MB | "
              f"{baseline['outcome']} |")
        for case in CASES:
            served = answer(case)
            def rewrite(function: str, params: dict[str, str], body: bytes,
                        served: Answer = served) -> Answer:
                return served

            with hostile(sim.base_url, rewrite) as server:
                run = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--fetch",
                                      server.base_url, *limit], check=False, capture_output=True,
                                     text=True)
            if run.returncode != 0:
                print(f"| {case} | died (exit {run.returncode}) | {run.stderr.strip()[-200:]} |")
                continue
            got = json.loads(run.stdout)
            print(f"| {case} ({served.size / MB:,.0f} MB on the wire) | {got['peak_mb']} MB | "
                  f"{got['outcome']} ({got['seconds']} s) |")
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
