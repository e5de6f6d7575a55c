"""Row 4: the database goes away under the daemon.

- The connection is killed (`pg_terminate_backend`) in the middle of the transaction
  that stores a page: the daemon notices, retries the job 30 s later by itself, the
  cursor and rows end as in a clean run, and exactly one request (the one whose
  answer was lost) is spent again.
- A pooled connection the server dropped while it lay idle is replaced before it is
  lent (`db.IDLE_PING_SECONDS`); one dropped while just used fails one statement, and
  the next checkout gets a working connection.
- Slow only, and only with SYNCER_TEST_PG_RESTART=1 (it restarts the shared Postgres
  server, so nothing else may use it; `python -m benchmarks.reliability` runs it alone):
  the server restarts while `syncer run` works; it recovers without a restart of its own.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, select

from syncer import db as db_module
from syncer import sync as sync_module
from syncer import tables as t
from syncer.daemon import Daemon
from syncer.db import make_engine, migrate
from syncer.resources import RESOURCES, Pull
from syncer.simulator import Simulator
from tests.conftest import PG_URL, Leaks
from tests.helpers import FakeClock, cli_env, dump, ledger_count, run_cli, spawn_cli
from tests.reliability.conftest import Dump, Figures, compare
from tests.reliability.test_faults import daemon_config

WIDE = {"orders": 5000, "invoices": 5000, "coupons": 5000}


def _config(url: str, sim: Simulator) -> Any:
    from syncer.config import ResourceConfig

    config = daemon_config(url, sim)
    return config.model_copy(update={"resources": {
        name: ResourceConfig(window=w, max_window=w) for name, w in WIDE.items()}})


def _daemon_rounds(url: str, sim: Simulator, rounds: int = 2) -> None:
    """Run the daemon's due jobs the way its scheduler does (`_run_one`), twice, 31 s apart."""
    engine = make_engine(url)
    migrate(engine)
    clock = FakeClock(dt.datetime(2026, 10, 27, 14, 0, tzinfo=dt.UTC))
    daemon = Daemon(engine, _config(url, sim), clock=clock)
    # As `Daemon.start` does: first the stored due times, then what each run returns.
    schedule = {(lic, job): when or clock() for lic in daemon.licenses
                for job, when in lic.due_times().items()}
    try:
        for _ in range(rounds):
            for (lic, job), when in sorted(schedule.items(), key=lambda item: item[1]):
                if when <= clock():
                    schedule[lic, job] = daemon._run_one(lic, job)
            clock.advance(minutes=31 / 60)
    finally:
        for lic in daemon.licenses:
            lic.close()
        engine.dispose()


def test_a_connection_killed_mid_transaction_costs_one_request_and_loses_no_cursor(
    pg_url: str, quiet_sim: Simulator, reference: Dump, tmp_path: Path, figures: Figures,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = quiet_sim
    _daemon_rounds(f"sqlite:///{tmp_path}/clean.db", sim)
    clean_requests = sim.stats()["requests"]
    sim.reset_stats()

    original = sync_module.load  # type: ignore[attr-defined]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    killed: list[int] = []

    def load_then_die(conn: Connection, table: sa.Table, *args: Any, **kwargs: Any) -> Any:
        counts = original(conn, table, *args, **kwargs)
        if table is t.orders and not killed:
            # The rows are written, the transaction is open: kill its connection now.
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with admin.connect() as other:
                other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            killed.append(pid)
        return counts

    monkeypatch.setattr(sync_module, "load", load_then_die)
    try:
        _daemon_rounds(pg_url, sim)
    finally:
        admin.dispose()
    assert killed, "the fault was never injected"
    engine = make_engine(pg_url)
    try:
        lost, doubled = compare(dump(engine), reference)
        ledger = ledger_count(engine)
        with engine.connect() as conn:
            cursors = dict(conn.execute(select(t.sync_state.c.resource, t.sync_state.c.cursor)
                                        .where(t.sync_state.c.resource.in_(list(WIDE)))).all())
    finally:
        engine.dispose()
    requests = sim.stats()["requests"]
    figures.add("4 database faults", faults=1, sim_requests=requests, ledger_requests=ledger,
                rows_lost=lost, rows_doubled=doubled)
    assert (lost, doubled) == (0, 0)
    assert cursors == {r.name: getattr(sim.dataset, r.name).max_id
                       for r in RESOURCES if r.pull is Pull.ID_WINDOW}
    assert requests == clean_requests + 1, "more than the one request in flight was spent again"
    assert ledger == requests


def _backend(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _terminate(pid: int) -> None:
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


def test_a_pooled_connection_dropped_while_idle_is_replaced_before_it_is_lent(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(pg_url)
    try:
        first = _backend(engine)
        _terminate(first)
        monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.0)  # idle long enough: pinged
        second = _backend(engine)
        assert second != first
        monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 3600.0)  # just used: not pinged
        _terminate(second)
        with pytest.raises(sa.exc.OperationalError):
            _backend(engine)
        assert _backend(engine) not in (first, second)  # the pool let the dead one go
    finally:
        engine.dispose()


RESTART = "pg_ctlcluster --skip-systemctl-redirect 15 main restart"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SYNCER_TEST_PG_RESTART") != "1",
                    reason="restarts the shared Postgres: run alone with SYNCER_TEST_PG_RESTART=1")
def test_the_daemon_recovers_by_itself_from_a_postgres_restart(
    pg_url: str, quiet_sim: Simulator, reference: Dump, tmp_path: Path, figures: Figures,
    leaks: Leaks
) -> None:
    sim = quiet_sim
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "syncer.toml").write_text("[resources.orders]\nwindow = 5000\n")
    (tmp_path / "syncer.toml").write_text("[resources.orders]\nwindow = 5000\n")
    clean = run_cli(["run", "--once"], cli_env(f"sqlite:///{tmp_path}/clean/db.sqlite", sim.base_url),
                    cwd=tmp_path / "clean")
    assert clean.exit_code == 0, clean.output
    clean_requests = sim.stats()["requests"]
    sim.reset_stats()
    sim.inject_fault("slow", count=10_000, delay=0.3)
    engine = make_engine(pg_url)
    migrate(engine)
    proc = spawn_cli(["run"], cli_env(pg_url, sim.base_url), tmp_path)
    try:
        deadline = time.monotonic() + 60
        while sim.stats()["requests"] < 5:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        subprocess.run(RESTART.split(), check=True, capture_output=True, timeout=120)
        sim.clear_faults()
        deadline = time.monotonic() + 120
        while True:
            try:
                if compare(dump(engine), reference) == (0, 0):
                    break
            except sa.exc.OperationalError:
                engine.dispose()
            assert time.monotonic() < deadline, "the daemon did not recover"
            assert proc.poll() is None, "the daemon died"
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        leaks.add("daemon output", out)
    lost, doubled = compare(dump(engine), reference)
    ledger = ledger_count(engine)
    with engine.connect() as conn:
        # Sent, but the answer could not be recorded: the server was away.
        unrecorded = conn.execute(select(sa.func.count()).select_from(t.request_ledger).where(
            t.request_ledger.c.outcome == "pending")).scalar_one()
    engine.dispose()
    requests = sim.stats()["requests"]
    figures.add("4 database faults", faults=1, sim_requests=requests, ledger_requests=ledger,
                rows_lost=lost, rows_doubled=doubled)
    assert ledger >= requests >= clean_requests
    # Only the requests in flight when the server went away (4 workers) are lost work; the
    # rest of the difference to a clean pass is the schedule going on while it recovered.
    assert unrecorded <= 4, unrecorded
