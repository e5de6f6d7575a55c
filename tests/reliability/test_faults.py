"""Row 2: every fault the simulator injects, against every resource, in backfill and in `run`.

Faults heal within the retry bound (`max_attempts` = 3 for the backfill, 2 for the
daemon): the sync completes, the database ends equal to a clean run, and every
request the simulator saw is in the ledger. A fault that outlasts the bound is
reported (exit 1) and nothing of it is applied; the next run completes.
Fast subset: each fault kind against one full list (products) and one id window
(orders); `--slow` runs all 13 resources. Every case runs on SQLite and on Postgres.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import SecretStr

from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
from syncer.daemon import Daemon
from syncer.db import make_engine, migrate
from syncer.jobs import DEFAULT_JOBS
from syncer.resources import BY_NAME, RESOURCES, Pull
from syncer.simulator import Simulator
from syncer.simulator.server import FAULTS
from tests.conftest import LICENSE, TOKEN, Leaks
from tests.helpers import FakeClock, cli_env, dump, ledger_count, run_cli
from tests.reliability.conftest import Dump, Figures, compare

TIMEOUT = 1.5  # seconds; a "hang" costs this much per attempt
SLOW_DELAY = 0.3  # well under the timeout: a slow answer is still an answer, even on a busy machine
FAST = ("products", "orders")
CONFIG = f"[api]\ntimeout_seconds = {TIMEOUT}\nmax_attempts = 3\n"


def _matrix() -> list[object]:
    out: list[object] = []
    for resource in RESOURCES:
        for kind in FAULTS:
            marks = () if resource.name in FAST else (pytest.mark.slow,)
            out.append(pytest.param(resource.name, kind, marks=marks, id=f"{resource.name}-{kind}"))
    return out


def _tables(resource: str) -> list[str]:
    return [tbl.name for tbl in BY_NAME[resource].tables]


def _check(url: str, sim: Simulator, reference: Dump, resource: str, figures: Figures,
           injected: int) -> None:
    engine = make_engine(url)
    try:
        lost, doubled = compare(dump(engine), reference, _tables(resource))
        ledger = ledger_count(engine)
    finally:
        engine.dispose()
    stats = sim.stats()
    figures.add("2 fault matrix", faults=stats["faults_served"], sim_requests=stats["requests"],
                ledger_requests=ledger, rows_lost=lost, rows_doubled=doubled)
    assert stats["faults_served"] == injected
    assert (lost, doubled) == (0, 0), "the database differs from a clean run"
    assert ledger == stats["requests"], "the ledger and the simulator disagree"


@pytest.mark.parametrize(("resource", "kind"), _matrix())
def test_backfill_heals_every_fault_within_the_retry_bound(
    resource: str, kind: str, db_url: str, quiet_sim: Simulator, reference: Dump, tmp_path: Path,
    figures: Figures, leaks: Leaks
) -> None:
    sim = quiet_sim
    (tmp_path / "syncer.toml").write_text(CONFIG)
    url = db_url
    # Two of the three attempts fail (a slow answer is an answer: one is enough).
    injected = 1 if kind == "slow" else 2
    sim.inject_fault(kind, count=injected, delay=SLOW_DELAY)
    result = run_cli(["backfill", "--resource", resource], cli_env(url, sim.base_url), cwd=tmp_path)
    leaks.add("backfill output", result.output)
    assert result.exit_code == 0, result.output
    clean = 1 if BY_NAME[resource].pull is Pull.FULL_LIST else 3
    # Two failed attempts, plus (windows) at most a few more after a timeout halves the window.
    assert sim.stats()["requests"] <= clean + 2 + (4 if kind == "hang" else 0)
    _check(url, sim, reference, resource, figures, injected=injected)


def daemon_config(url: str, sim: Simulator, max_attempts: int = 2) -> Config:
    return Config(database=DatabaseConfig(url=url),
                  api=ApiConfig(base_url=sim.base_url, timeout_seconds=TIMEOUT,
                                max_attempts=max_attempts),
                  licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),))


@pytest.mark.parametrize(("resource", "kind"), _matrix())
def test_run_heals_every_fault_within_the_retry_bound(
    resource: str, kind: str, db_url: str, quiet_sim: Simulator, reference: Dump, tmp_path: Path,
    figures: Figures
) -> None:
    sim = quiet_sim
    url = db_url
    engine = make_engine(url)
    migrate(engine)
    clock = FakeClock(dt.datetime(2026, 10, 27, 14, 0, tzinfo=dt.UTC))
    jobs = [j for j in DEFAULT_JOBS if j.name == resource]
    daemon = Daemon(engine, daemon_config(url, sim), clock=clock, jobs=jobs)
    try:
        sim.inject_fault(kind, count=1, delay=SLOW_DELAY)  # one of the daemon's two attempts
        first = daemon.run_due()
        assert [r.error for r in first] == [None], first
        for _ in range(6):  # an id window catches up on history one window per run
            clock.advance(minutes=20)
            daemon.run_due()
    finally:
        for lic in daemon.licenses:
            lic.close()
        engine.dispose()
    _check(url, sim, reference, resource, figures, injected=1)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k == "html" else (pytest.mark.slow,))
                                  for k in FAULTS])
def test_a_fault_past_the_retry_bound_is_reported_and_the_rerun_completes(
    kind: str, quiet_sim: Simulator, reference: Dump, tmp_path: Path, figures: Figures,
    leaks: Leaks
) -> None:
    sim = quiet_sim
    (tmp_path / "syncer.toml").write_text(CONFIG)
    url = f"sqlite:///{tmp_path}/db.sqlite"
    env = cli_env(url, sim.base_url)
    sim.inject_fault(kind, count=3, delay=SLOW_DELAY if kind != "slow" else TIMEOUT + 1)
    failed = run_cli(["backfill", "--resource", "products"], env, cwd=tmp_path)
    leaks.add("backfill output", failed.output)
    assert failed.exit_code == 1, failed.output
    assert sim.stats()["requests"] == 3
    engine = make_engine(url)
    assert dump(engine)["products"] == [], "a failed pull was half-applied"
    engine.dispose()
    status = run_cli(["status"], env, cwd=tmp_path)
    leaks.add("status output", status.output)
    assert "products" in status.output
    again = run_cli(["backfill", "--resource", "products"], env, cwd=tmp_path)
    leaks.add("backfill output", again.output)
    assert again.exit_code == 0, again.output
    _check(url, sim, reference, "products", figures, injected=3)
