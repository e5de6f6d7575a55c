"""A hostile CloudPOS (tests/hostile.py) against the real CLI, on SQLite and Postgres."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from syncer import tables as t
from syncer.db import make_engine
from syncer.simulator import Simulator
from tests.helpers import cli_env
from tests.hostile import hostile, with_extra_id


def backfill(db_url: str, base_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`syncer backfill` in a subprocess, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "syncer", "backfill"], check=False,
                          env=cli_env(db_url, base_url), cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def stored_order_ids(db_url: str) -> list[int]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(select(t.orders.c.id)).scalars())
    finally:
        engine.dispose()


def quarantined_reasons(db_url: str, resource: str) -> dict[str, str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(t.quarantine.c.record_key, t.quarantine.c.reason)
                                .where(t.quarantine.c.resource == resource))
            return {str(key): reason for key, reason in rows}
    finally:
        engine.dispose()


@pytest.mark.parametrize("stray", [1_000_500, 10**12, 2**63 - 1])
def test_an_id_outside_the_window_neither_moves_the_cursor_nor_loads(
        db_url: str, sim: Simulator, tmp_path: Path, stray: int) -> None:
    reference = f"sqlite:///{tmp_path}/reference.db"
    clean = backfill(reference, sim.base_url, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    expected = stored_order_ids(reference)
    assert len(expected) > 100

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        if function == "get-orders" and params.get("start") == "1":
            return with_extra_id(body, stray)
        return None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "Traceback" not in out
    assert stored_order_ids(db_url) == expected  # every order, the stray one not among them
    starts = [int(p["start"]) for f, p in server.seen if f == "get-orders" and "start" in p]
    assert starts and stray + 1 not in starts  # the stray id never became a cursor
    reasons = quarantined_reasons(db_url, "orders")
    assert "outside the window" in reasons[str(stray)]


def test_a_base_url_with_a_fragment_is_refused_before_any_request(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    with hostile(sim.base_url, lambda *_: None) as server:
        run = backfill(db_url, server.base_url + "#shop", tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "api.base_url (from $CLOUDPOS_BASE_URL)" in run.stderr
    assert "a fragment drops the query" in run.stderr
    assert server.seen == []  # no request spent, no credentials stop stored
