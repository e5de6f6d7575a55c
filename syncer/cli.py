"""The `syncer` command line: the only place that joins config, database, client and sync."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import SecretStr
from rich.text import Text
from sqlalchemy import Engine, false, select, update
from sqlalchemy.exc import SQLAlchemyError

from syncer import dialects, labels, outcomes, reports, views, writers
from syncer import resources as res
from syncer import tables as t
from syncer.backfill import INTERRUPTED, INTERRUPTED_NOTE, Backfill, Reporter, Summary
from syncer.client import BudgetExhausted, CloudPosError, RequestRefused
from syncer.config import (
    ApiConfig,
    Config,
    ConfigError,
    CsvDialectName,
    DatabaseConfig,
    LicenseConfig,
    load_config,
)
from syncer.db import (
    alembic_config,
    connect_problem,
    describe,
    error_summary,
    make_engine,
    migrate,
)
from syncer.labels import LANGUAGES
from syncer.ledger import api_day, license_status, utcnow
from syncer.outcomes import EXIT_BUDGET, EXIT_ERROR, EXIT_OK, EXIT_USAGE
from syncer.redact import install_log_redaction, redact
from syncer.runtime import Runtime
from syncer.status import build as build_status
from syncer.status import to_json as status_json
from syncer.views import console, errors

log = logging.getLogger("syncer")


# `syncer run` waits this long for running jobs on SIGTERM: with the exit itself it
# stays well inside Docker's 10 s grace, even on a loaded machine.
STOP_TIMEOUT = 6.0


class TextFormatter(logging.Formatter):
    """Log lines for people: the time in UTC, ISO 8601 with its offset, so that a line
    never reads as a local time (`2026-12-01T08:31:16.365+00:00 INFO ...`)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")


# What every LogRecord has; anything else on a record came from a call's `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """`--log-format json`: one object per line with the time, level, logger and message,
    and every field the line's figures come from (a log call's `extra=`: license, job,
    requests, rows, cursor, lag_seconds, next_run, outcome...), so a log store can filter
    and sum them without parsing the text.

    The standard library's formatter, extended: the fields already travel on the record
    through `extra`, and this is the one place that renders them. python-json-logger
    would do the same for a dependency; structlog would change every log call and the
    redaction hook (`syncer.redact`) that guards the stdlib records. String fields are
    redacted here, since `extra` is set after that hook runs."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in payload:
                payload[key] = redact(value) if isinstance(value, str) else value
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, default=str)


def _only_upgrades(record: logging.LogRecord) -> bool:
    return record.levelno > logging.INFO or record.getMessage().startswith("Running ")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning for the user (a token file others can read) as one line, not source code."""
    errors.print(Text.assemble(("warning:", "yellow"), f" {message}"), highlight=False)


def setup_logging(level: str, fmt: str) -> None:
    install_log_redaction()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every URL at INFO; the redaction covers it, but it is noise by default.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("httpcore").setLevel(max(logging.WARNING, root.level))
    # APScheduler logs every job it adds and runs at INFO; our own lines say more.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    # Alembic says which engine it talks to, and each upgrade it runs: for `syncer migrate`
    # the upgrades are the news (see migrate_cmd); for the demo, a backfill or any other
    # command they are noise unless --log-level debug.
    logging.getLogger("alembic").setLevel(logging.DEBUG if root.level <= logging.DEBUG
                                          else logging.WARNING)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.NOTSET)
    warnings.showwarning = _show_warning


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    errors.print(Text.assemble(("error:", "red"), f" {redact(message)}"), highlight=False)
    sys.exit(code)


def cannot_write(path: Path | None, exc: OSError) -> NoReturn:
    """An `--out` file that could not be written, in one line (nothing was left half
    written: see `writers.write_file`). A path that cannot be used is a usage error; a
    disk that refused the bytes (full, read-only, a quota) is an error."""
    usage = isinstance(exc, FileExistsError | FileNotFoundError | IsADirectoryError
                       | NotADirectoryError | PermissionError)
    why = "it exists; add --force to replace it" if isinstance(exc, FileExistsError) else (
        exc.strerror or str(exc))
    fail(f"--out {path}: cannot write it ({why})", EXIT_USAGE if usage else EXIT_ERROR)


def confirm(question: str) -> None:
    """Ask on the terminal; a "no" ends the command, having changed nothing (exit 1). A
    Ctrl-C at the question is an interruption, as anywhere else (130)."""
    if not click.confirm(question, default=False):
        errors.print("cancelled, nothing changed", highlight=False)
        sys.exit(EXIT_ERROR)


@contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


class State:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            with friendly_errors():
                self._config = load_config(self.config_path)
        return self._config


def licenses_of(config: Config, names: Sequence[str]) -> list[LicenseConfig]:
    if not config.licenses:
        fail(f"no license configured in {config.source}: add a [[licenses]] entry or set "
             "CLOUDPOS_LICNAME and CLOUDPOS_TOKEN", EXIT_USAGE)
    if not names:
        return list(config.licenses)
    known = {lic.name: lic for lic in config.licenses}
    unknown = [n for n in names if n not in known]
    if unknown:
        fail(f"unknown license {unknown}; configured: {sorted(known)}", EXIT_USAGE)
    return [known[n] for n in dict.fromkeys(names)]  # a name given twice runs once


def licenses_known(engine: Engine, config: Config, names: Sequence[str]) -> list[LicenseConfig]:
    """For commands that read only the database (rebuild, doctor without --fresh): the
    licenses the config names and those the database knows, as `status` lists them; no
    token is needed, since nothing is sent."""
    from syncer.status import stored_licenses  # noqa: PLC0415

    configured = {lic.name: lic for lic in config.licenses}
    with engine.connect() as conn:
        stored = stored_licenses(conn)
    known = {**configured, **{n: LicenseConfig(name=n) for n in sorted(stored - set(configured))}}
    if not known:
        fail(f"no license in {config.source} nor in the database ({describe(engine)}): load "
             "data first with `syncer backfill` (or `syncer demo`)", EXIT_USAGE)
    if not names:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        fail(f"unknown license {unknown}; configured or in the database: {sorted(known)}",
             EXIT_USAGE)
    return [known[n] for n in dict.fromkeys(names)]


def open_database(config: Config, *, migrate_first: bool = True, existing: bool = False,
                  missing_hint: str = "load data first with `syncer backfill`") -> Engine:
    """The configured database, migrated. `existing`: for commands that only read (status,
    report), a SQLite file that is not there is a typo in the path, not a new database;
    `missing_hint` says what makes one."""
    if existing:
        url = dialects.with_driver(config.database.url)
        path = dialects.for_url(url).database_file(url)
        if path is not None and not path.exists():
            origin = ("$SYNCER_DATABASE_URL"
                      if os.environ.get("SYNCER_DATABASE_URL") == config.database.url
                      else f"database.url in {config.source}")
            fail(f"no database at {path} ({origin}); check the path, or {missing_hint}")
    try:
        engine = make_engine(config.database.url)
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.call_on_close(engine.dispose)
        if migrate_first:
            migrate(engine, timezone=config.api.timezone)
            # The views read [reports] from the database: a change applies at once.
            reports.apply_settings(engine, config.reports)
    except (ValueError, ImportError) as exc:
        fail(f"database.url in {config.source}: {exc}", EXIT_USAGE)
    except Exception as exc:
        fail(connect_problem(config.database.url, exc))
    return engine


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (default: $SYNCER_CONFIG, else ./syncer.toml).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.version_option(package_name="cloudpos-syncer")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str, log_format: str) -> None:
    """Keep a SQL database in step with CloudPOS point-of-sale data."""
    setup_logging(log_level, log_format)
    ctx.obj = State(config_path)


# --- backfill -------------------------------------------------------------------


def run_backfill(
    engine: Engine,
    config: Config,
    licenses: Sequence[LicenseConfig],
    resources: Sequence[res.Resource],
    *,
    since: dt.date | None,
    max_requests: int | None,
    quiet: bool = False,
) -> tuple[list[Summary], int]:
    summaries: list[Summary] = []
    exit_code = EXIT_OK
    use_bar = console.is_terminal and not quiet  # quiet: standard output is for --json
    progress = views.backfill_progress(use_bar)
    today = api_day(utcnow(), config.api.tz)
    with progress:
        for lic in licenses:
            reporter = views.RichReporter(progress, engine, today) if use_bar else Reporter()
            with Runtime(engine, config, lic, purpose="backfill", max_requests=max_requests) as rt:
                done, code = Backfill(rt, since=since, reporter=reporter).run(resources)
            summaries.extend(done)
            exit_code = max(exit_code, code)
            if code == INTERRUPTED:
                break  # Ctrl-C ends the whole backfill, not one license's
    return summaries, exit_code


@cli.command()
@click.option("--resource", "resource_names", multiple=True,
              type=click.Choice([r.name for r in res.RESOURCES]), help="Only these resources.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Start order and invoice history at this date (YYYY-MM-DD).")
@click.option("--max-requests", type=click.IntRange(min=0), default=None,
              help="Stop after this many requests (per license); exit 3, rerun continues.")
@click.option("--license", "license_names", multiple=True, help="Only these licenses.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document on standard output: per license and resource the requests, "
                   "rows, cursor, outcome and exit code (docs/operations.md).")
@click.pass_obj
def backfill(state: State, resource_names: tuple[str, ...], since: dt.datetime | None,
             max_requests: int | None, license_names: tuple[str, ...], as_json: bool) -> None:
    """Load history to completion or until the budget or cap; rerun continues where it stopped."""
    from syncer import results  # noqa: PLC0415

    config = state.config
    licenses = licenses_of(config, license_names)
    engine = open_database(config)
    chosen = ([res.get(n) for n in dict.fromkeys(resource_names)] if resource_names
              else list(res.RESOURCES))
    started, began = time.monotonic(), utcnow()
    summaries, code = run_backfill(engine, config, licenses, chosen,
                                   since=since.date() if since else None, max_requests=max_requests,
                                   quiet=as_json)
    if as_json:
        click.echo(results.backfill(summaries, started=began, finished=utcnow(), exit_code=code))
    else:
        views.print_summary(summaries, started, code)
    sys.exit(code)


# --- run ------------------------------------------------------------------------------


@cli.command()
@click.option("--http", "http_addr", default=None, metavar="HOST:PORT",
              help="Serve the status page (/), /healthz and /metrics here (e.g. 0.0.0.0:9108).")
@click.option("--license", "license_names", multiple=True, help="Only these licenses.")
@click.option("--once", is_flag=True, help="Run the jobs that are due once, then exit (for cron).")
@click.option("--json", "as_json", is_flag=True,
              help="With --once: one JSON document on standard output, per license and job the "
                   "requests, rows, cursor, outcome and exit code (docs/operations.md).")
@click.pass_obj
def run(state: State, http_addr: str | None, license_names: tuple[str, ...], once: bool,
        as_json: bool) -> None:
    """The daemon: one scheduled job per resource within the budget; stops cleanly on SIGTERM/SIGINT."""
    import signal  # noqa: PLC0415

    from syncer.daemon import Daemon, DaemonConflict  # noqa: PLC0415

    if as_json and not once:
        raise click.UsageError("--json goes with --once (the daemon logs; --log-format json "
                               "makes its lines JSON)", click.get_current_context())
    config = state.config
    licenses = licenses_of(config, license_names)
    if len(licenses) != len(config.licenses):
        config = config.model_copy(update={"licenses": tuple(licenses)})
    engine = open_database(config)
    daemon = Daemon(engine, config)
    if once:
        began = utcnow()
        try:
            ran = [r for r in daemon.run_once() if r.ran]
        except DaemonConflict as exc:
            fail(str(exc))
        # The worst outcome's exit code (see syncer.outcomes): refused credentials 1, a
        # budget or license stop 3, so that cron and systemd see them. Credentials
        # refused earlier stay an error while nothing is due (and so nothing is sent).
        code = max((r.exit_code for r in ran), default=EXIT_OK)
        refused: dict[str, str] = {}
        with engine.connect() as conn:
            for lic in licenses:
                stop = license_status(conn, lic.name, lic.fingerprint(config.api.base_url))
                if stop.auth_rejected:
                    refused[lic.name] = (f"credentials were refused ({stop.auth_reason}); "
                                         f"{outcomes.CREDENTIALS_ADVICE}")
                    code = max(code, outcomes.REFUSED_BEFORE.exit_code)
        if as_json:
            from syncer import results  # noqa: PLC0415

            click.echo(results.run_once(ran, [lic.name for lic in licenses], refused,
                                        started=began, finished=utcnow(), exit_code=code))
        else:
            views.print_run_once(ran, refused)
        sys.exit(code)
    host, port = None, 0
    if http_addr:
        host, _, port_text = http_addr.rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            fail(f"--http {http_addr!r}: use HOST:PORT with a port from 1 to 65535", EXIT_USAGE)
        port = int(port_text)
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # Only a list append: a handler that takes a lock (an Event, a logging
        # handler) can deadlock on the very lock the main thread was holding.
        received.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:  # before serving: a refused second daemon must not first say it serves a page
        daemon.claim_writer()
    except DaemonConflict as exc:
        fail(str(exc))
    server = None
    if host is not None:
        from syncer.ops import serve  # noqa: PLC0415

        try:  # before the daemon starts: a port in use must not leave a daemon behind
            server = serve(daemon, host, port)
        except OSError as exc:
            daemon.release_writer()
            fail(f"--http {http_addr}: cannot listen there: {exc.strerror or exc}", EXIT_USAGE)
    try:
        daemon.start()
    except DaemonConflict as exc:
        if server is not None:
            server.shutdown()
        fail(str(exc))
    while not received:
        time.sleep(0.2)
    log.info("received %s; stopping", signal.Signals(received[0]).name)
    if server is not None:
        server.shutdown()
    if not daemon.stop(timeout=STOP_TIMEOUT):
        # A job is stuck in a socket read (a hanging API: its transaction has not begun)
        # or the daily audit reads a large database (it records at its end): leaving it
        # loses nothing; waiting would overrun the grace period a supervisor gives
        # (Docker: 10 s) and end in SIGKILL anyway.
        log.warning("still running after %.0f s: %s; exiting without it (what it committed "
                    "stays, the rest runs again on the next start)", STOP_TIMEOUT,
                    ", ".join(daemon.running()) or "a run")
        logging.shutdown()
        os._exit(EXIT_OK)
    log.info("stopped")


# --- migrate / check ----------------------------------------------------------------


@cli.command("migrate")
@click.pass_obj
def migrate_cmd(state: State) -> None:
    """Bring the database schema to the newest revision."""
    if logging.getLogger().level == logging.INFO:  # the upgrades it runs, not Alembic's chatter
        migration = logging.getLogger("alembic.runtime.migration")
        migration.setLevel(logging.INFO)
        migration.addFilter(_only_upgrades)
    engine = open_database(state.config)
    console.print(f"schema is up to date in {describe(engine)}")


@cli.command()
@click.option("--online", is_flag=True, help="Spend one request per license to verify the credentials.")
@click.pass_obj
def check(state: State, online: bool) -> None:
    """Validate the config and the database (and, with --online, the credentials)."""
    config = state.config
    problems = 0
    if config.licenses:
        console.print(f"config: {config.source}: ok ({len(config.licenses)} license(s))")
    else:
        # Not an error (a config may be written before its first license), but nothing
        # would be synced: say so rather than "ok".
        console.print(Text(
            f"config: {config.source}: no license configured: nothing would be synced. Add a "
            "[[licenses]] entry, or set CLOUDPOS_LICNAME and CLOUDPOS_TOKEN", style="yellow"),
            highlight=False)
    for lic in config.licenses:
        if not lic.resolved_token().get_secret_value():
            where = f"${lic.token_env}" if lic.token_env else "token"
            console.print(Text(f"license {lic.name}: no token ({where} is empty)", style="red"))
            problems += 1
    # A check never writes the schema: a SQLite path that is not there is a typo (say so,
    # do not create it), and an old schema is reported, not upgraded. --online records its
    # request in the ledger, so it needs a current schema: `syncer migrate` first, which is
    # also what makes a new database (the README's order: migrate, check --online, backfill).
    engine = open_database(config, migrate_first=False, existing=True,
                           missing_hint="create it with `syncer migrate`, then check again")
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:
        fail(connect_problem(engine.url, exc))
    if current == head:
        console.print(f"database: {describe(engine)}: ok (revision {current})")
        try:  # a write that changes nothing: a read-only file or a missing grant shows here
            with engine.connect() as conn, conn.begin() as tx:
                conn.execute(update(t.request_budget).where(false())
                             .values(spent=t.request_budget.c.spent))
                tx.rollback()
        except SQLAlchemyError as exc:
            console.print(Text(f"database: cannot write: {redact(error_summary(exc))}",
                               style="red"))
            problems += 1
    else:
        found = "no schema yet" if current is None else f"revision {current}, newest {head}"
        console.print(f"database: {describe(engine)}: {found}; run `syncer migrate`"
                      + (" (then check --online again: the request it spends is recorded in "
                         "the schema)" if online else ""))
        problems += 1
    if online and not config.licenses:
        console.print(Text("--online: no license configured, so no credentials were verified",
                           style="red"), highlight=False)
        problems += 1
    if online and current == head:
        for lic in config.licenses:
            try:
                with Runtime(engine, config, lic, purpose="check") as rt:
                    rt.client.fetch("get-printers")
                console.print(f"license {lic.name}: credentials accepted")
            except (CloudPosError, Exception) as exc:
                # A stop's message may name the license itself: the line has just named it.
                said = redact(str(exc)).removeprefix(f"license {lic.name!r}: ")
                console.print(Text(f"license {lic.name}: {said}", style="red"))
                problems += 1
    sys.exit(EXIT_ERROR if problems else EXIT_OK)


# --- config / init ---------------------------------------------------------------------


@cli.command("config")
@click.pass_obj
def config_cmd(state: State) -> None:
    """The effective configuration: every value, where it came from (the file, the
    environment or the default), secrets masked."""
    from syncer.config import explain, gather  # noqa: PLC0415

    with friendly_errors():
        gathered = gather(state.config_path)
    views.print_config(gathered.file, explain(gathered))


@cli.command()
@click.option("--license", "license_name", required=True,
              help="The license's name (its licname).")
@click.option("--database-url", default=None,
              help="Where to sync to (default: a SQLite file cloudpos.db), e.g. "
                   "postgresql://user@host/db.")
@click.option("--token-env", default=None,
              help="The environment variable the token is read from (default: "
                   "CLOUDPOS_TOKEN_<LICENSE>); the token is never written to the file.")
@click.option("--path", "path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("syncer.toml"), show_default=True, help="The file to write.")
def init(license_name: str, database_url: str | None, token_env: str | None, path: Path) -> None:
    """Write a commented syncer.toml for one license; never overwrites a file."""
    from syncer.config import default_token_env, init_text  # noqa: PLC0415

    with friendly_errors():
        text = init_text(license_name, token_env=token_env, database_url=database_url)
    try:
        with path.open("x", encoding="utf-8") as out:  # "x": never overwrite, even in a race
            out.write(text)
    except FileExistsError:
        fail(f"{path} exists; it was left as it is. Edit it, or give another --path", EXIT_USAGE)
    except OSError as exc:
        fail(f"{path}: cannot write it ({exc.strerror or exc})", EXIT_USAGE)
    variable = token_env or default_token_env(license_name)
    chosen = "" if path == Path("syncer.toml") else f"--config {path} "
    console.print(
        f"wrote {path} for license {license_name}. Next:\n"
        f"  export {variable}='<the token of {license_name}>'\n"
        f"  syncer {chosen}migrate             # makes the database and its tables\n"
        f"  syncer {chosen}check --online      # one request: are the name and token right?\n"
        f"  syncer {chosen}backfill            # loads the history (resumable)\n"
        f"then `syncer {chosen}run` keeps it fresh; `syncer {chosen}config` shows every setting.",
        markup=False, highlight=False)


# --- status --------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(state: State, as_json: bool) -> None:
    """Per license (configured or in the database): requests used, left and planned today, stop
    signs; per job: rows, cursor, last success, next run, errors."""
    config = state.config
    engine = open_database(config, existing=True)
    report = build_status(engine, config)
    if as_json:
        click.echo(json.dumps(status_json(report), indent=2))
    else:
        views.print_status(report)


# --- unblock ------------------------------------------------------------------------------


def operator() -> str:
    """Who runs this command, for the record of a lift: user@host."""
    import getpass  # noqa: PLC0415
    import socket  # noqa: PLC0415

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


@cli.command()
@click.option("--license", "license_names", multiple=True, required=True,
              help="The license whose stop to lift (repeat for more).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def unblock(state: State, license_names: tuple[str, ...], yes: bool) -> None:
    """Lift a license's stop on purpose (credentials refused, or paused by a 1003/1004),
    once its cause is fixed; the next request is sent. Keeps who lifted it."""
    from syncer.ledger import lift_stop, stops_in_force  # noqa: PLC0415

    config = state.config
    engine = open_database(config, existing=True)
    now, tz = utcnow(), config.api.tz
    configured = {lic.name for lic in config.licenses}
    with engine.connect() as conn:
        stored = set(conn.execute(select(t.license_state.c.license)).scalars())
        unknown = [name for name in license_names if name not in configured | stored]
        if unknown:
            fail(f"unknown license {unknown}: neither in the config nor stopped in this "
                 f"database (stopped there: {', '.join(sorted(stored)) or 'none'})", EXIT_USAGE)
        found = {name: stops_in_force(conn, name, now, tz) for name in dict.fromkeys(license_names)}
    for name, stops in found.items():
        if not stops:
            console.print(f"license {name}: not stopped; nothing to lift", markup=False,
                          highlight=False)
    chosen = [name for name, stops in found.items() if stops]
    if not chosen:
        return
    what = "lift " + "; ".join(f"license {name}: {'; '.join(found[name])}" for name in chosen)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"unblock would {what}; confirm with --yes (no terminal to ask on)", EXIT_USAGE)
        console.print("A refused license's next request tries its credentials again (one bad "
                      "login if they are still wrong); a lifted pause sends before the API's "
                      "time.", markup=False, highlight=False)
        confirm(f"This will {what}. Go on?")
    by = operator()
    for name in chosen:
        lifted = lift_stop(engine, name, by=by, now=now, tz=tz)
        console.print(f"license {name}: lifted by {by}: {'; '.join(lifted) or 'nothing (gone since)'}",
                      markup=False, highlight=False)


# --- report ------------------------------------------------------------------------------


def day_range(date_from: dt.datetime | None, date_to: dt.datetime | None
              ) -> tuple[dt.date | None, dt.date | None]:
    """`--from`/`--to` as days; a usage error when they are the wrong way round."""
    if date_from and date_to and date_from > date_to:
        fail(f"--from {date_from:%Y-%m-%d} is after --to {date_to:%Y-%m-%d}", EXIT_USAGE)
    return (date_from.date() if date_from else None), (date_to.date() if date_to else None)


def require_data_for(engine: Engine, license_name: str) -> None:
    """A usage error unless the database holds data of this license (a typo, else)."""
    with engine.connect() as conn:
        synced = set(conn.execute(select(t.sync_state.c.license).distinct()).scalars())
    if license_name not in synced:
        fail(f"no data for license {license_name!r} in this database; it holds: "
             f"{', '.join(sorted(synced)) or 'none yet'}", EXIT_USAGE)


@cli.command(epilog="Reports: " + ", ".join(reports.NAMES) + " (the report_ prefix may be left out; "
             "without a NAME, the list).")
@click.argument("name", required=False)
@click.option("--from", "date_from", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="First business day (YYYY-MM-DD), inclusive.")
@click.option("--to", "date_to", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Last business day (YYYY-MM-DD), inclusive.")
@click.option("--license", "license_name", default=None, help="Only this license.")
@click.option("--format", "fmt", type=click.Choice(list(writers.WRITERS)), default=None,
              help="table (for people; the default), csv or json (for scripts), xlsx (a "
                   "workbook, with --out); default: from the suffix of --out, else table.")
@click.option("--csv", "csv_dialect", type=click.Choice(list(writers.CSV_DIALECTS)), default=None,
              help="CSV dialect: rfc4180 for scripts, excel-be for a spreadsheet in a Belgian "
                   "locale (; and decimal comma); default: [reports] csv, else rfc4180.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (replaced when complete) instead of standard output.")
@click.pass_obj
def report(state: State, name: str | None, date_from: dt.datetime | None,
           date_to: dt.datetime | None, license_name: str | None, fmt: str | None,
           csv_dialect: CsvDialectName | None, out_path: Path | None) -> None:
    """Print one of the reporting views (the same rows any SQL tool sees); no NAME: list them."""
    if name is None:
        console.print(views.report_list())
        return
    try:
        chosen = reports.get(name)
    except KeyError:
        fail(f"unknown report {name!r}; choose one of: {', '.join(reports.NAMES)}", EXIT_USAGE)
    if chosen.day_column is None and (date_from or date_to):
        fail(f"{chosen.name} has no day column; --from/--to do not apply", EXIT_USAGE)
    if fmt is None:
        suffixed = writers.for_path(out_path) if out_path is not None else None
        fmt = "csv" if csv_dialect is not None else suffixed.name if suffixed else "table"
    if csv_dialect is not None and fmt != "csv":
        fail(f"--csv {csv_dialect} applies to CSV, not to --format {fmt}", EXIT_USAGE)
    since, until = day_range(date_from, date_to)
    config = state.config
    writer = writers.get(fmt, csv=csv_dialect or config.reports.csv)
    if writer.needs_file and out_path is None:
        fail(f"--format {fmt} writes a file: add --out FILE", EXIT_USAGE)
    engine = open_database(config, existing=True)
    if license_name is not None:
        require_data_for(engine, license_name)
    rows = reports.fetch(engine, chosen, since=since, until=until, license=license_name)
    header = reports.header(engine, rows, license=license_name, since=since, until=until,
                            now=utcnow())
    try:
        writers.write(writer, writers.Extract(chosen, rows, config.api.tz, header=header), out_path)
    except OSError as exc:
        cannot_write(out_path, exc)
    if out_path is not None:
        errors.print(f"{chosen.name}: {len(rows)} row(s) written to {out_path} ({writer.summary})",
                     highlight=False)


@cli.command()
@click.option("--period", default=None, help="A month (2026-11) or a quarter (2026-Q4).")
@click.option("--from", "date_from", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Instead of --period: the first day of the first month (YYYY-MM-DD).")
@click.option("--to", "date_to", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="With --from: the last day of the last month (YYYY-MM-DD).")
@click.option("--license", "license_name", default=None,
              help="Whose pack (default: the database's only license).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The workbook to write (default: pack-LICENSE-PERIOD.xlsx here).")
@click.option("--lang", "language", type=click.Choice(LANGUAGES), default=None,
              help="The pack's language (default: [reports] language, else en).")
@click.pass_obj
def export(state: State, period: str | None, date_from: dt.datetime | None,
           date_to: dt.datetime | None, license_name: str | None, out_path: Path | None,
           language: str | None) -> None:
    """Write the period's pack for an accountant: one xlsx workbook, a summary first (totals
    per VAT rate, the audit's result), then the daily receipts book, VAT per rate, payments,
    register days, documents and tickets (docs/reporting.md)."""
    from syncer import export as pack_module  # noqa: PLC0415

    if (period is None) == (date_from is None and date_to is None):
        fail("choose the pack's period: --period 2026-11 (or 2026-Q4), or --from and --to",
             EXIT_USAGE)
    try:
        if period is not None:
            chosen = pack_module.parse_period(period)
        elif date_from is None or date_to is None:
            fail("--from and --to go together", EXIT_USAGE)
        else:
            chosen = pack_module.period_between(date_from.date(), date_to.date())
        config = state.config
        engine = open_database(config, existing=True)
        license = pack_module.license_of(engine, license_name)
    except pack_module.ExportError as exc:
        fail(str(exc), EXIT_USAGE)
    path = out_path or Path(f"pack-{license}-{chosen.name.replace('..', '_')}.xlsx")
    pack = pack_module.build(engine, config, license=license, period=chosen, now=utcnow(),
                             labels=labels.load(language or config.reports.language))
    try:
        writers.write_file(path, lambda out: pack_module.write(pack, out))
    except OSError as exc:
        fail(f"--out {path}: cannot write it ({exc.strerror or exc})", EXIT_USAGE)
    problems = (f"; the audit found {pack.problems} open problem(s), said on its first sheet"
                if pack.problems else "")
    errors.print(f"pack of license {license} for {chosen.described} written to {path}{problems}",
                 markup=False, highlight=False)


# --- audit ---------------------------------------------------------------------------------


@cli.command()
@click.option("--license", "license_name", default=None, help="Only this license.")
@click.option("--from", "date_from", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="First business day (YYYY-MM-DD) of the ticket and open-day checks.")
@click.option("--to", "date_to", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Last business day (YYYY-MM-DD), inclusive; default yesterday.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts and monitoring.")
@click.pass_obj
def audit(state: State, license_name: str | None, date_from: dt.datetime | None,
          date_to: dt.datetime | None, as_json: bool) -> None:
    """Check the stored data (totals, payments, id gaps, quarantine, stale lists, empty open
    days); sends no request. Exit 0: nothing found; 4: problems found."""
    from syncer import audit as audit_module  # noqa: PLC0415

    since, until = day_range(date_from, date_to)
    config = state.config
    engine = open_database(config, existing=True)
    if license_name is not None:
        require_data_for(engine, license_name)
    result = audit_module.run(engine, config, license=license_name, since=since, until=until)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        for line in audit_module.describe(result, config.api.tz):
            console.print(line, highlight=False)
    sys.exit(audit_module.EXIT_PROBLEMS if result["problems"] else EXIT_OK)


# --- call -------------------------------------------------------------------------------


@cli.command()
@click.argument("function")
@click.argument("params", nargs=-1)
@click.option("--license", "license_name", default=None, help="Which license (default: the first).")
@click.option("--raw", is_flag=True,
              help="Send FUNCTION and the parameters as given, even where the API's page does "
                   "not list them (a bare KEY is sent as a flag).")
@click.pass_obj
def call(state: State, function: str, params: tuple[str, ...], license_name: str | None,
         raw: bool) -> None:
    """One budgeted raw request (may use the reserve); prints the JSON answer.

    PARAMS are key=value filters and bare flags, e.g. `syncer call get-orders start=1 end=5`."""
    from syncer.client import FUNCTIONS, unlisted_use  # noqa: PLC0415

    given: dict[str, str | None] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not key:
            fail(f"bad parameter {item!r}; use key=value", EXIT_USAGE)
        if key.lower() in ("licname", "token"):
            # Sent after the real credentials, the API would check these instead, and a
            # wrong one would stop the license for everyone (and count a bad login).
            fail(f"{key} cannot be a parameter: the license's credentials come from the "
                 "config (use --license to choose one)", EXIT_USAGE)
        given[key] = value if sep else None
    problem = None if raw else unlisted_use(function, given)
    if problem is not None:
        # Refused before a request is spent: `get-orders start` would send start="" and
        # print the whole order history; an unknown function costs a request for an error.
        known = "\n".join(f"  {spec.shown(name)}" for name, spec in FUNCTIONS.items())
        raise click.UsageError(f"{problem}; nothing was sent. Known functions (filters "
                               f"key=VALUE, flags bare):\n{known}\n--raw sends a request "
                               "this list does not have.", click.get_current_context())
    config = state.config
    lic = licenses_of(config, [license_name] if license_name else [])[0]
    query: dict[str, str | int | None] = {k: v or "" for k, v in given.items()}
    engine = open_database(config)
    try:
        with Runtime(engine, config, lic, purpose="call") as rt:
            page = rt.client.request(function, query)
    except BudgetExhausted as exc:
        fail(str(exc), EXIT_BUDGET)
    except (CloudPosError, RequestRefused) as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")
    click.echo(json.dumps(page.body, indent=2, default=str, ensure_ascii=False))


# --- simulate / demo ---------------------------------------------------------------------


SIMULATED_NOW = ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
NOW_HELP = ("Pretend it is this Brussels time (YYYY-MM-DD HH:MM) at the start: the history "
            "ends there and the simulator's clock runs on from it (default: the real time).")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--orders", default=2000, show_default=True, type=click.IntRange(min=0),
              help="Orders of history, up to the moment it starts; the rest of today's sales "
                   "arrive as their time comes.")
@click.option("--daily-limit", default=500, show_default=True, type=int)
@click.option("--now", "start_at", type=click.DateTime(formats=SIMULATED_NOW), default=None,
              help=NOW_HELP)
@click.option("--anomalies", is_flag=True,
              help="Plant what `syncer audit` must find: a ticket whose payments do not match "
                   "its total, one whose lines do not, and a run of ids never returned.")
def simulate(host: str, port: int, seed: int, orders: int, daily_limit: int,
             start_at: dt.datetime | None, anomalies: bool) -> None:
    """Serve the bundled CloudPOS simulator (license `demo`, token `demo-token`)."""
    from syncer.simulator import live  # noqa: PLC0415

    sim = live(seed, orders, now=start_at, daily_limit=daily_limit, anomalies=anomalies)
    sim.serve_forever(host, port, on_start=lambda url: console.print(
        f"CloudPOS simulator on {url} (licname=demo, token=demo-token); Ctrl-C stops it"))


@cli.command()
@click.option("--db", "db_path", default="cloudpos-demo.db", show_default=True,
              type=click.Path(dir_okay=False), help="SQLite file to sync into.")
@click.option("--orders", default=3000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--now", "start_at", type=click.DateTime(formats=SIMULATED_NOW), default=None,
              help=NOW_HELP)
def demo(db_path: str, orders: int, seed: int, start_at: dt.datetime | None) -> None:
    """Start the simulator, sync everything into a SQLite file, show status and sales."""
    from syncer.simulator import live  # noqa: PLC0415

    started = time.monotonic()
    sim = live(seed, orders, now=start_at)
    base_url = sim.start()
    try:
        config = Config(
            database=DatabaseConfig(url=f"sqlite:///{Path(db_path).resolve()}"),
            api=ApiConfig(base_url=base_url),
            licenses=(LicenseConfig(name="demo", token=SecretStr("demo-token")),),
            source="demo",
        )
        engine = open_database(config)
        console.print(f"Syncing the bundled simulator ({orders} orders) into {db_path} ...")
        summaries, code = run_backfill(engine, config, config.licenses, res.RESOURCES,
                                       since=None, max_requests=None)
    finally:
        sim.stop()
    views.print_summary(summaries, started, code)
    views.print_status(build_status(engine, config))
    console.print(views.sales_per_day(engine, "demo"))
    for name in ("report_daily_sales", "report_vat"):
        console.print(views.last_days_of(engine, reports.get(name), config.api.tz))
    spent = views.counted(sum(s.requests for s in summaries), "request")
    console.print(f"demo done in {time.monotonic() - started:.1f} s; "
                  f"{spent}. Query it: sqlite3 {db_path}, or "
                  f"SYNCER_DATABASE_URL=sqlite:///{db_path} syncer report report_vat")
    sys.exit(code)


# --- rebuild / reset / doctor (the response archive) ---------------------------------------


def _resources_of(names: Sequence[str]) -> list[res.Resource]:
    return [res.get(n) for n in dict.fromkeys(names)] if names else list(res.RESOURCES)


@cli.command()
@click.option("--license", "license_names", multiple=True, help="Only these licenses.")
@click.option("--resource", "resource_names", multiple=True,
              type=click.Choice([r.name for r in res.RESOURCES]), help="Only these resources.")
@click.pass_obj
def rebuild(state: State, license_names: tuple[str, ...], resource_names: tuple[str, ...]) -> None:
    """Re-derive the synced tables from the response archive with this version's parser;
    sends no request. Interrupted, a rerun finishes it."""
    from syncer.leases import Held  # noqa: PLC0415
    from syncer.rebuild import RebuildRefused  # noqa: PLC0415
    from syncer.rebuild import rebuild as rebuild_license  # noqa: PLC0415

    config = state.config
    engine = open_database(config, existing=True)
    licenses = licenses_known(engine, config, license_names)
    chosen = _resources_of(resource_names)
    for lic in licenses:
        try:
            result = rebuild_license(engine, config, lic, chosen)
        except (RebuildRefused, Held) as exc:
            fail(str(exc))
        console.print(views.rebuild_table(lic.name, result.counts, result.resumed))
        console.print(f"{lic.name}: {result.answers} archived answer(s) replayed in "
                      f"{result.seconds:.1f} s, 0 requests sent; {result.unquarantined} "
                      "record(s) left the quarantine")


@cli.command()
@click.argument("resource_names", nargs=-1, required=True, metavar="RESOURCE...",
                type=click.Choice([r.name for r in res.RESOURCES]))
@click.option("--license", "license_names", multiple=True, help="Only these licenses.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Orders/invoices: pull again from this date (YYYY-MM-DD), not the first id.")
@click.option("--drop-rows", is_flag=True, help="Delete the license's rows of the resource first.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def reset(state: State, resource_names: tuple[str, ...], license_names: tuple[str, ...],
          since: dt.datetime | None, drop_rows: bool, yes: bool) -> None:
    """Forget resources' sync state so they are pulled again (full refresh); rows stay
    unless --drop-rows."""
    from syncer.leases import Held  # noqa: PLC0415
    from syncer.rebuild import RebuildRefused  # noqa: PLC0415
    from syncer.reset import reset as reset_license  # noqa: PLC0415
    from syncer.reset import since_applies  # noqa: PLC0415

    config = state.config
    licenses = licenses_of(config, license_names)
    chosen = _resources_of(resource_names)
    if since is not None and not any(since_applies(r) for r in chosen):
        fail("--since applies to orders and invoices (pulled by id, found by date); "
             f"not to {', '.join(r.name for r in chosen)}", EXIT_USAGE)
    what = (f"forget the sync state of {', '.join(r.name for r in chosen)} for "
            f"{', '.join(lic.name for lic in licenses)}"
            + (" and DELETE their rows" if drop_rows else " (rows stay)"))
    if not yes:
        if not sys.stdin.isatty():
            fail(f"reset would {what}; confirm with --yes (no terminal to ask on)", EXIT_USAGE)
        confirm(f"This will {what}. Go on?")
    engine = open_database(config)
    for lic in licenses:
        try:
            results = reset_license(engine, config, lic, chosen,
                                    since=since.date() if since else None, drop_rows=drop_rows)
        except (RebuildRefused, Held) as exc:
            fail(str(exc))
        except (CloudPosError, RequestRefused) as exc:
            fail(f"{lic.name}: the state was reset, but finding where --since starts failed: "
                 f"{exc}; the next backfill pulls from the first id (or reset again later)")
        for r in results:
            rows = f"{r.rows} row(s) dropped" if r.dropped else f"{r.rows} row(s) kept"
            start = (f"from id {r.cursor + 1}" if r.cursor else "from the first id"
                     ) if res.get(r.resource).pull is res.Pull.ID_WINDOW else "again"
            console.print(f"{lic.name}/{r.resource}: state forgotten (cursor was "
                          f"{r.cursor_was if r.cursor_was is not None else 'none'}), {rows}; "
                          f"the next backfill or run pulls it {start}", highlight=False)


@cli.command()
@click.option("--license", "license_names", multiple=True, help="Only these licenses.")
@click.option("--fresh", is_flag=True,
              help="First one new budgeted request per synced function (asks first).")
@click.option("--yes", is_flag=True, help="With --fresh: do not ask for confirmation.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Support bundle file (default ./syncer-doctor-<time>.json); an existing "
                   "file is kept unless --force.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.pass_obj
def doctor(state: State, license_names: tuple[str, ...], fresh: bool, yes: bool,
           out_path: str | None, force: bool) -> None:
    """What the API's answers look like to the parser, as a redacted support bundle."""
    from syncer import doctor as doc  # noqa: PLC0415

    config = state.config
    # Without --fresh it reads only the database: any license it holds (as `status`).
    licenses = licenses_of(config, license_names) if fresh else []
    chosen = list(res.RESOURCES)
    now = utcnow()
    path = Path(out_path or f"syncer-doctor-{now.astimezone(config.api.tz):%Y%m%d-%H%M%S}.json")
    if not force and (path.exists() or path.is_symlink()):  # said before any request is spent
        cannot_write(path, FileExistsError(errno.EEXIST, "it exists", str(path)))
    if fresh and not yes:
        what = (f"spend up to {len(chosen)} request(s) of today's budget per license "
                f"({', '.join(lic.name for lic in licenses)})")
        if not sys.stdin.isatty():
            fail(f"doctor --fresh would {what}; confirm with --yes (no terminal to ask on)",
                 EXIT_USAGE)
        confirm(f"This will {what}. Go on?")
    # After the question: a "no" changes nothing, not even the schema.
    engine = open_database(config, existing=not fresh)
    if not fresh:
        licenses = licenses_known(engine, config, license_names)
    found = []
    for lic in licenses:
        fresh_errors = None
        if fresh:
            with Runtime(engine, config, lic, purpose="backfill") as rt:
                fresh_errors = doc.fresh_pulls(engine, config, lic, chosen, rt.sync)
        found.append(doc.report(engine, config, lic, chosen, fresh_errors=fresh_errors, now=now))
    for item in found:
        console.print(views.doctor_table(item))
    try:
        doc.write_bundle(found, path, replace=force)
    except OSError as exc:
        cannot_write(path, exc)
    console.print(f"support bundle (redacted: no token, national number, e-mail or phone): "
                  f"{path.resolve()}", highlight=False)


def main() -> None:
    try:
        # Not standalone: click would turn Ctrl-C into "Aborted!" and exit 1.
        code = cli.main(prog_name="syncer", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else EXIT_OK)
    except click.exceptions.Abort:  # Ctrl-C (or end of input at a prompt)
        errors.print(INTERRUPTED_NOTE)
        sys.exit(INTERRUPTED)
    except click.ClickException as exc:  # bad usage: click's message and exit code 2
        exc.show()
        sys.exit(exc.exit_code)
    except SQLAlchemyError as exc:
        # The database refused or went away mid-command (read-only file, full disk, a
        # restart): one line, not a traceback. Nothing past the last commit was kept,
        # and every cursor moved with its rows, so running the command again continues.
        errors.print(Text.assemble(("error:", "red"), f" database: {redact(error_summary(exc))}; "
                                   "nothing after the last commit was kept: fix it and run the "
                                   "command again"), highlight=False)
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # a bug: one clear line for the person, the trace for the log
        log.debug("unexpected error", exc_info=True)
        text = str(exc).strip().splitlines()
        errors.print(Text.assemble(
            ("error:", "red"), f" unexpected {type(exc).__name__}"
            f"{': ' + redact(text[0][:300]) if text else ''}; nothing after the last commit was "
            "kept, so running the command again continues. This is a bug: run it with "
            "--log-level debug for the details to report."), highlight=False)
        sys.exit(EXIT_ERROR)
