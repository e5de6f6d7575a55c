"""Row 3: SIGKILL at many points of a backfill and of `syncer run`, then a restart.

Each point starts from an empty database, kills the real CLI process after the
simulator has seen `k` requests (plus `d` seconds: 0 lands in a request in flight,
0.09 after its answer, in parsing, loading or committing), checks that no cursor
is past data that is not stored, restarts, and compares with a clean run. The ledger
must count at least every request the simulator saw (a row written just before the
kill may never have left). Fast subset: 3 backfill and 3 daemon points; `--slow`: 32.
Every point runs on SQLite and on Postgres.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from syncer import tables as t
from syncer.db import make_engine, migrate
from syncer.resources import RESOURCES, Pull
from syncer.simulator import Simulator
from tests.conftest import Leaks
from tests.helpers import cli_env, dump, ledger_count, run_cli, spawn_cli
from tests.reliability.conftest import Dump, Figures, compare

DELAY = 0.08  # every answer is this slow, so a kill lands where we aim
BACKFILL_CONFIG = ("[resources.orders]\nwindow = 40\nmax_window = 40\n"
                   "[resources.invoices]\nwindow = 20\nmax_window = 20\n"
                   "[resources.coupons]\nwindow = 20\nmax_window = 20\n")
DAEMON_CONFIG = "[resources.orders]\nwindow = 5000\n"

FAST_BACKFILL = [(3, 0.0), (14, 0.09), (27, 0.05)]
SLOW_BACKFILL = [(k, d) for k in (1, 2, 5, 8, 10, 11, 16, 19, 22, 25, 30, 33, 36) for d in (0.0,)] + [
    (k, 0.09) for k in (4, 9, 12, 18, 24, 31, 35)]
FAST_DAEMON = [(2, 0.0), (7, 0.09), (13, 0.05)]
SLOW_DAEMON = [(1, 0.0), (3, 0.09), (4, 0.0), (5, 0.09), (6, 0.0), (8, 0.09), (9, 0.0), (10, 0.09),
               (11, 0.0), (12, 0.09), (15, 0.0), (16, 0.09)]


def _points(fast: list[tuple[int, float]], slow: list[tuple[int, float]]) -> list[object]:
    return [*(pytest.param(k, d, id=f"k{k}-d{d}") for k, d in fast),
            *(pytest.param(k, d, id=f"k{k}-d{d}", marks=pytest.mark.slow) for k, d in slow)]


def _kill_after(proc: subprocess.Popen[str], sim: Simulator, requests: int, delay: float,
                leaks: Leaks) -> bool:
    """SIGKILL after the simulator saw `requests` requests and `delay` more seconds.

    False if the process had ended by itself first.
    """
    deadline = time.monotonic() + 90
    while sim.stats()["requests"] < requests and proc.poll() is None:
        assert time.monotonic() < deadline, "the process made no progress"
        time.sleep(0.005)
    if delay:
        time.sleep(delay)
    ended = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    leaks.add("killed process output", out)
    return not ended


def _check_cursors(engine: Engine, sim: Simulator) -> None:
    """No cursor is past an id whose record is neither stored nor quarantined."""
    with engine.connect() as conn:
        for resource in RESOURCES:
            if resource.pull is not Pull.ID_WINDOW:
                continue
            cursor = conn.execute(select(t.sync_state.c.cursor).where(
                t.sync_state.c.resource == resource.name)).scalar() or 0
            stored = set(conn.execute(select(resource.table.c.id)).scalars())
            held = {int(k) for k in conn.execute(select(t.quarantine.c.record_key).where(
                t.quarantine.c.resource == resource.name)).scalars() if k and k.isdigit()}
            source = {r.id for r in getattr(sim.dataset, resource.name) if r.id <= cursor}
            missing = source - stored - held
            assert not missing, f"{resource.name}: cursor {cursor} is past ids never stored: " \
                                f"{sorted(missing)[:5]}"


def _finish(url: str, sim: Simulator, reference: Dump, figures: Figures, crashed: bool) -> None:
    engine = make_engine(url)
    try:
        lost, doubled = compare(dump(engine), reference)
        ledger = ledger_count(engine)
    finally:
        engine.dispose()
    seen = sim.stats()["requests"]
    figures.add("3 crash matrix", crashes=int(crashed), sim_requests=seen, ledger_requests=ledger,
                rows_lost=lost, rows_doubled=doubled)
    assert (lost, doubled) == (0, 0), "the resumed database differs from a clean run"
    assert ledger >= seen, "the simulator saw a request the ledger does not count"


def _crash_and_resume(command: list[str], restart: list[str], config: str, requests: int,
                     delay: float, url: str, sim: Simulator, reference: Dump, tmp_path: Path,
                     figures: Figures, leaks: Leaks) -> None:
    """SIGKILL `command` at a point, check the cursors, run `restart`, compare."""
    (tmp_path / "syncer.toml").write_text(config)
    env = cli_env(url, sim.base_url)
    sim.inject_fault("slow", count=10_000, delay=DELAY)
    crashed = _kill_after(spawn_cli(command, env, tmp_path), sim, requests, delay, leaks)
    sim.clear_faults()
    engine = make_engine(url)
    migrate(engine)
    _check_cursors(engine, sim)
    engine.dispose()
    result = run_cli(restart, env, cwd=tmp_path)
    leaks.add(f"{' '.join(restart)} output", result.output)
    assert result.exit_code == 0, result.output
    _finish(url, sim, reference, figures, crashed)


@pytest.mark.parametrize(("requests", "delay"), _points(FAST_BACKFILL, SLOW_BACKFILL))
def test_backfill_killed_at_any_point_resumes_to_a_clean_run(
    requests: int, delay: float, db_url: str, quiet_sim: Simulator, reference: Dump,
    tmp_path: Path, figures: Figures, leaks: Leaks
) -> None:
    _crash_and_resume(["backfill"], ["backfill"], BACKFILL_CONFIG, requests, delay, db_url,
                      quiet_sim, reference, tmp_path, figures, leaks)


@pytest.mark.parametrize(("requests", "delay"), _points(FAST_DAEMON, SLOW_DAEMON))
def test_daemon_killed_at_any_point_restarts_to_a_clean_run(
    requests: int, delay: float, db_url: str, quiet_sim: Simulator, reference: Dump,
    tmp_path: Path, figures: Figures, leaks: Leaks
) -> None:
    # The restart does not wait for the dead process's leases to expire: on the same
    # host it sees that their holder no longer runs and takes them over.
    _crash_and_resume(["run"], ["run", "--once"], DAEMON_CONFIG, requests, delay, db_url,
                      quiet_sim, reference, tmp_path, figures, leaks)
