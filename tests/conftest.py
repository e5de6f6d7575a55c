"""Shared fixtures: real SQLite, Postgres and MariaDB databases, the simulator over real HTTP,
and the secrets guard.

Secrets guard (`leaks`, autouse for every test): every log record (DEBUG and up, any
logger), everything the test printed (capfd), every text a test hands to `leaks.add`
(subprocess output, status, metrics pages, exception texts) and the test's own
failure report are searched for TOKEN; a hit fails the test.

Postgres: `SYNCER_TEST_PG_URL` (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
Each test gets its own schema, so tests can run in parallel. A test that needs
Postgres *fails* when it cannot reach it; only `SYNCER_TEST_SKIP_PG=1`, set by
hand on a machine without Postgres, turns that into a skip (CI never sets it).

MariaDB (or MySQL 8): `SYNCER_TEST_MARIADB_URL` (default mysql://root@127.0.0.1:3306,
a server URL without a database). Each test gets its own database; as with Postgres,
a test fails when the server is away, unless `SYNCER_TEST_SKIP_MARIADB=1`.

`DATABASES` names the three; `database(kind, tmp)` makes a fresh one of a kind. The
`db_url` fixture runs a test once on each of them (`SUITE_DATABASES`); `server_url` runs
a test that needs a database shared by several processes (replicas, migrations at once)
on each of `SERVER_DATABASES`; `pg_url` is for what only Postgres has.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import settings
from sqlalchemy import Engine

from syncer import cli as cli_module
from syncer.db import make_engine, migrate
from syncer.dialects import with_driver
from syncer.redact import install_log_redaction
from syncer.simulator import Simulator, generate

# A shell starting the tests as a background job (`pytest &` in a script) makes them
# ignore SIGINT, and the CLIs they spawn would inherit that: the Ctrl-C tests would
# then see nothing happen. A handled SIGINT becomes the default again in a child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

MARIADB_URL = os.environ.get("SYNCER_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306").rstrip("/")
DATABASES = ("sqlite", "postgresql", "mariadb")
SUITE_DATABASES = DATABASES
SERVER_DATABASES = ("postgresql", "mariadb")
PG_URL = os.environ.get("SYNCER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TOKEN = "demo-token-7f3a9c2e"  # long and unusual, so a leak is easy to find
LICENSE = "demo"
ANCHOR = dt.date(2026, 10, 27)  # two days after the autumn DST change in Brussels

install_log_redaction()

# Every property test draws the same cases on every run (CI included), so that a red run
# is a change's doing, not a new draw's; `SYNCER_HYPOTHESIS_RANDOM=1` draws fresh ones,
# and a case that breaks a rule is kept as a test of its own.
settings.register_profile("same-draws", derandomize=True, database=None)
settings.register_profile("fresh-draws", derandomize=False)
settings.load_profile("fresh-draws" if os.environ.get("SYNCER_HYPOTHESIS_RANDOM") == "1"
                      else "same-draws")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False, help="run slow tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out (deselect, not skip) the `slow` tests unless --slow is given."""
    if config.getoption("--slow"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


def _pg_admin() -> Engine:
    # pre_ping: a test may restart the server (tests/reliability) between setup and teardown.
    return sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh Postgres schema as a database URL, dropped afterwards; fails if Postgres is away."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("SYNCER_TEST_SKIP_PG") == "1":
            pytest.skip(f"Postgres unreachable and SYNCER_TEST_SKIP_PG=1: {exc}")
        pytest.fail(f"Postgres is required for this test and is unreachable at {PG_URL}: {exc}")
    try:
        # application_name tells this test's connections apart (see helpers.pg_writes).
        yield f"{PG_URL}?options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh Postgres schema for this test, as a database URL."""
    with pg_schema() as url:
        yield url


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh MariaDB database as a URL, dropped afterwards; fails if MariaDB is away."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(with_driver(f"{MARIADB_URL}/"), isolation_level="AUTOCOMMIT",
                             pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("SYNCER_TEST_SKIP_MARIADB") == "1":
            pytest.skip(f"MariaDB unreachable and SYNCER_TEST_SKIP_MARIADB=1: {exc}")
        pytest.fail(f"MariaDB is required for this test and is unreachable at {MARIADB_URL}: {exc}")
    try:
        yield f"{MARIADB_URL}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


@contextmanager
def database(kind: str, tmp: Path, name: str = "syncer") -> Iterator[str]:
    """A fresh database of `kind` (one of DATABASES), as a URL: a SQLite file in `tmp`,
    a Postgres schema or a MariaDB database."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/{name}.db"
    elif kind == "postgresql":
        with pg_schema() as url:
            yield url
    elif kind == "mariadb":
        with mariadb_database() as url:
            yield url
    else:
        raise ValueError(f"unknown database kind {kind!r}; one of {DATABASES}")


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/syncer.db"


@pytest.fixture(params=SUITE_DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test runs once on SQLite, once on Postgres and once on MariaDB."""
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=SERVER_DATABASES)
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test runs on each database that several processes share (not SQLite's one
    writer): Postgres and MariaDB."""
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A small simulator on a free port, license `demo` with TOKEN."""
    simulator = Simulator(generate(seed=1, orders=600, anchor=ANCHOR), licenses={LICENSE: TOKEN})
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "syncer"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog


# --- secrets --------------------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record must not hide what it carried
            text = f"{record.msg!r} {record.args!r}"
        with self._guard:
            self.texts.append(text)


# What the CLI printed during the current test (tests.helpers.run_cli and finish add
# to it), so the leak guard sees every command's output without each test saying so.
CLI_OUTPUTS: list[tuple[str, str]] = []


class Leaks:
    """Texts produced during a test, searched for the token at its end."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.records = 0

    def add(self, where: str, text: object) -> None:
        self.texts.append((where, text if isinstance(text, str) else repr(text)))

    def found(self) -> list[str]:
        return [where for where, text in self.texts if TOKEN in text]


@pytest.fixture(autouse=True)
def leaks(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Leaks]:
    handler = _Capture()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore", "syncer")}

    def capture_everything() -> None:
        if handler not in root.handlers:
            root.addHandler(handler)
        for name in levels:
            logging.getLogger(name).setLevel(logging.DEBUG)

    # The CLI replaces the root handlers and quiets httpx: capture again after it did.
    original_setup = cli_module.setup_logging

    def setup_and_capture(level: str, fmt: str) -> None:
        original_setup(level, fmt)
        capture_everything()

    monkeypatch.setattr(cli_module, "setup_logging", setup_and_capture)
    capture_everything()
    guard = Leaks()
    CLI_OUTPUTS.clear()
    try:
        yield guard
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out, err = capfd.readouterr()
    guard.add("stdout", out)
    guard.add("stderr", err)
    for text in handler.texts:
        guard.add("log record", text)
    for command, output in CLI_OUTPUTS:
        guard.add(f"output of `syncer {command}`", output)
    CLI_OUTPUTS.clear()
    guard.records = len(handler.texts)
    where = guard.found()
    assert not where, f"the token leaked into: {sorted(set(where))}"
    # Hand the captured output back, so a failing test still shows it.
    print(out, end="")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, Any, None]:
    """A failure's own report (exception text, captured sections) must not show the token."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    texts = [report.longreprtext, *(content for _, content in report.sections)]
    if any(TOKEN in text for text in texts):
        report.outcome = "failed"
        report.longrepr = f"the token leaked into the {report.when} report of {item.nodeid}"
