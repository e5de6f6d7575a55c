"""The backfill through the real CLI, over real HTTP to the simulator, on SQLite and Postgres."""

from __future__ import annotations

import copy
import datetime as dt
import json
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from syncer import tables as t
from syncer.db import make_engine, migrate
from syncer.simulator import Simulator
from syncer.simulator.data import generate, render_coupon
from syncer.sync import TARGET_BYTES, adapt_window
from tests.conftest import ANCHOR, LICENSE, TOKEN
from tests.expected import expected_rows, stored_rows
from tests.helpers import (
    cli_env,
    dump,
    kill_slow_backfill,
    ledger_count,
    pg_writes,
    run_cli,
    signal_after,
    spawn_cli,
    synced_at_by_table,
)

FULL_LISTS = 10
WINDOWED = 3


def backfill(db_url: str, sim: Simulator, tmp_path: Path, *args: str) -> int:
    result = run_cli(["backfill", *args], cli_env(db_url, sim.base_url), cwd=tmp_path)
    return result.exit_code


def reference_dump(sim: Simulator, tmp_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """A clean, uninterrupted backfill of the same source into a fresh SQLite file."""
    url = f"sqlite:///{tmp_path}/reference.db"
    before = sim.stats()["requests"]
    assert backfill(url, sim, tmp_path) == 0
    assert sim.stats()["requests"] > before
    engine = make_engine(url)
    try:
        return dump(engine)
    finally:
        engine.dispose()


def test_second_backfill_writes_nothing(db_url: str, sim: Simulator, tmp_path: Path) -> None:
    assert backfill(db_url, sim, tmp_path) == 0
    engine = make_engine(db_url)
    first = synced_at_by_table(engine)
    assert sum(len(v) for v in first.values()) > 1000
    pg_before = pg_writes(engine) if engine.dialect.name == "postgresql" else None
    if pg_before is not None:  # the counters include the first backfill's inserts
        assert sum(ins for ins, _, _ in pg_before.values()) == sum(len(v) for v in first.values())
    sim.reset_stats()

    assert backfill(db_url, sim, tmp_path) == 0

    assert sim.stats()["requests"] <= FULL_LISTS + WINDOWED
    assert synced_at_by_table(engine) == first
    if pg_before is not None:
        assert pg_writes(engine) == pg_before
    engine.dispose()


def test_touched_products_are_updated_and_deleted_ones_marked(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert backfill(db_url, sim, tmp_path) == 0
    engine = make_engine(db_url)
    with engine.connect() as conn:
        ids = conn.execute(select(t.products.c.id).order_by(t.products.c.id)).scalars().all()
    touched, deleted = ids[10:13], ids[20:22]
    before = synced_at_by_table(engine)["products"]
    time.sleep(1.1)  # modtime has one-second resolution
    sim.touch("products", list(touched))
    sim.delete("products", list(deleted))

    result = run_cli(["backfill", "--resource", "products"], cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert result.exit_code == 0, result.output

    with engine.connect() as conn:
        rows = conn.execute(select(t.products.c.id, t.products.c.synced_at, t.products.c.deleted_at)
                            .order_by(t.products.c.id)).all()
    old = dict(zip(ids, before, strict=False))  # synced_at of the first run is the same for all
    first_synced = max(before)
    rewritten = {r.id for r in rows if r.synced_at > first_synced}
    assert rewritten == set(touched) | set(deleted)
    assert {r.id for r in rows if r.deleted_at is not None} == set(deleted)
    assert len(old) == len(rows)
    engine.dispose()


def test_deleted_row_comes_back(db_url: str, sim: Simulator, tmp_path: Path) -> None:
    assert backfill(db_url, sim, tmp_path, "--resource", "printers") == 0
    engine = make_engine(db_url)
    with engine.connect() as conn:
        printer = conn.execute(select(t.printers.c.id).limit(1)).scalar_one()
    gone = sim.dataset.printers[printer]
    sim.delete("printers", [printer])
    assert backfill(db_url, sim, tmp_path, "--resource", "printers") == 0
    with engine.connect() as conn:
        assert conn.execute(select(t.printers.c.deleted_at).where(t.printers.c.id == printer)
                            ).scalar_one() is not None
    sim.dataset.printers[printer] = gone
    assert backfill(db_url, sim, tmp_path, "--resource", "printers") == 0
    with engine.connect() as conn:
        assert conn.execute(select(t.printers.c.deleted_at).where(t.printers.c.id == printer)
                            ).scalar_one() is None
    engine.dispose()


def test_max_requests_stops_with_exit_3_and_rerun_completes(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    reference = reference_dump(sim, tmp_path)
    sim.reset_stats()
    result = run_cli(["backfill", "--max-requests", "5"], cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert result.exit_code == 3, result.output
    assert sim.stats()["requests"] <= 5
    assert "run again to continue" in result.output

    assert backfill(db_url, sim, tmp_path) == 0
    engine = make_engine(db_url)
    assert dump(engine) == reference
    engine.dispose()


def test_budget_stops_backfill_and_next_day_continues(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    reference = reference_dump(sim, tmp_path)
    sim.reset_stats()
    (tmp_path / "syncer.toml").write_text(
        "[api]\ndaily_budget = 20\nreserve = 5\n[resources.orders]\nwindow = 50\nmax_window = 50\n")
    env = cli_env(db_url, sim.base_url)
    engine = make_engine(db_url)
    days = 0
    while (code := run_cli(["backfill"], env, cwd=tmp_path).exit_code) == 3:
        days += 1
        assert days < 20
        with engine.connect() as conn:
            assert conn.execute(select(func.max(t.request_budget.c.spent))).scalar_one() == 15
        # The API's day turns: move the spent days into the past.
        with engine.begin() as conn:
            conn.execute(t.request_budget.update()
                         .where(t.request_budget.c.day > dt.date(2001, 1, 1))
                         .values(day=dt.date(2000, 1, 1) + dt.timedelta(days=days)))
    assert code == 0
    assert days >= 1
    assert dump(engine) == reference
    assert ledger_count(engine) == sim.stats()["requests"]
    engine.dispose()


@pytest.mark.parametrize("style", ["list", "named", "keyed"])
def test_every_envelope_style_loads_the_same_rows(
    db_url: str, sim: Simulator, tmp_path: Path, style: str
) -> None:
    reference = reference_dump(sim, tmp_path)
    sim.set_envelope(style)
    assert backfill(db_url, sim, tmp_path) == 0
    engine = make_engine(db_url)
    assert dump(engine) == reference
    engine.dispose()


def test_since_starts_history_at_a_date(db_url: str, sim: Simulator, tmp_path: Path) -> None:
    orders = list(sim.dataset.orders)
    day = orders[len(orders) // 2].ordered_at.date()
    first_id = min(o.id for o in orders if o.ordered_at.date() == day)
    result = run_cli(["backfill", "--resource", "orders", "--since", day.isoformat()],
                     cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    engine = make_engine(db_url)
    with engine.connect() as conn:
        low = conn.execute(select(func.min(t.orders.c.id))).scalar_one()
        count = conn.execute(select(func.count()).select_from(t.orders)).scalar_one()
    assert low == first_id
    assert count == sum(1 for o in orders if o.id >= first_id)
    engine.dispose()


def _since_backfill(db_url: str, sim: Simulator, tmp_path: Path, since: dt.date) -> set[int]:
    """`backfill --resource orders --since`; the order ids it stored."""
    result = run_cli(["backfill", "--resource", "orders", "--since", since.isoformat()],
                     cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    engine = make_engine(db_url)
    with engine.connect() as conn:
        stored = set(conn.execute(select(t.orders.c.id)).scalars())
    engine.dispose()
    return stored


def _local_day(sim: Simulator, days: int) -> dt.datetime:
    return dt.datetime.combine(ANCHOR + dt.timedelta(days=days), dt.time(12), sim.dataset.zone)


def test_since_past_the_history_keeps_its_place_for_later_orders(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    """Nothing on the 14 days from --since: the last id before it bounds the history,
    nothing older is loaded, and the cursor stays there for the next run."""
    last = max(o.ordered_at for o in sim.dataset.orders).date()
    assert last == ANCHOR
    assert _since_backfill(db_url, sim, tmp_path, ANCHOR + dt.timedelta(days=3)) == set()
    # 14 days ahead, then ANCHOR+2, ANCHOR+1 and ANCHOR (found) behind, then one window.
    assert sim.stats()["requests"] == 14 + 3 + 1
    later = set(sim.add_orders(5, _local_day(sim, 20)))
    assert backfill(db_url, sim, tmp_path, "--resource", "orders") == 0  # no --since now
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert set(conn.execute(select(t.orders.c.id)).scalars()) == later
    engine.dispose()


def test_since_in_a_long_gap_loads_every_order_after_it(
    db_url: str, tmp_path: Path
) -> None:
    """A gap longer than the probes: powers of two back find a day with orders; what
    lies after that day comes too (a little more than asked, never less)."""
    sim = Simulator(generate(seed=3, orders=5000, anchor=ANCHOR), licenses={LICENSE: TOKEN})
    sim.start()
    try:
        later = set(sim.add_orders(40, _local_day(sim, 30)))
        since = ANCHOR + dt.timedelta(days=12)  # ANCHOR+4 .. ANCHOR+25 hold no orders
        bound = max(o.id for o in sim.dataset.orders
                    if o.ordered_at.date() == since - dt.timedelta(days=16))
        stored = _since_backfill(db_url, sim, tmp_path, since)
        assert later <= stored
        assert stored == {o.id for o in sim.dataset.orders if o.id > bound}
        assert len(stored) < len(list(sim.dataset.orders))
        assert sim.stats()["requests"] <= 14 + 7 + 2 + 3  # probes, then a few windows
    finally:
        sim.stop()


def test_since_before_the_history_loads_all_of_it(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    first = min(o.ordered_at for o in sim.dataset.orders).date()
    stored = _since_backfill(db_url, sim, tmp_path, first - dt.timedelta(days=20))
    assert stored == {o.id for o in sim.dataset.orders}
    assert sim.stats()["requests"] <= 14 + 7 + 10 + 3  # every probe finds nothing


def test_killed_backfill_resumes_to_the_same_database(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    reference = reference_dump(sim, tmp_path)
    (tmp_path / "syncer.toml").write_text(
        "[resources.orders]\nwindow = 40\nmax_window = 40\n"
        "[resources.invoices]\nwindow = 10\nmax_window = 10\n")
    env = cli_env(db_url, sim.base_url)
    migrate(make_engine(db_url))
    for kill_after in (2, 7, 12, 16, 21):
        kill_slow_backfill(sim, env, tmp_path, kill_after)
    result = run_cli(["backfill"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    engine = make_engine(db_url)
    assert dump(engine) == reference
    assert ledger_count(engine) >= sim.stats()["requests"]
    engine.dispose()


def assert_tables_equal(actual: dict[str, list[dict[str, Any]]],
                        expected: dict[str, list[dict[str, Any]]]) -> None:
    for name, rows in expected.items():
        assert len(actual[name]) == len(rows), name
        for got, want in zip(actual[name], rows, strict=True):
            assert got == want, (name, got, want)


@pytest.mark.parametrize("style", ["data", "keyed"])
def test_backfill_stores_exactly_what_the_source_implies(
    db_url: str, sim: Simulator, tmp_path: Path, style: str
) -> None:
    sim.set_envelope(style)
    assert backfill(db_url, sim, tmp_path) == 0
    engine = make_engine(db_url)
    expected = expected_rows(sim.dataset)
    assert all(expected[name] for name in expected), "the data set must exercise every table"
    assert_tables_equal(stored_rows(engine), expected)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.quarantine)).scalar_one() == 0
    engine.dispose()


def test_malformed_records_are_quarantined_and_the_rest_lands(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    ds = sim.dataset
    bad_product = sorted(ds.products)[7]
    ds.products[bad_product] = replace(ds.products[bad_product], extra={"price": "abc"})
    bad_order = ds.orders.window(1, 100)[5]
    broken = copy.copy(bad_order)
    broken.extra = {"orderdetail": "not a list"}
    ds.orders.replace(broken)

    assert backfill(db_url, sim, tmp_path) == 0

    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(t.quarantine.c.resource, t.quarantine.c.record_key,
                                   t.quarantine.c.reason, t.quarantine.c.raw)).all()
    assert sorted((r.resource, r.record_key) for r in rows) == [
        ("orders", str(bad_order.id)), ("products", str(bad_product))]
    reasons = {r.resource: r.reason for r in rows}
    assert "price" in reasons["products"] and "abc" in reasons["products"]
    assert "orderdetail" in reasons["orders"]
    assert all(json.loads(r.raw)["id"] for r in rows)

    expected = expected_rows(ds)
    expected["products"] = [p for p in expected["products"] if p["id"] != bad_product]
    for name in ("orders", "order_lines", "order_line_subproducts", "order_payments"):
        key = "id" if name == "orders" else "order_id"
        expected[name] = [r for r in expected[name] if r[key] != bad_order.id]
    assert_tables_equal(stored_rows(engine), expected)
    # The cursor moved past the quarantined order: it is a record, not a hole.
    with engine.connect() as conn:
        cursor = conn.execute(select(t.sync_state.c.cursor)
                              .where(t.sync_state.c.resource == "orders")).scalar_one()
    assert cursor == ds.orders.max_id
    engine.dispose()


def test_records_with_a_lone_surrogate_or_a_nul_are_quarantined_and_the_cursor_moves(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    ds = sim.dataset
    # Valid JSON that no database stores as text. Coupons sent without floats: the
    # quarantine then holds exactly what the API sent.
    plain = [c for c in ds.coupons if not any(isinstance(v, float) for v in render_coupon(c).values())]
    surrogate = replace(plain[-1], barcode="99\ud800")
    nul = replace(plain[-2], extra={"no\x00te": "in a key"})
    ds.coupons.replace(surrogate)
    ds.coupons.replace(nul)

    assert backfill(db_url, sim, tmp_path, "--resource", "coupons") == 0

    engine = make_engine(db_url)
    with engine.connect() as conn:
        stored = set(conn.execute(select(t.coupons.c.id)).scalars())
        rows = conn.execute(select(t.quarantine.c.record_key, t.quarantine.c.reason, t.quarantine.c.raw)
                            .where(t.quarantine.c.resource == "coupons")).all()
        cursor = conn.execute(select(t.sync_state.c.cursor)
                              .where(t.sync_state.c.resource == "coupons")).scalar_one()
    engine.dispose()
    assert stored == {c.id for c in ds.coupons} - {surrogate.id, nul.id}
    quarantined = {r.record_key: r for r in rows}
    assert set(quarantined) == {str(surrogate.id), str(nul.id)}
    assert quarantined[str(surrogate.id)].reason.startswith("barcode: not valid Unicode")
    assert quarantined[str(nul.id)].reason.startswith("extra: contains a NUL character")
    for record in (surrogate, nul):
        raw = json.loads(quarantined[str(record.id)].raw)
        assert json.loads(raw["unstorable_json"]) == render_coupon(record)
    assert cursor == ds.coupons.max_id


@pytest.mark.parametrize(("resource", "money"), [("products", "price"), ("customer_credits", "value")])
def test_a_listed_record_that_fails_to_parse_keeps_its_row_and_a_removed_one_is_marked(
    db_url: str, sim: Simulator, tmp_path: Path, resource: str, money: str
) -> None:
    assert backfill(db_url, sim, tmp_path, "--resource", resource) == 0
    store: dict[Any, Any] = getattr(sim.dataset, resource)
    keys = sorted(store)
    unparsable, removed = keys[3], keys[7]
    store[unparsable] = replace(store[unparsable], extra={money: "abc"})
    del store[removed]
    engine = make_engine(db_url)
    table = getattr(t, resource)

    def rows_by_key() -> dict[Any, Any]:
        """Stored rows by the data set's key: id, or (customer_id, tag_id)."""
        with engine.connect() as conn:
            rows = conn.execute(select(table)).all()
        return {(r.id if resource == "products" else (r.customer_id, r.tag_id)): r for r in rows}

    before = rows_by_key()
    assert backfill(db_url, sim, tmp_path, "--resource", resource) == 0
    after = rows_by_key()
    with engine.connect() as conn:
        reasons = conn.execute(select(t.quarantine.c.reason)
                               .where(t.quarantine.c.resource == resource)).scalars().all()
    engine.dispose()

    assert after[unparsable] == before[unparsable]  # its last good version, not marked deleted
    assert after[unparsable].deleted_at is None
    assert {k for k, r in after.items() if r.deleted_at is not None} == {removed}
    assert len(reasons) == 1 and reasons[0].startswith(f"{money}: ")


def test_a_window_doubles_on_small_answers_and_halves_on_huge_ones() -> None:
    """The one rule the backfill and the daemon's catch-up both follow."""
    assert adapt_window(500, 1_000_000, 50, 5000) == 1000
    assert adapt_window(4000, 1_000_000, 50, 5000) == 5000  # never past max_window
    assert adapt_window(500, TARGET_BYTES + 1, 50, 5000) == 250
    assert adapt_window(60, TARGET_BYTES * 3, 50, 5000) == 50  # never under min_window
    assert adapt_window(500, TARGET_BYTES * 3 // 4, 50, 5000) == 500  # about right: kept


def test_ctrl_c_ends_a_backfill_with_its_summary_and_the_rerun_continues(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(db_url, sim.base_url)
    sim.inject_fault("slow", count=1000, delay=0.2)
    proc = spawn_cli(["backfill"], env, tmp_path)
    _, out = signal_after(proc, sim, 4, signal.SIGINT, timeout=30)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "Aborted" not in out
    assert "interrupted; what was committed stays, run again to continue" in " ".join(out.split())
    sim.clear_faults()
    again = run_cli(["backfill"], env, cwd=tmp_path)
    assert again.exit_code == 0, again.output
    engine = make_engine(db_url)
    assert dump(engine) == reference_dump(sim, tmp_path)
    engine.dispose()
