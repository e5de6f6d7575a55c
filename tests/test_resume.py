"""Small request caps make progress, and `syncer reset` pulls a resource again: the real
CLI over real HTTP to the simulator, on SQLite and Postgres."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

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
