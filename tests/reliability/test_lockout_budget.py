"""Row 5: lock-out and budget under stress.

- Restart loops with wrong credentials, through every command that can send: the
  simulator's bad-login counter moves by at most one per credential change, the IP
  is never blocked, and the right token works at once.
- Backfills and a daemon racing on one license (Postgres): the ledger never passes the
  budget, and the simulator answers 1003 only when another client spent the day.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from syncer import tables as t
from syncer.db import make_engine, migrate
from syncer.ledger import BAD_LOGIN_WINDOW, MAX_BAD_LOGINS
from syncer.simulator import Simulator, generate
from tests.conftest import ANCHOR, LICENSE, TOKEN, Leaks
from tests.helpers import cli_env, finish, ledger_count, run_cli, spawn_cli
from tests.reliability.conftest import Figures

COMMANDS = (["run", "--once"], ["backfill"], ["check", "--online"], ["call", "get-products"],
            ["backfill", "--resource", "orders"])


def _bad_logins(sim: Simulator) -> int:
    return sum(sim.stats()["bad_logins"].values())


def _restart_loop(env: dict[str, str], sim: Simulator, tmp_path: Path, restarts: int,
                  leaks: Leaks) -> list[str]:
    """Every command that can send, `restarts` times over; their outputs."""
    outputs = []
    for _ in range(restarts):
        for command in COMMANDS:
            result = run_cli(command, env, cwd=tmp_path)
            leaks.add(" ".join(command), result.output)
            outputs.append(result.output)
    return outputs


def _wrong(n: int) -> str:
    return f"wrong-token-{n}-{TOKEN[::-1]}"


def test_restart_loops_with_bad_credentials_never_pass_one_bad_login_per_change(
    sqlite_url: str, sim: Simulator, tmp_path: Path, figures: Figures, leaks: Leaks,
    request: pytest.FixtureRequest
) -> None:
    restarts = 3 if request.config.getoption("--slow") else 1
    for n in range(2):
        _restart_loop(cli_env(sqlite_url, sim.base_url, token=_wrong(n)), sim, tmp_path,
                      restarts, leaks)
        assert _bad_logins(sim) == n + 1, f"after change {n + 1}"
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


def test_many_wrong_tokens_stop_short_of_the_ip_block(
    sqlite_url: str, sim: Simulator, tmp_path: Path, figures: Figures, leaks: Leaks
) -> None:
    """Wrong tokens, changed again and again (or many licenses with wrong tokens):
    new credentials wait once MAX_BAD_LOGINS fall in half an hour; the fifth, which
    would block the IP, never comes."""
    for n in range(MAX_BAD_LOGINS + 2):
        outputs = _restart_loop(cli_env(sqlite_url, sim.base_url, token=_wrong(n)), sim,
                                tmp_path, 1, leaks)
        assert _bad_logins(sim) == min(n + 1, MAX_BAD_LOGINS), f"after change {n + 1}"
        if n >= MAX_BAD_LOGINS:
            # Each command that tried says why it waits (`run --once` may find nothing due).
            said = [" ".join(out.split()) for out in outputs if LICENSE in out]  # rich wraps
            assert len(said) >= len(COMMANDS) - 1, outputs
            assert all("bad logins" in out and "wait until" in out for out in said), said
    assert 1004 not in sim.stats()["errors"]
    shown = json.loads(run_cli(["status", "--json"], cli_env(sqlite_url, sim.base_url),
                               cwd=tmp_path).stdout)
    assert shown["bad_logins_last_30_min"] == MAX_BAD_LOGINS
    assert shown["new_credentials_wait_until"] is not None
    # Half an hour later (the ledger's bad logins moved back in time), the right token works.
    engine = make_engine(sqlite_url)
    ledger = t.request_ledger.c
    with engine.begin() as conn:
        for row in conn.execute(select(ledger.id, ledger.sent_at)
                                .where(ledger.error_code.is_not(None))).all():
            conn.execute(update(t.request_ledger).where(ledger.id == row.id)
                         .values(sent_at=row.sent_at - BAD_LOGIN_WINDOW))
    good = run_cli(["backfill", "--resource", "products"], cli_env(sqlite_url, sim.base_url),
                   cwd=tmp_path)
    leaks.add("backfill", good.output)
    assert good.exit_code == 0, good.output
    shown = json.loads(run_cli(["status", "--json"], cli_env(sqlite_url, sim.base_url),
                               cwd=tmp_path).stdout)
    assert shown["new_credentials_wait_until"] is None
    figures.add("5 lock-out and budget", sim_requests=sim.stats()["requests"],
                ledger_requests=ledger_count(engine))
    engine.dispose()


def test_a_daemon_starting_with_a_wrong_token_costs_one_bad_login(
    db_url: str, sim: Simulator, tmp_path: Path, figures: Figures, leaks: Leaks
) -> None:
    """`syncer run` starts every job at once on a pool of threads: the first request
    probes the credentials, the others wait for its answer instead of each trying."""
    sim.inject_fault("slow", count=20, delay=0.3)  # all jobs are in flight together
    env = cli_env(db_url, sim.base_url, token=_wrong(0))
    proc = spawn_cli(["run"], env, tmp_path)
    deadline = time.monotonic() + 30
    while _bad_logins(sim) == 0:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(2)  # time for any other job to try
    proc.send_signal(signal.SIGTERM)
    out = finish(proc, timeout=20)
    leaks.add("daemon output", out)
    assert _bad_logins(sim) == 1, out
    assert sim.stats()["requests"] == 1, out
    assert "credentials refused" in out
    engine = make_engine(db_url)
    figures.add("5 lock-out and budget", sim_requests=sim.stats()["requests"],
                ledger_requests=ledger_count(engine))
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
    sim.clear_faults()
    count = ledger_count(engine)
    engine.dispose()
    return count


def _race_on_its_own_sim(pg_url: str, tmp_path: Path, figures: Figures, leaks: Leaks,
                         budget: int, spent_elsewhere: int = 0) -> dict[str, Any]:
    """`_race` against a simulator whose daily limit is `budget`, after another client of
    the license spent `spent_elsewhere`; the ledger never passes the budget, nor counts
    less than the API saw. Returns the simulator's stats of the race."""
    sim = Simulator(generate(seed=2, orders=400, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    daily_limit=budget)
    sim.start()
    try:
        for _ in range(spent_elsewhere):  # another integration of the same license
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
    return stats


def test_racing_backfills_and_a_daemon_never_pass_the_budget(
    pg_url: str, tmp_path: Path, figures: Figures, leaks: Leaks
) -> None:
    stats = _race_on_its_own_sim(pg_url, tmp_path, figures, leaks, budget=30)
    assert 1003 not in stats["errors"], "1003 although nobody else spent the budget"


@pytest.mark.slow
def test_when_another_client_spent_the_day_each_process_sees_1003_at_most_once(
    pg_url: str, tmp_path: Path, figures: Figures, leaks: Leaks
) -> None:
    budget = 45
    stats = _race_on_its_own_sim(pg_url, tmp_path, figures, leaks, budget, spent_elsewhere=30)
    # Only the requests already in flight when the first 1003 came back may see one
    # too: a backfill sends one at a time, the daemon one per worker thread (4).
    assert stats["errors"].get(1003, 0) <= 3 + 4, "a stopped license kept asking"
    assert stats["requests"] - stats["errors"].get(1003, 0) <= budget - 30
