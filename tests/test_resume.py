"""Small request caps make progress, and `syncer reset` pulls a resource again: the real
CLI over real HTTP to the simulator, on SQLite and Postgres."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, delete, select

from syncer import tables as t
from syncer.db import make_engine
from syncer.simulator import Simulator
from tests.helpers import cli_env, dump, run_cli


def backfill(db_url: str, sim: Simulator, tmp_path: Path, *args: str) -> int:
    result = run_cli(["backfill", *args], cli_env(db_url, sim.base_url), cwd=tmp_path)
    return result.exit_code


def clean_run(sim: Simulator, tmp_path: Path) -> tuple[dict[str, list[tuple[object, ...]]], int]:
    """A clean, uncapped backfill into a fresh SQLite file: its tables and its requests."""
    url = f"sqlite:///{tmp_path}/reference.db"
    before = sim.stats()["requests"]
    assert backfill(url, sim, tmp_path) == 0
    engine = make_engine(url)
    try:
        return dump(engine), sim.stats()["requests"] - before
    finally:
        engine.dispose()


def test_max_requests_3_repeated_reaches_the_end_within_one_backfill_plus_one_per_run(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    (tmp_path / "syncer.toml").write_text(
        "[resources.orders]\nwindow = 100\nmax_window = 100\n")
    reference, uncapped = clean_run(sim, tmp_path)
    sim.reset_stats()
    runs = 0
    while True:
        runs += 1
        assert runs <= uncapped, "the capped runs do not get to the end"
        before = sim.stats()["requests"]
        code = backfill(db_url, sim, tmp_path, "--max-requests", "3")
        assert sim.stats()["requests"] - before <= 3
        if code == 0:
            break
        assert code == 3
    engine = make_engine(db_url)
    assert dump(engine) == reference
    assert runs > uncapped // 3 - 1  # it really was many small runs
    assert sim.stats()["requests"] <= uncapped + runs
    with engine.connect() as conn:  # the finished backfill leaves no record behind
        assert conn.execute(select(t.resume_point).where(t.resume_point.c.task == "backfill")
                            ).first() is None
    engine.dispose()


def order_row(engine: Engine, order_id: int) -> tuple[object, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(select(t.orders.c.total_price, t.orders.c.content_hash)
                                  .where(t.orders.c.id == order_id)).one())


def test_reset_then_backfill_picks_up_an_old_order_changed_after_it_was_stored(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(db_url, sim.base_url)
    assert backfill(db_url, sim, tmp_path) == 0
    engine = make_engine(db_url)
    old = sim.dataset.orders.window(1, 50)[10].id
    stored = order_row(engine, old)
    sim.touch("orders", [old])
    assert backfill(db_url, sim, tmp_path) == 0
    assert order_row(engine, old) == stored  # past the cursor: a backfill alone never sees it

    refused = run_cli(["reset", "orders"], env, cwd=tmp_path)  # no terminal, no --yes
    assert refused.exit_code == 2 and "--yes" in refused.output
    result = run_cli(["reset", "orders", "--yes"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "state forgotten" in result.output and "row(s) kept" in result.output
    with engine.connect() as conn:
        assert conn.execute(select(t.sync_state).where(t.sync_state.c.resource == "orders")
                            ).first() is None
    assert backfill(db_url, sim, tmp_path, "--resource", "orders") == 0
    assert order_row(engine, old) != stored
    reference, _ = clean_run(sim, tmp_path)
    assert dump(engine) == reference
    engine.dispose()


def test_reset_drop_rows_then_backfill_ends_equal_to_a_clean_run_and_rebuilds_so(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(db_url, sim.base_url)
    assert backfill(db_url, sim, tmp_path) == 0
    products = sorted(sim.dataset.products)
    sim.delete("products", products[:3])  # kept as deleted rows by an ordinary pull
    sim.delete("orders", [sim.dataset.orders.window(1, 50)[4].id])  # voided
    sim.touch("orders", [sim.dataset.orders.window(1, 50)[7].id])
    result = run_cli(["reset", "orders", "products", "--drop-rows", "--yes"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "row(s) dropped" in result.output
    assert backfill(db_url, sim, tmp_path) == 0
    reference, _ = clean_run(sim, tmp_path)
    engine = make_engine(db_url)
    assert dump(engine) == reference
    # The archive keeps every answer, but a rebuild does not bring the dropped rows back.
    live = dump(engine, keep_synced_at=True)
    with engine.begin() as conn:
        for table in (t.order_lines, t.orders, t.products):
            conn.execute(delete(table))
    result = run_cli(["rebuild"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert dump(engine, keep_synced_at=True) == live
    engine.dispose()


def test_reset_since_starts_orders_at_that_day(db_url: str, sim: Simulator, tmp_path: Path) -> None:
    env = cli_env(db_url, sim.base_url)
    assert backfill(db_url, sim, tmp_path, "--resource", "orders") == 0
    days = sim.dataset.orders.days()
    since = days[len(days) // 2]
    first = min(o.id for o in sim.dataset.orders.on_day(since))
    result = run_cli(["reset", "orders", "--since", since.isoformat(), "--yes"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert f"from id {first}" in result.output
    wrong = run_cli(["reset", "products", "--since", since.isoformat(), "--yes"], env, cwd=tmp_path)
    assert wrong.exit_code == 2 and "--since applies to orders and invoices" in wrong.output
