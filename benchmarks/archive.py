"""The response archive, measured: codecs, bytes per 100,000 orders, rebuild against backfill
time, and the requests of repeated small-cap backfills.

    python -m benchmarks.archive codecs                        # zlib vs zstd on real answers
    python -m benchmarks.archive history --orders 100000 --db sqlite postgresql
    python -m benchmarks.archive history --orders 200000 --db postgresql   # rebuild vs backfill
    python -m benchmarks.archive smallcaps --orders 2000 --cap 3

`history`: the simulator in this process serves N orders over HTTP; a backfill (the
real Backfill, archive on) loads them into a fresh database; then the license's
tables are emptied and `rebuild` re-derives them from the archive (no request; the
simulator's counter is checked). Reported: backfill and rebuild wall time, archive
answers, bodies, raw and stored bytes, and bytes per 100,000 orders.
The archive's bytes per license-day of `syncer run`: `python -m benchmarks.simulated_day`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import zstandard
from pydantic import SecretStr
from sqlalchemy import delete, func, select

from benchmarks.scratch import scratch_url
from syncer import archive
from syncer.backfill import Backfill
from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
from syncer.db import make_engine, migrate
from syncer.rebuild import rebuild
from syncer.resources import RESOURCES
from syncer.runtime import Runtime
from syncer.simulator import Simulator, generate

TOKEN = "benchmark-token-0000"
LICENSE = "shop"


def codecs() -> None:
    sim = Simulator(generate(seed=1, orders=5000), licenses={LICENSE: TOKEN})
    url = sim.start()
    try:
        bodies = {fn: httpx.get(f"{url}?licname={LICENSE}&token={TOKEN}&{fn}{extra}").content
                  for fn, extra in [("get-orders", "&start=1&end=5000"), ("get-customers", ""),
                                    ("get-products", ""), ("get-tables", "")]}
    finally:
        sim.stop()
    candidates: list[tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]] = [
        ("zlib 6", lambda b: zlib.compress(b, 6), zlib.decompress),
        ("zlib 9", lambda b: zlib.compress(b, 9), zlib.decompress),
        ("zstd 3", zstandard.ZstdCompressor(level=3).compress, zstandard.ZstdDecompressor().decompress),
        ("zstd 9", zstandard.ZstdCompressor(level=9).compress, zstandard.ZstdDecompressor().decompress),
        ("zstd 19", zstandard.ZstdCompressor(level=19).compress,
         zstandard.ZstdDecompressor().decompress),
    ]
    for fn, body in bodies.items():
        print(f"{fn}: {len(body):,} bytes")
        for name, pack, unpack in candidates:
            t0 = time.perf_counter()
            packed = pack(body)
            t1 = time.perf_counter()
            unpack(packed)
            t2 = time.perf_counter()
            print(f"  {name:8s} {len(packed):>10,} bytes ({len(body) / len(packed):5.1f}x)  "
                  f"compress {1000 * (t1 - t0):7.1f} ms  decompress {1000 * (t2 - t1):6.1f} ms")


def _config(url: str, base_url: str) -> Config:
    return Config(database=DatabaseConfig(url=url), api=ApiConfig(base_url=base_url, timeout_seconds=300),
                  licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),))


def _rows(engine: object) -> int:
    total = 0
    with engine.connect() as conn:  # type: ignore[attr-defined]
        for r in RESOURCES:
            for table in r.tables:
                total += conn.execute(select(func.count()).select_from(table)).scalar_one()
    return total


def history(orders: int, kinds: list[str]) -> None:
    sim = Simulator(generate(seed=1, orders=orders), licenses={LICENSE: TOKEN}, daily_limit=10**6)
    base_url = sim.start()
    try:
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp, scratch_url(kind, Path(tmp), "archive") as url:
                engine = make_engine(url)
                migrate(engine)
                config = _config(url, base_url)
                lic = config.licenses[0]
                t0 = time.perf_counter()
                with Runtime(engine, config, lic, purpose="backfill") as rt:
                    _, code = Backfill(rt).run(RESOURCES)
                backfill_s = time.perf_counter() - t0
                assert code == 0
                rows = _rows(engine)
                sizes = archive.sizes(engine)
                with engine.begin() as conn:
                    for r in RESOURCES:
                        for table in (*r.children, r.table):
                            conn.execute(delete(table).where(table.c.license == LICENSE))
                requests = sim.stats()["requests"]
                t0 = time.perf_counter()
                result = rebuild(engine, config, lic, RESOURCES)
                rebuild_s = time.perf_counter() - t0
                assert sim.stats()["requests"] == requests, "the rebuild sent a request"
                assert _rows(engine) == rows, "the rebuild did not restore every row"
                per = sizes["stored_bytes"] * 100_000 / orders
                print(f"{kind}: {orders:,} orders, {rows:,} rows; backfill {backfill_s:.1f} s "
                      f"({rt.ledger.sent} requests), rebuild {rebuild_s:.1f} s from "
                      f"{result.answers} answers (0 requests) = {rebuild_s / backfill_s:.2f}x the "
                      f"backfill; archive {sizes['answers']} answers, {sizes['bodies']} bodies, "
                      f"{sizes['raw_bytes']:,} bytes raw, {sizes['stored_bytes']:,} stored "
                      f"({sizes['raw_bytes'] / max(sizes['stored_bytes'], 1):.1f}x); "
                      f"{per / 1e6:.2f} MB per 100,000 orders")
                engine.dispose()
    finally:
        sim.stop()


def smallcaps(orders: int, cap: int) -> None:
    sim = Simulator(generate(seed=1, orders=orders), licenses={LICENSE: TOKEN}, daily_limit=10**6)
    base_url = sim.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            counts = []
            for name, limit in (("uncapped", None), ("capped", cap)):
                url = f"sqlite:///{tmp}/{name}.db"
                engine = make_engine(url)
                migrate(engine)
                config = _config(url, base_url)
                lic = config.licenses[0]
                runs = spent = 0
                while True:
                    runs += 1
                    with Runtime(engine, config, lic, purpose="backfill", max_requests=limit) as rt:
                        _, code = Backfill(rt).run(RESOURCES)
                    spent += rt.ledger.sent
                    if code == 0:
                        break
                    assert code == 3 and runs < 10_000
                counts.append((name, runs, spent, _rows(engine)))
                engine.dispose()
    finally:
        sim.stop()
    (_, _, uncapped, rows), (_, runs, capped, capped_rows) = counts
    print(f"{orders:,} orders: one uncapped backfill {uncapped} requests; --max-requests {cap} "
          f"repeated: {runs} runs, {capped} requests (bound: {uncapped} + {runs} = "
          f"{uncapped + runs}); rows equal: {rows == capped_rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["codecs", "history", "smallcaps"])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--db", nargs="+", default=["sqlite"], choices=["sqlite", "postgresql"])
    parser.add_argument("--cap", type=int, default=3)
    args = parser.parse_args()
    if args.what == "codecs":
        codecs()
    elif args.what == "history":
        history(args.orders, args.db)
    else:
        smallcaps(args.orders, args.cap)


if __name__ == "__main__":
    main()
