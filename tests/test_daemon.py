"""`syncer run`: lock-out safety, limits, replicas, shutdown and operability, over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, insert, select, update

from syncer import audit
from syncer import jobs as registry
from syncer import tables as t
from syncer.cli import STOP_TIMEOUT
from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig, ResourceConfig, ScheduleConfig
from syncer.daemon import Daemon, LicenseJobs, db_retry_delay
from syncer.db import make_engine, migrate
from syncer.jobs import DEFAULT_JOBS
from syncer.leases import claim, claim_on, finish_on, holder
from syncer.ledger import utcnow
from syncer.ops import metrics_text
from syncer.simulator import Simulator, generate
from tests.conftest import ANCHOR, LICENSE, TOKEN
from tests.helpers import (
    FakeClock,
    cli_env,
    finish,
    ledger_count,
    run_cli,
    signal_after,
    spawn_cli,
    spawn_serving_daemon,
)

BRUSSELS = ZoneInfo("Europe/Brussels")


def make_config(db_url: str, sim: Simulator, token: str = TOKEN, budget: int = 500, reserve: int = 50,
                lease_seconds: int = 45, names: tuple[str, ...] = (LICENSE,)) -> Config:
    return Config(
        database=DatabaseConfig(url=db_url),
        api=ApiConfig(base_url=sim.base_url, daily_budget=budget, reserve=reserve, max_attempts=2),
        licenses=tuple(LicenseConfig(name=n, token=SecretStr(token)) for n in names),
        schedule=ScheduleConfig(lease_seconds=lease_seconds),
    )


@pytest.fixture
def db(db_url: str) -> Any:
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_ten_restarts_with_a_bad_token_send_exactly_one_request(
    db_url: str, db: Engine, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(db_url, sim.base_url, token="not-the-right-token")
    outputs = [run_cli(["run", "--once"], env, cwd=tmp_path).output for _ in range(10)]
    assert sim.stats()["requests"] == 1
    assert sim.stats()["errors"] == {1002: 1}
    assert "credentials" in outputs[0] or "1002" in outputs[0]
    status = run_cli(["status", "--json"], env, cwd=tmp_path)
    assert "name or token not valid" in status.output
    # New credentials: the stop sign no longer applies.
    run_cli(["run", "--once"], cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert sim.stats()["requests"] > 1


def test_daily_limit_stops_the_license_until_the_given_time(db_url: str, db: Engine) -> None:
    clock = FakeClock(dt.datetime(2026, 10, 27, 14, 0, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    clock=clock, daily_limit=6)
    sim.start()
    try:
        daemon = Daemon(db, make_config(db_url, sim), clock=clock)
        results = daemon.run_due()
        assert sim.stats()["errors"].get(1003) == 1  # another client's share: we saw it once
        assert any(r.error and "1003" in r.error for r in results)
        with db.connect() as conn:
            until = conn.execute(select(t.license_state.c.blocked_until)).scalar_one()
        assert until == dt.datetime(2026, 10, 28, 0, 0, tzinfo=BRUSSELS)
        requests = sim.stats()["requests"]
        for _ in range(9):  # until the API's midnight nothing is sent
            clock.advance(hours=1)
            daemon.run_due()
        assert clock() < until
        assert sim.stats()["requests"] == requests
        clock.set(until + dt.timedelta(minutes=1))
        sim.set_daily_limit(500)
        daemon.run_due()
        assert sim.stats()["requests"] > requests
        assert sim.stats()["errors"].get(1003) == 1
    finally:
        sim.stop()


def test_module_not_licensed_disables_only_that_resource(
    db_url: str, db: Engine, sim: Simulator, tmp_path: Path
) -> None:
    sim.unlicense("get-giftvoucher")
    env = cli_env(db_url, sim.base_url)
    run_cli(["run", "--once"], env, cwd=tmp_path)
    with db.connect() as conn:
        states = {r.resource: r for r in conn.execute(select(t.sync_state))}
    assert states["gift_vouchers"].disabled_reason
    assert states["products"].last_success_at is not None
    assert "not licensed" in run_cli(["status"], env, cwd=tmp_path).output.replace("\n", " ") or \
        "disabled" in run_cli(["status"], env, cwd=tmp_path).output
    # Licensed again: the next answer with records clears the mark.
    sim.relicense("get-giftvoucher")
    assert run_cli(["backfill", "--resource", "gift_vouchers"], env, cwd=tmp_path).exit_code == 0
    with db.connect() as conn:
        state = conn.execute(select(t.sync_state).where(
            t.sync_state.c.resource == "gift_vouchers")).one()
    assert state.disabled_reason is None and state.last_error is None
    report = json.loads(run_cli(["status", "--json"], env, cwd=tmp_path).stdout)["licenses"][0]
    [gift] = [r for r in report["resources"] if r["resource"] == "gift_vouchers"]
    assert gift["disabled"] is None and gift["last_error"] is None


def test_a_dead_replicas_jobs_are_taken_over_after_its_leases_expire(db_url: str, db: Engine) -> None:
    clock = FakeClock(dt.datetime(2026, 10, 27, 14, 0, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), licenses={LICENSE: TOKEN}, clock=clock)
    sim.start()
    try:
        config = make_config(db_url, sim, lease_seconds=30)
        survivor = Daemon(db, config, clock=clock)
        jobs = [j.name for j in survivor.licenses[0].jobs]
        # The dead replica held every job when it was killed mid-run.
        for job in jobs:
            assert claim(db, LICENSE, job, "dead-replica", clock(), dt.timedelta(seconds=30))
        assert [r for r in survivor.run_due() if r.ran] == []
        assert sim.stats()["requests"] == 0
        clock.advance(seconds=31)
        ran = {r.job for r in survivor.run_due() if r.ran}
        assert ran == set(jobs)
    finally:
        sim.stop()


def test_a_job_is_claimed_only_when_due_and_let_go_only_by_its_holder(db: Engine) -> None:
    now = dt.datetime(2026, 10, 27, 14, 0, tzinfo=dt.UTC)
    ttl, later = dt.timedelta(seconds=30), dt.timedelta(minutes=5)
    with db.begin() as conn:
        first = claim_on(conn, LICENSE, "orders", "a:1:x", now, ttl)
    assert first.taken and first.state.cursor is None  # never run: due, its row made
    with db.begin() as conn:
        finish_on(conn, LICENSE, "orders", "a:1:x", next_run_at=now + later, cursor=42)
    assert holder(db, LICENSE, "orders") is None
    with db.begin() as conn:  # a replica whose timer fired early: not due, told when
        early = claim_on(conn, LICENSE, "orders", "b:2:y", now + dt.timedelta(minutes=1), ttl)
    assert not early.taken and early.due_at == now + later
    with db.begin() as conn:
        due = claim_on(conn, LICENSE, "orders", "b:2:y", now + later, ttl)
    assert due.taken and due.state.cursor == 42 and due.state.lease_owner == "b:2:y"
    with db.begin() as conn:  # held by b: a takes nothing, and its late finish leaves b's lease
        held = claim_on(conn, LICENSE, "orders", "a:1:x", now + later, ttl)
        assert not held.taken and held.due_at is None
        finish_on(conn, LICENSE, "orders", "a:1:x", next_run_at=now + 2 * later)
    assert holder(db, LICENSE, "orders") == "b:2:y"
    with db.begin() as conn:
        finish_on(conn, LICENSE, "orders", "b:2:y", next_run_at=now + 2 * later)
    assert holder(db, LICENSE, "orders") is None


def test_replicas_and_a_backfill_share_one_budget_and_never_run_a_job_twice_at_once(
    server_url: str, tmp_path: Path
) -> None:
    engine = make_engine(server_url)
    migrate(engine)
    sim = Simulator(generate(seed=2, orders=400, anchor=ANCHOR), licenses={LICENSE: TOKEN}, daily_limit=60)
    sim.start()
    sim.inject_fault("slow", count=1000, delay=0.05)  # widen the windows where races could happen
    running: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []
    guard = threading.Lock()
    original = LicenseJobs._execute

    def watched(self: LicenseJobs, job: str, now: dt.datetime, state: Any) -> Any:
        with guard:
            running[job] += 1
            if running[job] > 1:
                overlaps.append(job)
        try:
            return original(self, job, now, state)
        finally:
            with guard:
                running[job] -= 1

    LicenseJobs._execute = watched  # type: ignore[method-assign]
    try:
        config = make_config(server_url, sim, budget=60, reserve=0)
        daemons = [Daemon(make_engine(server_url), config) for _ in range(2)]
        stop = threading.Event()

        failures: list[BaseException] = []

        def churn(daemon: Daemon) -> None:
            try:
                while not stop.is_set():
                    daemon.run_due()
                    with daemon.engine.begin() as conn:  # make every job due again at once
                        conn.execute(update(t.sync_state).values(next_run_at=None))
            except BaseException as exc:  # a thread's error would otherwise vanish
                failures.append(exc)

        threads = [threading.Thread(target=churn, args=(d,)) for d in daemons]
        for th in threads:
            th.start()
        (tmp_path / "syncer.toml").write_text(
            "[api]\ndaily_budget = 60\nreserve = 0\n[resources.orders]\nwindow = 10\nmax_window = 10\n")
        result = run_cli(["backfill"], cli_env(server_url, sim.base_url), cwd=tmp_path)
        deadline = time.monotonic() + 90
        while ledger_count(engine) < 60 and time.monotonic() < deadline:
            time.sleep(0.2)  # the daemons keep spending until the day's budget is gone
        time.sleep(1)
        stop.set()
        for th in threads:
            th.join(60)
        assert not any(th.is_alive() for th in threads)
        assert not failures, failures
        assert result.exit_code in (0, 3), result.output
        assert sim.stats()["requests"] == 60
        assert 1003 not in sim.stats()["errors"]
        assert ledger_count(engine) == 60
        assert overlaps == []
    finally:
        LicenseJobs._execute = original  # type: ignore[method-assign]
        sim.stop()
        engine.dispose()


def test_sigterm_stops_the_daemon_within_ten_seconds(
    db_url: str, db: Engine, sim: Simulator, tmp_path: Path
) -> None:
    sim.inject_fault("slow", count=1000, delay=1.0)
    proc = spawn_cli(["run"], cli_env(db_url, sim.base_url), tmp_path)
    seconds, out = signal_after(proc, sim, 2)
    code = proc.returncode
    # Jobs are cancelled at their next request, not after their retries and windows.
    assert seconds < 5, out
    assert code == 0, out
    assert "stopped mid-run" in out and "stopped" in out.splitlines()[-1]
    assert "Traceback" not in out and "ERROR" not in out
    # Whatever was in flight: the ledger never counts less than the API saw.
    assert ledger_count(db) >= sim.stats()["requests"]


def test_sigterm_exits_in_time_even_when_the_api_hangs(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    """A read that never ends cannot be interrupted; the daemon leaves it behind
    rather than overrun a supervisor's grace period (and get SIGKILLed)."""
    sim.inject_fault("hang", count=1000)
    proc = spawn_cli(["run"], cli_env(sqlite_url, sim.base_url), tmp_path)
    seconds, out = signal_after(proc, sim, 1)
    code = proc.returncode
    assert seconds > STOP_TIMEOUT - 0.5, out  # it waited for the job...
    assert seconds < 10, out  # ...and still exits inside Docker's grace period
    assert code == 0, out
    assert f"still running after {STOP_TIMEOUT:.0f} s: {LICENSE}/" in out  # names the job


def test_sqlite_refuses_a_second_daemon(sqlite_url: str, sim: Simulator, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    migrate(engine)
    first = Daemon(engine, make_config(sqlite_url, sim))
    first.start()
    try:
        for command in (["run"], ["run", "--once"]):  # cron beside a daemon: refused too
            result = run_cli(command, cli_env(sqlite_url, sim.base_url), cwd=tmp_path)
            assert result.exit_code == 1, command
            assert "one daemon" in result.output
    finally:
        first.stop()
        engine.dispose()


def test_a_daemon_killed_on_sqlite_can_be_restarted_at_once(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    """The one-daemon guard knows a holder that died on this host: no false "another
    daemon" for the lease's 45 s after a crash or an OOM kill."""
    env = cli_env(sqlite_url, sim.base_url)
    crashed = spawn_cli(["run"], env, tmp_path)
    signal_after(crashed, sim, 3, signal.SIGKILL)
    again = run_cli(["run", "--once"], env, cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert "one daemon" not in again.output


def test_healthz_and_metrics(db_url: str, db: Engine, sim: Simulator, tmp_path: Path) -> None:
    proc, port = spawn_serving_daemon(cli_env(db_url, sim.base_url), tmp_path)
    try:
        deadline = time.monotonic() + 30
        while sim.stats()["requests"] < 10:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'syncer_requests_spent_today{license="demo"}' in metrics
        assert "syncer_requests_left_today" in metrics and "syncer_quarantine_records" in metrics
        assert "syncer_up 1" in metrics
        assert TOKEN not in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        out = finish(proc, timeout=20)
    assert proc.returncode == 0, out
    assert TOKEN not in out


def test_run_without_a_backfill_catches_up_on_history_then_stays_fresh(db_url: str, db: Engine) -> None:
    clock = FakeClock(dt.datetime(2026, 10, 27, 18, 0, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=600, anchor=ANCHOR), licenses={LICENSE: TOKEN}, clock=clock)
    sim.start()
    config = make_config(db_url, sim)
    config = config.model_copy(update={"resources": {"orders": ResourceConfig(window=50, max_window=400)}})
    try:
        daemon = Daemon(db, config, clock=clock)
        for _ in range(30):
            daemon.run_due()
            clock.advance(minutes=2)
        with db.connect() as conn:
            stored = set(conn.execute(select(t.orders.c.id)).scalars())
        assert stored == {o.id for o in sim.dataset.orders}  # history first, at a growing window
        new = sim.add_orders(3, at=clock())
        clock.advance(minutes=20)
        daemon.run_due()
        with db.connect() as conn:
            stored = set(conn.execute(select(t.orders.c.id)).scalars())
        assert set(new) <= stored
    finally:
        sim.stop()


def test_the_order_cursor_crosses_a_gap_of_missing_ids_wider_than_its_window(
    db_url: str, db: Engine
) -> None:
    """Voided orders can leave a run of ids wider than the window. An empty window
    alone means "nothing new yet"; once the day re-check has stored orders past it,
    the empty window is skipped, so the cursor does not wait there for ever."""
    clock = FakeClock(dt.datetime(2026, 10, 27, 18, 0, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=600, anchor=ANCHOR), licenses={LICENSE: TOKEN}, clock=clock)
    sim.start()
    config = make_config(db_url, sim)
    config = config.model_copy(update={"resources": {"orders": ResourceConfig(window=50, max_window=400)}})

    def cursor() -> int:
        with db.connect() as conn:
            return int(conn.execute(select(t.sync_state.c.cursor).where(
                t.sync_state.c.resource == "orders")).scalar_one())

    try:
        daemon = Daemon(db, config, clock=clock)
        for _ in range(30):
            daemon.run_due()
            clock.advance(minutes=2)
        assert cursor() == sim.dataset.orders.max_id
        added = sim.add_orders(1000, at=clock())
        sim.delete("orders", added[:900])  # 900 ids in a row that will never come
        for _ in range(60):
            daemon.run_due()
            clock.advance(minutes=2)
        assert cursor() == added[-1]
        later = sim.add_orders(3, at=clock())
        clock.advance(minutes=10)
        daemon.run_due()
        assert cursor() == later[-1]  # the id windows see new orders again
        with db.connect() as conn:
            stored = set(conn.execute(select(t.orders.c.id)).scalars())
        assert stored == {o.id for o in sim.dataset.orders}
    finally:
        sim.stop()


def test_coupons_look_past_a_gap_once_a_day(db_url: str, db: Engine) -> None:
    """Coupons have no day re-check to show ids past a gap: an empty window looks
    one max_window further, once an API day (one request)."""
    clock = FakeClock(dt.datetime(2026, 10, 27, 18, 0, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=200, anchor=ANCHOR), licenses={LICENSE: TOKEN}, clock=clock)
    sim.start()
    config = make_config(db_url, sim)
    config = config.model_copy(update={"resources": {"coupons": ResourceConfig(window=50, max_window=400)}})
    coupons = sim.dataset.coupons
    try:
        daemon = Daemon(db, config, clock=clock,
                        jobs=[spec for spec in DEFAULT_JOBS if spec.name == "coupons"])
        for _ in range(10):
            daemon.run_due()
            clock.advance(minutes=10)
        last = coupons.max_id

        def runs(hours: int) -> None:
            for _ in range(6 * hours):
                daemon.run_due()
                clock.advance(minutes=10)

        def looked_ahead() -> int:  # windows past the first empty one after `last`
            return sum(1 for r in sim.request_log if r.function == "get-coupon"
                       and int(r.params.get("start", 0)) > last + 1)

        runs(30)  # nothing new: one look-ahead per API day, not one per run
        coupon_runs = sum(1 for r in sim.request_log if r.function == "get-coupon")
        assert 1 <= looked_ahead() <= 2 < coupon_runs // 5
        template = coupons.get(last)
        assert template is not None
        for new_id in (last + 300, last + 301):  # 299 ids in a row that never come
            coupons.append(replace(template, id=new_id, barcode=f"GAP{new_id}"))
        runs(30)  # the next API day's look-ahead finds them
        with db.connect() as conn:
            stored = set(conn.execute(select(t.coupons.c.id)).scalars())
            cursor = conn.execute(select(t.sync_state.c.cursor).where(
                t.sync_state.c.resource == "coupons")).scalar_one()
        assert {last + 300, last + 301} <= stored
        assert cursor == last + 301
    finally:
        sim.stop()


def test_a_backfill_crosses_a_gap_the_day_recheck_has_seen_past(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    (tmp_path / "syncer.toml").write_text("[resources.orders]\nwindow = 100\nmax_window = 400\n")
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill", "--resource", "orders"], env, cwd=tmp_path).exit_code == 0
    added = sim.add_orders(1000)  # today, on the simulator's (real) clock
    sim.delete("orders", added[:900])
    engine = make_engine(db_url)
    recheck = [spec for spec in DEFAULT_JOBS if spec.name == "orders_recheck"]
    Daemon(engine, make_config(db_url, sim), jobs=recheck).run_due()  # stores the last 100
    result = run_cli(["backfill", "--resource", "orders"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        cursor = conn.execute(select(t.sync_state.c.cursor).where(
            t.sync_state.c.resource == "orders")).scalar_one()
    engine.dispose()
    assert cursor == added[-1]


def test_database_retries_back_off_to_ten_minutes() -> None:
    assert [db_retry_delay(n).total_seconds() for n in range(1, 9)] == [
        30, 60, 120, 240, 480, 600, 600, 600]


def test_healthz_says_503_and_why_when_the_scheduler_or_the_database_is_down(
    sqlite_url: str, sim: Simulator
) -> None:
    from syncer.ops import serve

    def health(daemon: Daemon) -> tuple[int, str]:
        server = serve(daemon, "127.0.0.1", 0)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()
        finally:
            server.shutdown()

    engine = make_engine(sqlite_url)
    migrate(engine)
    daemon = Daemon(engine, make_config(sqlite_url, sim))
    assert health(daemon) == (503, "scheduler not running\n")
    daemon.start()
    try:
        assert health(daemon) == (200, "ok\n")
    finally:
        daemon.stop()
    away = make_engine("postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    down = Daemon(engine, make_config(sqlite_url, sim))
    down.engine = away
    down.scheduler.start()
    try:
        status, body = health(down)
    finally:
        down.scheduler.shutdown(wait=False)
        away.dispose()
        engine.dispose()
    assert status == 503 and body.startswith("database: OperationalError"), body


def test_killing_one_daemon_hands_its_jobs_to_the_other(
    server_url: str, sim: Simulator, tmp_path: Path
) -> None:
    """Two real `syncer run` replicas on one server database; SIGKILL the one holding leases:
    the survivor runs every job the dead one held, without waiting for an operator."""
    (tmp_path / "syncer.toml").write_text("[schedule]\nlease_seconds = 10\n")
    env = cli_env(server_url, sim.base_url)
    engine = make_engine(server_url)
    migrate(engine)
    # The victim's first requests (its credential probe among them) hang for seconds:
    # the jobs it holds are in flight when it dies. Everything after is just slow.
    sim.inject_fault("slow", count=4, delay=5.0)
    sim.inject_fault("slow", count=100_000, delay=0.2)
    state = t.sync_state.c

    def leases_of(proc: subprocess.Popen[str]) -> list[str]:
        with engine.connect() as conn:
            return [r.resource for r in conn.execute(select(state.resource, state.lease_owner))
                    if r.lease_owner and f":{proc.pid}:" in r.lease_owner]

    def planned_after(when: dt.datetime) -> set[str]:
        """Jobs whose next run lies after `when`: someone has run them since."""
        with engine.connect() as conn:
            return {r.resource for r in conn.execute(select(t.sync_state.c.resource,
                                                            t.sync_state.c.next_run_at))
                    if r.next_run_at is not None and r.next_run_at > when}

    victim = spawn_cli(["run"], env, tmp_path)
    survivor: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 30
        while not (leases_of(victim) and sim.stats()["requests"]):
            assert time.monotonic() < deadline and victim.poll() is None
            time.sleep(0.02)
        survivor = spawn_cli(["run"], env, tmp_path)
        while not leases_of(survivor):  # the replica is up and claiming jobs
            assert time.monotonic() < deadline and survivor.poll() is None
            time.sleep(0.02)
        killed_at = utcnow()
        victim.kill()
        finish(victim, timeout=10)
        # The plan first, then the leases: a lease still in the victim's name means the
        # survivor has not run that job since, so the plan read is the victim's.
        done = planned_after(killed_at)
        held = leases_of(victim)
        # A job it finished but died before releasing is planned ahead: nothing is owed.
        owed = [job for job in held if job not in done]
        assert owed, f"the victim held no unfinished job when it died ({held}); nothing to hand over"
        deadline = time.monotonic() + 45
        while True:  # the survivor runs each owed job: it gets planned ahead
            waiting = sorted(set(owed) - planned_after(killed_at))
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        if victim.poll() is None:
            victim.kill()
            finish(victim, timeout=10)
        out = ""
        if survivor is not None:
            survivor.send_signal(signal.SIGTERM)
            out = finish(survivor, timeout=20)
        engine.dispose()
    assert survivor is not None
    assert not waiting, f"the survivor never ran {waiting} of {owed}:\n{out[-8000:]}"
    assert survivor.returncode == 0, out


def test_run_once_exits_1_when_the_credentials_are_refused_and_3_on_a_budget_stop(
    db_url: str, db: Engine, sim: Simulator, tmp_path: Path
) -> None:
    """cron and systemd see what went wrong: exit codes from the outcome table."""
    refused = run_cli(["run", "--once"], cli_env(db_url, sim.base_url, token="not-the-token"),
                      cwd=tmp_path)
    assert refused.exit_code == 1, refused.output
    assert "credentials" in refused.output
    again = run_cli(["run", "--once"], cli_env(db_url, sim.base_url, token="not-the-token"),
                    cwd=tmp_path)
    assert again.exit_code == 1, again.output  # nothing due, nothing sent: still an error
    assert "credentials were refused" in " ".join(again.output.split())
    assert sim.stats()["requests"] == 1
    (tmp_path / "syncer.toml").write_text("[api]\ndaily_budget = 3\nreserve = 0\n")
    spent = run_cli(["run", "--once"], cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert spent.exit_code == 3, spent.output
    assert "requests spent today" in spent.output
    assert sim.stats()["requests"] == 3  # the day's budget, the refused request included


def test_each_job_run_logs_one_line_and_each_day_a_summary(
    db_url: str, db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(dt.datetime(2026, 10, 27, 23, 50, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), licenses={LICENSE: TOKEN}, clock=clock)
    sim.start()
    caplog.set_level(logging.INFO, logger="syncer.daemon")
    try:
        daemon = Daemon(db, make_config(db_url, sim), clock=clock)
        ran = [r for r in daemon.run_due() if r.ran]
        lines = [r.getMessage() for r in caplog.records if r.name == "syncer.daemon"]
        runs = [line for line in lines if " request(s), " in line]
        assert len(runs) == len(ran) == len(DEFAULT_JOBS)
        orders = next(r for r in ran if r.job == "orders")
        line = next(line for line in runs if line.startswith(f"{LICENSE}/orders: "))
        c = orders.counts
        assert (f"{orders.requests} request(s), {c.inserted} inserted, {c.updated} updated, "
                f"{c.deleted} deleted, {c.quarantined} quarantined; cursor {orders.cursor}; "
                "lag never synced before; next run ") in line
        assert c.inserted > 0 and orders.cursor
        assert line.endswith(f"{orders.next_run.astimezone(BRUSSELS):%Y-%m-%d %H:%M:%S} CET")
        assert not any("API day" in line for line in lines)  # the day is not over
        caplog.clear()
        clock.advance(minutes=20)  # past the API's midnight
        # Each job was planned from its run at 23:50, none for 00:10: make one due then.
        with db.begin() as conn:
            conn.execute(update(t.sync_state).where(t.sync_state.c.license == LICENSE,
                                                    t.sync_state.c.resource == "orders")
                         .values(next_run_at=clock()))
        daemon.run_due()
        lines = [r.getMessage() for r in caplog.records if r.name == "syncer.daemon"]
        with db.connect() as conn:
            spent = conn.execute(select(t.request_budget.c.spent).where(
                t.request_budget.c.day == dt.date(2026, 10, 27))).scalar_one()
        summary = [line for line in lines if "API day" in line]
        assert summary == [f"license {LICENSE}: API day 2026-10-27 (Europe/Brussels): {spent} of 450 "
                           "requests spent (daily_budget 500 - reserve 50), "
                           f"{sum(r.written for r in ran)} row(s) written, 0 error(s)"]
        # lag: how old the job's data was when this run began (its last success, 20 min ago)
        assert any("; lag 1200 s; next run " in line for line in lines)
        # Jobs run in parallel threads: several that see the new day, and one that began
        # before midnight and ends after, say nothing more (once per day, and never a
        # summary of the new day as if it were over).
        caplog.clear()
        [lic] = daemon.licenses
        before_midnight = dt.datetime(2026, 10, 27, 23, 59, tzinfo=BRUSSELS)
        threads = [threading.Thread(target=lic.summarize_day, args=(when,))
                   for when in (before_midnight, clock(), clock(), before_midnight)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.getMessage() for r in caplog.records if "API day" in r.getMessage()] == []
        clock.advance(days=1)
        lic.summarize_day(clock())
        [line] = [r.getMessage() for r in caplog.records if "API day" in r.getMessage()]
        assert "API day 2026-10-28 (Europe/Brussels): " in line
    finally:
        for lic in daemon.licenses:
            lic.close()
        sim.stop()


def test_each_job_line_counts_its_own_requests_while_other_jobs_run_beside_it(
    db_url: str, db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Two jobs of one license at once (they share its ledger): each run's line says the
    requests that job sent, the ledger rows carry the job, and the lines add up to the
    ledger."""
    sim = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), licenses={LICENSE: TOKEN})
    sim.start()
    caplog.set_level(logging.INFO, logger="syncer.daemon")
    lic = LicenseJobs(db, make_config(db_url, sim), make_config(db_url, sim).licenses[0], owner="t")
    try:
        lic.run("printers")  # the credentials are accepted: requests no longer go one at a time
        sim.inject_fault("slow", 1, delay=1.5)  # the orders job's request hangs 1.5 s ...
        slow = threading.Thread(target=lic.run, args=("orders",))
        slow.start()
        time.sleep(0.3)
        for job in ("products", "customers", "orders_recheck"):  # ... while these run
            lic.run(job)
        slow.join(20)
        assert not slow.is_alive()
    finally:
        lic.close()
        sim.stop()
    said = {}
    for record in caplog.records:
        found = re.match(rf"{LICENSE}/(\w+): (\d+) request\(s\), ", record.getMessage())
        if found:
            said[found.group(1)] = int(found.group(2))
    assert set(said) == {"printers", "orders", "products", "customers", "orders_recheck"}
    with db.connect() as conn:
        rows = conn.execute(select(t.request_ledger.c.job, t.request_ledger.c.function)).all()
    mine: dict[str, list[str]] = defaultdict(list)
    for job, function in rows:
        mine[job].append(function)
    assert said == {job: len(functions) for job, functions in mine.items()}
    assert said["orders"] == 1 and said["orders_recheck"] == 2  # yesterday and today
    assert sum(said.values()) == len(rows) == sim.stats()["requests"]
    for job, functions in mine.items():  # each row is the job's own function
        assert set(functions) == {registry.BY_NAME[job].resource.function}, job


@pytest.mark.parametrize(("from_day", "reached_day", "audits"), [
    (dt.date(2026, 10, 20), dt.date(2026, 10, 25), 1),  # days of history came: audit
    (dt.date(2026, 10, 25), dt.date(2026, 10, 25), 0),  # one full window of a busy hour
])
def test_the_end_of_a_catch_up_audits_when_it_loaded_history(
    db_url: str, db: Engine, from_day: dt.date, reached_day: dt.date, audits: int
) -> None:
    clock = FakeClock(dt.datetime(2026, 10, 27, 18, 0, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), licenses={LICENSE: TOKEN}, clock=clock)
    sim.start()
    config = make_config(db_url, sim)
    before = clock() - dt.timedelta(hours=1)
    with db.begin() as conn:
        for job in ("invoices", "coupons"):
            conn.execute(insert(t.sync_state).values(license=LICENSE, resource=job,
                                                     last_success_at=before))
        conn.execute(insert(t.sync_state).values(
            license=LICENSE, resource="orders", last_success_at=before, catching_up_since=before,
            catch_up_from_day=from_day, history_first_day=dt.date(2026, 10, 1),
            history_reached_day=reached_day))
    lic = LicenseJobs(db, config, config.licenses[0], owner="t", clock=clock)
    try:
        result = lic.run("orders")  # 300 orders: the window is not full, the history is in
    finally:
        lic.close()
        sim.stop()
    assert result.ran and result.error is None
    with db.connect() as conn:
        state = conn.execute(select(t.sync_state).where(t.sync_state.c.resource == "orders")).one()
        assert state.catching_up_since is None and state.history_reached_day is None
        assert conn.execute(select(func.count()).select_from(t.audit_runs)).scalar_one() == audits


def test_every_job_counts_its_rows_written_from_zero(db_url: str, db: Engine, sim: Simulator) -> None:
    """/metrics reads the counters from its own threads while jobs add to them: every job
    has its key from the start (a key added mid-read fails the read) and shows 0."""
    daemon = Daemon(db, make_config(db_url, sim))
    try:
        assert daemon.rows_written() == {(LICENSE, spec.name): 0 for spec in DEFAULT_JOBS}
        assert (f'syncer_rows_written_total{{license="{LICENSE}",sync_job="orders"}} 0.0'
                in metrics_text(daemon))
    finally:
        for lic in daemon.licenses:
            lic.close()


def test_a_stop_waits_for_the_daily_audit_and_names_it_when_it_cannot(
    db_url: str, db: Engine, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hourly audit runs on the scheduler like a job: a stop waits for it and, past
    its timeout, says it is still running (`syncer run` then names it and exits), instead
    of returning at once and the process's exit waiting for it unseen. The audit of a
    large database is made slow by holding it at its start."""
    started, release = threading.Event(), threading.Event()
    real = audit.run_daily

    def slow(*args: Any, **kwargs: Any) -> int:
        started.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(audit, "run_daily", slow)
    daemon = Daemon(db, make_config(db_url, sim), jobs=[])
    daemon.start()
    try:
        assert started.wait(10)
        assert daemon.running() == ["the daily audit"]
        assert not daemon.stop(timeout=0.5)  # it still runs: the stop says so
        release.set()
        deadline = time.monotonic() + 10
        while daemon.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.running() == []
    finally:
        release.set()
        daemon.stop(timeout=5)
