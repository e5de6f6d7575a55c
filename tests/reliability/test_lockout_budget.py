"""Row 5: lock-out and budget under stress.

- Restart loops with wrong credentials, through every command that can send: the
  simulator's bad-login counter moves by at most one per credential change, the IP
  is never blocked, and the right token works at once.
- Backfills and a daemon racing on one license (Postgres): the ledger never passes the
  budget, and the simulator answers 1003 only when another client spent the day.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest

from syncer.db import make_engine, migrate
from syncer.simulator import Simulator, generate
from tests.conftest import ANCHOR, LICENSE, TOKEN, Leaks
from tests.helpers import cli_env, ledger_count, run_cli, spawn_cli
from tests.reliability.conftest import Figures

COMMANDS = (["run", "--once"], ["backfill"], ["check", "--online"], ["call", "get-products"],
            ["backfill", "--resource", "orders"])


def test_restart_loops_with_bad_credentials_never_pass_one_bad_login_per_change(
    sqlite_url: str, sim: Simulator, tmp_path: Path, figures: Figures, leaks: Leaks,
    request: pytest.FixtureRequest
) -> None:
    slow = bool(request.config.getoption("--slow"))
    changes = 4 if slow else 2  # the fifth bad login would block the IP for 30 minutes
    restarts = 3 if slow else 1
    for n in range(changes):
        env = cli_env(sqlite_url, sim.base_url, token=f"wrong-token-{n}-{TOKEN[::-1]}")
        for _ in range(restarts):
            for command in COMMANDS:
                result = run_cli(command, env, cwd=tmp_path)
                leaks.add(" ".join(command), result.output)
        assert sum(sim.stats()["bad_logins"].values()) == n + 1, f"after change {n + 1}"
    assert 1004 not in sim.stats()["errors"]
    good = run_cli(["backfill", "--resource", "products"], cli_env(sqlite_url, sim.base_url),
                   cwd=tmp_path)
    leaks.add("backfill", good.output)
    assert good.exit_code == 0, good.output
    engine = make_engine(sqlite_url)
    figures.add("5 lock-out and budget", sim_requests=sim.stats()["requests"],
                ledger_requests=ledger_count(engine))
    assert ledger_count(engine) >= sim.stats()["requests"]
    engine.dispose()


def _race(pg_url: str, sim: Simulator, tmp_path: Path, budget: int, leaks: Leaks) -> int:
    """Three backfills and a daemon on one license at once; returns the ledger count."""
    (tmp_path / "syncer.toml").write_text(
        f"[api]\ndaily_budget = {budget}\nreserve = 0\n"
        "[resources.orders]\nwindow = 10\nmax_window = 10\n")
    engine = make_engine(pg_url)
    migrate(engine)
    env = cli_env(pg_url, sim.base_url)
    sim.inject_fault("slow", count=10_000, delay=0.03)  # widen the windows where races happen
    daemon = spawn_cli(["run"], env, tmp_path)
    backfills = [spawn_cli(["backfill"], env, tmp_path) for _ in range(3)]
    for proc in backfills:
        out, _ = proc.communicate(timeout=180)
        leaks.add("backfill output", out)
        assert proc.returncode in (0, 3), out
    # The daemon keeps spending until the budget is gone or the license is stopped.
    deadline = time.monotonic() + 60
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 3:
        count = ledger_count(engine)
        if count >= budget:
            break
        if count != last:
            last, quiet_since = count, time.monotonic()
        time.sleep(0.2)
    daemon.send_signal(signal.SIGTERM)
    out, _ = daemon.communicate(timeout=30)
    leaks.add("daemon output", out)
    with sim._lock:
        sim._faults.clear()
    count = ledger_count(engine)
    engine.dispose()
    return count


def test_racing_backfills_and_a_daemon_never_pass_the_budget(
    pg_url: str, tmp_path: Path, figures: Figures, leaks: Leaks
) -> None:
    budget = 30
    sim = Simulator(generate(seed=2, orders=400, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    daily_limit=budget)
    sim.start()
    try:
        ledger = _race(pg_url, sim, tmp_path, budget, leaks)
        stats = sim.stats()
    finally:
        sim.stop()
    figures.add("5 lock-out and budget", sim_requests=stats["requests"], ledger_requests=ledger)
    assert ledger <= budget
    assert stats["requests"] <= ledger
    assert 1003 not in stats["errors"], "1003 although nobody else spent the budget"


@pytest.mark.slow
def test_when_another_client_spent_the_day_each_process_sees_1003_at_most_once(
    pg_url: str, tmp_path: Path, figures: Figures, leaks: Leaks
) -> None:
    budget = 45
    sim = Simulator(generate(seed=2, orders=400, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    daily_limit=budget)
    sim.start()
    try:
        for _ in range(30):  # another integration of the same license
            with urllib.request.urlopen(f"{sim.base_url}?licname={LICENSE}&token={TOKEN}&get-payment",
                                        timeout=10) as resp:
                resp.read()
        sim.reset_stats()
        ledger = _race(pg_url, sim, tmp_path, budget, leaks)
        stats = sim.stats()
    finally:
        sim.stop()
    figures.add("5 lock-out and budget", sim_requests=stats["requests"], ledger_requests=ledger)
    assert ledger <= budget
    assert stats["requests"] <= ledger
    assert stats["errors"].get(1003, 0) <= 4, "a stopped license kept asking"
    assert stats["requests"] - stats["errors"].get(1003, 0) <= budget - 30
