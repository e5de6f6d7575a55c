"""Engines and migrations for SQLite (embedded default) and Postgres (production)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from syncer.redact import redact

log = logging.getLogger("syncer.db")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Exact: a Decimal the API sent is kept as its text, never as a float.
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, *, ensure_ascii: bool = False) -> str:
    """Deterministic JSON (sorted keys), so equal content compares equal in SQL."""
    return json.dumps(value, sort_keys=True, default=_json_default, ensure_ascii=ensure_ascii)


def _with_driver(url: str | URL) -> URL:
    """Use psycopg 3 for plain postgresql:// URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    return _with_driver(url).render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for this workload on either database."""
    url = normalize_url(url)
    dialect = make_url(url).get_backend_name()
    if dialect == "sqlite":
        engine = create_engine(
            url, json_serializer=dumps, connect_args={"timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if dialect == "postgresql":
        # prepare_threshold=None: psycopg would otherwise prepare statements after
        # 5 runs and could keep a plan made while the tables were tiny (pitfalls.md).
        # timezone=UTC: timestamptz values arrive in UTC (datetime.UTC itself), so
        # reading one needs no conversion (tables.UtcDateTime); no SQL of ours depends
        # on the session's zone (the views convert with explicit zones).
        # The URL's own `options` (a search_path, say) are kept, after ours.
        given = make_url(url).query.get("options") or ""
        options = " ".join(["-c timezone=UTC", *([given] if isinstance(given, str) else given)])
        engine = create_engine(
            url,
            json_serializer=dumps,
            pool_use_lifo=True,
            connect_args={"prepare_threshold": None, "options": options},
            **kwargs,
        )
        _ping_when_idle(engine)
        return engine
    raise ValueError(f"unsupported database {dialect!r} in database.url; use sqlite or postgresql")


# A pooled connection unused for this long is pinged before it is lent again.
IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before lending it only when it lay idle for
    `IDLE_PING_SECONDS` (SQLAlchemy's pessimistic disconnect handling, through the
    pool's `checkout` event). `pool_pre_ping` pings at every checkout: one round trip
    per transaction, about 40 us of client CPU each, 11 per daemon job run on
    Postgres. A connection reused within seconds was just working; one the server
    dropped while it was busy fails its statement instead, SQLAlchemy then discards
    the pool's connections, and the job retries as after any database error.
    LIFO lending keeps the busy connections warm and lets the others go idle."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            # The pool then discards this connection and lends a new one.
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def error_summary(exc: BaseException) -> str:
    """One line for a database error: the driver's own message (SQLAlchemy wraps it with
    the statement and its parameters, which belong in no log line)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


_PASSWORD_IN_URL = re.compile(r"(//[^/@:]*:)[^/@]*@")


def shown_url(url: str | URL) -> str:
    """A database URL as every message shows it: the password as `***`, tokens masked.
    A text that does not parse as a URL is masked the same way."""
    try:
        text = _with_driver(url).render_as_string(hide_password=True)
    except ArgumentError:
        text = _PASSWORD_IN_URL.sub(r"\1***@", str(url))
    return redact(text)


_NO_DATABASE = re.compile(r'database "([^"]+)" does not exist')


def connect_problem(url: str | URL, exc: BaseException) -> str:
    """One line saying why the database at `url` cannot be used, and what to run when
    that is clear (a Postgres database that was never created)."""
    text = error_summary(exc)
    missing = _NO_DATABASE.search(str(getattr(exc, "orig", None) or exc))
    if missing:
        parsed = make_url(url)
        flags = "".join(f" {flag} {value}" for flag, value in (
            ("-h", parsed.host), ("-p", parsed.port), ("-U", parsed.username)) if value)
        return (f"database {shown_url(url)}: database {missing.group(1)!r} does not exist; "
                f"create it with `createdb{flags} {missing.group(1)}` and run the command again")
    return f"database {shown_url(url)}: {text}"


def describe(engine: Engine) -> str:
    """The engine's database URL without its password, for messages."""
    return shown_url(engine.url)


# Statements built once per dialect and key. Building a SQLAlchemy statement costs
# about 4x executing a built one, whose cache key it keeps: a two-column select on
# SQLite took 382 us built at each call against 97 us prebuilt and 95 us as raw driver
# SQL (measured with timeit, 5,000 runs each). The daemon's per-run statements are
# the same few every time, so they are built once and executed with parameters.
_PREPARED: dict[tuple[Any, ...], Any] = {}


def prepared(conn: Connection, key: tuple[Any, ...], build: Callable[[str], Any]) -> Any:
    """The statement `build(dialect name)` makes, made once per dialect and `key`
    (execute it with a dict of its bind parameters)."""
    full = (conn.dialect.name, *key)
    stmt = _PREPARED.get(full)
    if stmt is None:
        stmt = _PREPARED[full] = build(conn.dialect.name)
    return stmt


def upsert_statement(dialect: str, table: Table) -> Any:
    """The dialect's INSERT (which knows `ON CONFLICT`) of `table`."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def upsert(conn: Connection, table: Table, row: Mapping[str, Any],
           update: Sequence[str] | None = None) -> None:
    """INSERT `row`, or where its primary key is taken UPDATE the stored row's `update`
    columns (default: every column of `row` outside the key; none: leave the stored row
    as it is) to `row`'s values: one atomic statement on either database, built once
    per table and set of columns."""
    key_names = [c.name for c in table.primary_key.columns]
    changed = tuple(update) if update is not None else tuple(k for k in row if k not in key_names)

    def build(dialect: str) -> Any:
        stmt = upsert_statement(dialect, table)
        if not changed:
            return stmt.on_conflict_do_nothing()
        return stmt.on_conflict_do_update(index_elements=key_names,
                                          set_={k: stmt.excluded[k] for k in changed})

    conn.execute(prepared(conn, ("upsert", table.name, tuple(row), changed), build), dict(row))


def migrations_dir() -> Path:
    """The Alembic scripts: shipped in the wheel, or the repo's migrations/ folder."""
    shipped = Path(str(importlib_resources.files("syncer"))) / "_migrations"
    if (shipped / "env.py").is_file():
        return shipped
    repo = Path(__file__).resolve().parent.parent / "migrations"
    if (repo / "env.py").is_file():
        return repo
    raise FileNotFoundError("the migrations folder is missing from this installation")


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head", *, timezone: str | None = None) -> None:
    """Bring the schema to `revision` (default: newest).

    `timezone` (api.timezone, default Europe/Brussels) is the zone in which a data
    migration reads the local day and hour of orders already stored.
    """
    cfg = alembic_config(engine)
    if timezone is not None:
        cfg.attributes["timezone"] = timezone
    command.upgrade(cfg, revision)
