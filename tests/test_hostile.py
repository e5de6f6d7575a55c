"""A hostile CloudPOS (tests/hostile.py) against the real CLI, on SQLite and Postgres."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from syncer import tables as t
from syncer.db import make_engine
from syncer.simulator import Simulator
from tests.helpers import cli_env
from tests.hostile import Answer, gzip_bomb, hostile, with_extra_id


def backfill(db_url: str, base_url: str, cwd: Path, *,
             api: str = "") -> subprocess.CompletedProcess[str]:
    """`syncer backfill` in a subprocess, as an operator runs it; `api`: lines of the
    config file's [api] table."""
    extra = {}
    if api:
        config = cwd / "syncer.toml"
        config.write_text(f"[api]\n{api}\n")
        extra["SYNCER_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "syncer", "backfill"], check=False,
                          env=cli_env(db_url, base_url, **extra), cwd=cwd, capture_output=True,
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


def clean_orders(sim: Simulator, tmp_path: Path) -> list[int]:
    """The order ids a backfill stores from the well-behaved simulator."""
    reference = f"sqlite:///{tmp_path}/reference.db"
    clean = backfill(reference, sim.base_url, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    return stored_order_ids(reference)


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_dripping_answer_is_cut_at_the_timeout_and_asked_again(
        db_url: str, sim: Simulator, tmp_path: Path, where: str) -> None:
    """`timeout_seconds` bounds the whole request: an answer dripping a byte every 0.2 s
    (each read well within the timeout) is cut at 2 s, and the window is asked again."""
    expected = clean_orders(sim, tmp_path)
    dripped: list[float] = []

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | Answer | None:
        if function == "get-orders" and params.get("start") == "1" and not dripped:
            dripped.append(time.monotonic())
            return Answer(body, drip=0.2) if where == "body" else Answer(body, drip_head=0.2)
        return None

    with hostile(sim.base_url, rewrite) as server:
        started = time.monotonic()
        run = backfill(db_url, server.base_url, tmp_path, api="timeout_seconds = 2")
        took = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert dripped  # the drip was served (and would have taken hours to finish)
    assert stored_order_ids(db_url) == expected
    assert took < 40, out  # one cut attempt of 2 s, then the clean run
    starts = [p.get("start") for f, p in server.seen if f == "get-orders"]
    assert starts.count("1") == 2  # the cut window was asked once more


def test_an_answer_past_the_cap_halves_the_window_and_loses_nothing(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    """A window's answer of 3 MiB with `max_answer_mib = 1`: reading stops at the cap,
    the window is asked again with half the ids, and every order is stored."""
    expected = clean_orders(sim, tmp_path)
    padded: list[str] = []

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | Answer | None:
        if function == "get-orders" and not padded:
            padded.append(params["end"])
            return Answer(b" " * (1 << 20), repeat=3)  # never read past the first MiB
        return None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path, api="max_answer_mib = 1")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "answered too much" in out
    assert stored_order_ids(db_url) == expected
    ends = [(int(p["start"]), int(p["end"])) for f, p in server.seen if f == "get-orders"]
    first, second = ends[0], ends[1]
    assert first[0] == second[0] == 1
    assert second[1] - second[0] + 1 == (first[1] - first[0] + 1) // 2


def test_a_gzip_bomb_is_refused_unread_and_reported(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    """A full list answered with 64 KiB that inflate to 64 MiB, `max_answer_mib = 1`:
    refused as too large every time, reported, and the products already stored stay."""
    bomb = gzip_bomb(64 << 20)
    assert len(bomb) < 100_000

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | Answer | None:
        return Answer(bomb, encoding="gzip") if function == "get-products" else None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path, api="max_answer_mib = 1")
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    assert "answer too large" in out and "max_answer_mib = 1" in out
    assert [f for f, _ in server.seen].count("get-products") == 3  # max_attempts, then reported


def live_products(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return len(conn.execute(select(t.products.c.id).where(
                t.products.c.deleted_at.is_(None))).all())
    finally:
        engine.dispose()


def audit(db_url: str, base_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncer", "audit"], check=False,
                          env=cli_env(db_url, base_url), cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("answer", [b'{"data": null}', b'{"data": ""}', b'{"data": {}}',
                                    b'{"data": [{"id": 1}], "data": []}'],
                         ids=["null", "empty-text", "empty-object", "repeated-key"])
def test_a_full_list_that_is_not_a_list_of_records_deletes_nothing(
        db_url: str, sim: Simulator, tmp_path: Path, answer: bytes) -> None:
    with hostile(sim.base_url, lambda *_: None) as server:
        first = backfill(db_url, server.base_url, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    live = live_products(db_url)
    assert live > 10

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return answer if function == "get-products" else None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    assert ("not a list of records" in out
            or "gives the key(s) 'data' more than once" in out), out
    assert [f for f, _ in server.seen].count("get-products") == 3  # retried, then reported
    assert live_products(db_url) == live


def test_an_empty_full_list_over_many_live_rows_is_kept_and_reported(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    with hostile(sim.base_url, lambda *_: None) as server:
        first = backfill(db_url, server.base_url, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    live = live_products(db_url)
    assert live > 10  # more than the default empty_list_max_deletes

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return b'{"data": []}' if function == "get-products" else None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path)
        out = run.stdout + run.stderr
        assert run.returncode == 1, out
        assert f"the API lists none while {live} products are live" in out
        assert "empty_list_max_deletes" in out
        assert [f for f, _ in server.seen].count("get-products") == 1  # a clean answer: not retried
        assert live_products(db_url) == live
        audited = audit(db_url, server.base_url, tmp_path)
    assert audited.returncode == 4, audited.stdout + audited.stderr
    assert "problem: products: the latest answer was refused, the rows kept" in audited.stdout
    # A list the shop did empty: with the threshold raised, the rows are marked deleted.
    with hostile(sim.base_url, rewrite) as server:
        config = tmp_path / "syncer.toml"
        config.write_text(f"[resources.products]\nempty_list_max_deletes = {live}\n")
        run = subprocess.run([sys.executable, "-m", "syncer", "backfill"], check=False,
                             env=cli_env(db_url, server.base_url, SYNCER_CONFIG=str(config)),
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert live_products(db_url) == 0
