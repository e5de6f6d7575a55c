"""Helpers shared by the tests: running the CLI, dumping tables for whole-row comparisons."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from syncer import tables as t
from syncer.cli import cli
from syncer.resources import RESOURCES
from syncer.simulator import Simulator, generate
from tests.conftest import CLI_OUTPUTS, LICENSE, TOKEN, database

SYNCED_TABLES = [tbl for r in RESOURCES for tbl in r.tables]


def before_opening() -> str:
    """`--now` for `syncer demo`: today at 06:00 in Brussels, before the simulated shop opens,
    so that no order of today's comes in while a test runs, whatever the hour."""
    return f"{dt.datetime.now(ZoneInfo('Europe/Brussels')):%Y-%m-%d} 06:00"


class FakeClock:
    """A clock the test moves by hand, shared by the daemon, the ledger and the simulator."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self.lock:
            return self.now

    def advance(self, **delta: float) -> None:
        with self.lock:
            self.now += dt.timedelta(**delta)

    def set(self, moment: dt.datetime) -> None:
        with self.lock:
            self.now = moment


def cli_env(db_url: str, base_url: str, token: str = TOKEN, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SYNCER_", "CLOUDPOS_")) or k.startswith("SYNCER_TEST")}
    env.update({"SYNCER_DATABASE_URL": db_url, "CLOUDPOS_BASE_URL": base_url,
                "CLOUDPOS_LICNAME": LICENSE, "CLOUDPOS_TOKEN": token, **extra})
    return env


def run_cli(args: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> Result:
    """The real CLI, in this process (fast); exit code and output as a user sees them."""
    runner = CliRunner()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
    finally:
        os.chdir(old)
    CLI_OUTPUTS.append((" ".join(args), result.output))  # the leak guard reads it
    return result


def backfill(url: str, sim: Simulator, cwd: Path, license: str = LICENSE) -> None:
    """`syncer backfill` of one license from `sim` into `url`, through the CLI; it must succeed."""
    result = run_cli(["backfill"], cli_env(url, sim.base_url, CLOUDPOS_LICNAME=license), cwd=cwd)
    assert result.exit_code == 0, result.output


@contextmanager
def backfilled(kind: str, tmp: Path, *, seed: int, orders: int,
               anchor: dt.date) -> Iterator[tuple[str, Simulator]]:
    """A fresh database of `kind` holding one shop's history, backfilled from a running
    simulator (yielded with it, for the CLI's base URL); both go when the block ends."""
    sim = Simulator(generate(seed=seed, orders=orders, anchor=anchor), licenses={LICENSE: TOKEN})
    with database(kind, tmp) as url:
        sim.start()
        try:
            backfill(url, sim, tmp)
            yield url, sim
        finally:
            sim.stop()


def spawn_cli(args: Sequence[str], env: dict[str, str], cwd: Path, *,
              command: Sequence[str] = (sys.executable, "-m", "syncer")) -> subprocess.Popen[str]:
    """The real CLI in a subprocess (for kills and signals); `command` may name the
    installed console script instead.

    Its output is a pipe: read it with `finish` (or communicate), never `wait`, or a
    chatty child blocks on a full pipe. Faulthandler is on, so `finish` can show where
    a child that does not end is stuck.
    """
    return subprocess.Popen([*command, *args],
                            env={**env, "PYTHONFAULTHANDLER": "1"}, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def signal_after(proc: subprocess.Popen[str], sim: Simulator, requests: int,
                 sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[float, str]:
    """Send `sig` once the simulator has seen `requests`; seconds until the child
    exited, and its output (see `finish`)."""
    deadline = time.monotonic() + 30
    while sim.stats()["requests"] < requests:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    started = time.monotonic()
    proc.send_signal(sig)
    out = finish(proc, timeout=timeout)
    return time.monotonic() - started, out


def kill_slow_backfill(sim: Simulator, env: dict[str, str], cwd: Path, requests: int) -> None:
    """`syncer backfill` against a slowed simulator, SIGKILLed once the simulator has seen
    `requests` (or when it ended by itself)."""
    sim.reset_stats()
    sim.inject_fault("slow", count=1000, delay=0.15)
    proc = spawn_cli(["backfill"], env, cwd)
    deadline = time.monotonic() + 60
    while sim.stats()["requests"] < requests and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    finish(proc, timeout=10)
    sim.clear_faults()


def spawn_serving_daemon(env: dict[str, str], cwd: Path, *,
                         command: Sequence[str] = (sys.executable, "-m", "syncer"),
                         timeout: float = 60) -> tuple[subprocess.Popen[str], int]:
    """`syncer run --http 127.0.0.1:PORT` on a free port, once /healthz answers.

    A free port found here can be taken by someone else before the child binds it;
    the child then exits with "cannot listen there" and is started again elsewhere.
    """
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        proc = spawn_cli(["run", "--http", f"127.0.0.1:{port}"], env, cwd, command=command)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return proc, port
            except OSError:  # refused, reset, timed out, or a 503 before the start
                if time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"/healthz never answered:\n{finish(proc, 10)}") from None
                time.sleep(0.1)
        out = finish(proc, 10)
        if "cannot listen there" not in out:
            raise AssertionError(f"the daemon exited before serving /healthz:\n{out}")
    raise AssertionError("no free port could be bound in three tries")


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's output once it exits; if it does not within `timeout`, fail with
    every thread's stack (SIGABRT makes faulthandler print them)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"the CLI did not exit within {timeout} s:\n{out[-6000:]}") from None
    CLI_OUTPUTS.append((str(proc.args), out))  # the leak guard reads it
    return out


def dump(engine: Engine, *, keep_synced_at: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every synced table as sorted rows (without synced_at unless asked)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in SYNCED_TABLES:
            cols = [c for c in table.columns
                    if keep_synced_at or c.name not in ("synced_at", "deleted_at")]
            rows = conn.execute(select(*cols)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def synced_at_by_table(engine: Engine) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        return {tbl.name: sorted(conn.execute(select(tbl.c.synced_at)).scalars().all())
                for tbl in SYNCED_TABLES}


def pg_writes(engine: Engine) -> dict[str, tuple[int, int, int]]:
    """Postgres's own count of inserted, updated, deleted tuples per synced table.

    A server process flushes its counters when it exits (and now and then while
    idle). So: close our pool, wait until no other connection of this test (same
    application_name) is left, then read once.
    """
    import time

    from sqlalchemy import text

    engine.dispose()
    names = {tbl.name for tbl in SYNCED_TABLES}
    deadline = time.monotonic() + 30
    with engine.connect() as conn:
        while conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND application_name = current_setting('application_name')")).scalar():
            assert time.monotonic() < deadline, "the test's other connections did not close"
            time.sleep(0.05)
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        rows = conn.execute(text(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema()")).all()
    engine.dispose()
    return {r[0]: (r[1], r[2], r[3]) for r in rows if r[0] in names}


def ledger_count(engine: Engine) -> int:
    from sqlalchemy import func

    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.request_ledger)).scalar_one())
