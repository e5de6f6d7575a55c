"""MariaDB (10.6 and later): PyMySQL, sessions in UTC. MySQL 8 speaks the same SQL but
for `INSERT ... RETURNING`, which the ledger and the archive use (MariaDB has it since
10.5): its URLs are accepted, it is not yet supported.

What this database needs that the others do not, and why:
- **The driver is PyMySQL** (the `mysql` extra): pure Python, so `pip install
  'cloudpos-syncer[mysql]'` needs no compiler or client library on the host, and it is
  the driver SQLAlchemy tests both databases with. mysqlclient is faster per row, but a
  run's cost here is the API's (one request per run), not the driver's.
- **Sessions in UTC, READ COMMITTED, ANSI quotes and `||`**: `DATETIME` has no zone,
  so times are stored as naive UTC (`types.UtcDateTime`) and the session's zone is
  `+00:00` (`CURRENT_DATE` of the views is UTC, as on SQLite); READ COMMITTED is what
  Postgres gives, so a process sees another's commits between statements; the views'
  SQL (the migrations) keeps its standard `||` and `"quoted"` identifiers.
- **Binary collation** (`utf8mb4_bin`, set on the database before the first migration):
  the default collation compares text case- and accent-insensitively, so two payment
  methods `Cash` and `cash`, keys on SQLite and Postgres, would be one key here.
- **No `ON CONFLICT ... WHERE`, no `RETURNING` (MySQL)**: the conditional writes are an
  `UPDATE ... WHERE` (the row lock makes it atomic under concurrent replicas), preceded
  for a row not yet there by an insert that leaves a stored row alone (`_create`); the
  rows a load changes are found by comparing the stored values with the new ones
  (`write_parents`), and `INSERT ... ON DUPLICATE KEY UPDATE` writes those alone.

SQLAlchemy's MySQL dialects open PyMySQL connections with `CLIENT.FOUND_ROWS`: an
`UPDATE`'s row count is the rows its `WHERE` matched, which is what the conditional
writes test.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Numeric,
    Row,
    Table,
    and_,
    bindparam,
    case,
    create_engine,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, RowMapping

from syncer import tables as t
from syncer.db import dumps, ping_when_idle, prepared
from syncer.dialects.base import Dialect, lease_free, refusal_stored, stopped_condition
from syncer.load import Counts, chunks, key_columns, key_of, value_columns

if TYPE_CHECKING:
    from syncer.leases import LeaseHome

_NO_DATABASE = re.compile(r"Unknown database '([^']+)'")
# Session settings of every connection (see the module's docstring).
_SESSION = ("SET time_zone = '+00:00', "
            "sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES,PIPES_AS_CONCAT')")
_LOCK_SECONDS = 600


def _loads(text_: str) -> Any:
    """JSON columns read back with exact numbers, as the client parsed them: a stored
    record then compares equal to the same record parsed again (`write_parents`)."""
    return json.loads(text_, parse_float=Decimal)


class MySQL(Dialect):
    title = "MariaDB/MySQL"
    names = ("mysql", "mariadb")
    default_driver = "mysql+pymysql"
    # `write_parents` reads the stored rows before it writes, and READ COMMITTED takes no
    # gap lock: a job and the day re-check loading the same new order at once both find it
    # new; the second's upsert waits for the first to commit and updates it, and its
    # children would collide with the first's (seen as a duplicate key on order_lines).
    new_parents_may_have_children = True

    def make_engine(self, url: URL, **kwargs: Any) -> Engine:
        query = dict(url.query)
        query.setdefault("charset", "utf8mb4")
        engine = create_engine(
            url.set(query=query),
            json_serializer=dumps,
            json_deserializer=_loads,
            isolation_level="READ COMMITTED",
            pool_use_lifo=True,
            pool_recycle=3600,  # below the server's wait_timeout (8 h by default)
            connect_args={"init_command": _SESSION},
            **kwargs,
        )
        ping_when_idle(engine)
        return engine

    def missing_database_hint(self, url: URL, exc: BaseException) -> str | None:
        missing = _NO_DATABASE.search(str(getattr(exc, "orig", None) or exc))
        if not missing:
            return None
        return (f"database {missing.group(1)!r} does not exist; create it with "
                f"`CREATE DATABASE {missing.group(1)} CHARACTER SET utf8mb4 COLLATE "
                f"utf8mb4_bin` (mariadb or mysql client) and run the command again")

    def before_migrations(self, conn: Connection) -> None:
        # Replicas that each migrate on start take turns (a named lock, held by this
        # session until released); the tables then take the binary collation.
        conn.execute(text("SELECT GET_LOCK(CONCAT('cloudpos-syncer migrate ', DATABASE()), :s)"),
                     {"s": _LOCK_SECONDS})
        conn.exec_driver_sql(
            "ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")

    def after_migrations(self, conn: Connection) -> None:
        conn.execute(text("SELECT RELEASE_LOCK(CONCAT('cloudpos-syncer migrate ', DATABASE()))"))

    # --- statements -------------------------------------------------------------------

    def upsert(self, conn: Connection, table: Table, row: Mapping[str, Any],
               changed: Sequence[str]) -> None:
        def build(_: Dialect) -> Any:
            stmt = mysql.insert(table)
            if not changed:  # a no-op assignment: the stored row stays as it is
                first = next(iter(table.primary_key.columns)).name
                return stmt.on_duplicate_key_update({first: table.c[first]})
            return stmt.on_duplicate_key_update({k: stmt.inserted[k] for k in changed})

        conn.execute(prepared(conn, ("upsert", table.name, tuple(row), tuple(changed)), build),
                     dict(row))

    def spend(self, conn: Connection, *, license: str, day: dt.date, cap: int, now: dt.datetime,
              fingerprint: str) -> tuple[int, bool] | None:
        budget = t.request_budget.c
        params = {"lic": license, "b_day": day, "cap": cap, "now": now, "fingerprint": fingerprint}
        add = prepared(conn, ("spend_add",), lambda _: update(t.request_budget).where(
            budget.license == bindparam("lic"), budget.day == bindparam("b_day"),
            budget.spent < bindparam("cap"), ~stopped_condition()
        ).values(spent=budget.spent + 1))

        def first(_: Dialect) -> Any:
            source = select(bindparam("lic", type_=budget.license.type),
                            bindparam("b_day", type_=budget.day.type), literal(0)
                            ).where(~stopped_condition())
            return _create(t.request_budget, "license").from_select(
                ["license", "day", "spent"], source)

        # The day's row is there but for the first request: add one under its row lock.
        # Not there: create it at 0 (or find it created meanwhile), holding its row lock,
        # then add one; a stopped license creates nothing.
        if conn.execute(add, params).rowcount == 0:
            conn.execute(prepared(conn, ("spend_first",), first), params)
            if conn.execute(add, params).rowcount == 0:
                return None
        row = conn.execute(prepared(conn, ("spend_read",), lambda _: select(
            budget.spent, refusal_stored()).where(
            budget.license == bindparam("lic"), budget.day == bindparam("b_day"))),
            {"lic": license, "b_day": day}).one()
        return int(row[0]), bool(row[1])

    def claim(self, conn: Connection, home: LeaseHome, key: tuple[str, str], owner: str,
              expires: dt.datetime, now: dt.datetime, *, due: bool) -> Row[Any] | None:
        lic, name = home.keys
        c = home.table.c
        where = and_(c[lic] == bindparam("k_lic"), c[name] == bindparam("k_name"))
        take = prepared(conn, ("claim_take", home.table.name, due), lambda _: update(
            home.table).where(where, lease_free(home, bindparam("k_owner"), due=due)).values(
            {home.owner: bindparam("k_owner"), home.expires: bindparam("k_expires")}))
        params = {"k_lic": key[0], "k_name": key[1], "k_owner": owner, "k_expires": expires,
                  "now": now}
        if conn.execute(take, params).rowcount == 0:
            new = prepared(conn, ("claim_new", home.table.name),
                           lambda _: _create(home.table, lic))
            conn.execute(new, {lic: key[0], name: key[1], home.owner: owner,
                               home.expires: expires})
            if conn.execute(take, params).rowcount == 0:
                return None
        return conn.execute(prepared(conn, ("claim_read", home.table.name),
                                     lambda _: select(home.table).where(where)),
                            params).one()

    def finish(self, conn: Connection, license: str, job: str, owner: str,
               values: Mapping[str, Any]) -> None:
        def build(_: Dialect) -> Any:
            c = t.sync_state.c
            stmt = mysql.insert(t.sync_state)
            ours = c.lease_owner == bindparam("holder")
            # Assignments run in order and later ones see earlier ones' values: the
            # expiry is let go before the owner it is tested against.
            set_: list[tuple[Any, Any]] = [
                ("lease_expires_at", case((ours, null()), else_=c.lease_expires_at)),
                ("lease_owner", case((ours, null()), else_=c.lease_owner)),
            ]
            set_ += [(k, stmt.inserted[k]) for k in values]
            return stmt.on_duplicate_key_update(set_)

        conn.execute(prepared(conn, ("finish", tuple(values)), build),
                     {"license": license, "resource": job, "holder": owner, **values})

    def write_parents(self, conn: Connection, table: Table, license: str,
                      rows: Sequence[dict[str, Any]], now: dt.datetime
                      ) -> tuple[Counts, list[Any], set[Any]]:
        counts = Counts()
        if not rows:
            return counts, [], set()
        keys = key_columns(table)
        names = [c.name for c in keys]
        values = value_columns(table)
        full_list = "deleted_at" in table.c
        stored = self._stored(conn, table, license, [key_of(r, names) for r in rows])
        same = _Comparer(table, values)
        written: list[Any] = []
        params: list[dict[str, Any]] = []
        for row in rows:
            key = key_of(row, names)
            old = stored.get(key)
            if old is not None and same(old, row) and not (full_list and old["deleted_at"]):
                continue
            written.append(key)
            params.append({**row, "license": license, "synced_at": now})
        if params:
            stmt = prepared(conn, ("upsert_parents", table.name),
                            lambda _: self._upsert_all(table, values, full_list))
            for chunk in chunks(params, 1000):
                conn.execute(stmt, list(chunk))
        counts.inserted = sum(1 for k in written if k not in stored)
        counts.updated = len(written) - counts.inserted
        counts.unchanged = len(rows) - len(written)
        return counts, written, set(stored)

    @staticmethod
    def _stored(conn: Connection, table: Table, license: str, keys: Sequence[Any]
                ) -> dict[Any, RowMapping]:
        """The stored rows of `keys`, by key: their value columns (and `deleted_at`)."""
        key_cols = key_columns(table)
        single = len(key_cols) == 1
        wanted = [table.c[n] for n in value_columns(table)]
        if "deleted_at" in table.c:
            wanted.append(table.c.deleted_at)
        found: dict[Any, RowMapping] = {}
        if single:
            stmt = prepared(conn, ("stored", table.name), lambda _: select(*key_cols, *wanted).where(
                table.c.license == bindparam("lic"),
                key_cols[0].in_(bindparam("keys", expanding=True))))
            for chunk in chunks(keys):
                for r in conn.execute(stmt, {"lic": license, "keys": list(chunk)}).mappings():
                    found[r[key_cols[0].name]] = r
            return found
        expr = tuple_(*key_cols)
        for chunk in chunks(keys):
            result = conn.execute(select(*key_cols, *wanted).where(
                table.c.license == license, expr.in_(chunk))).mappings()
            for r in result:
                found[tuple(r[c.name] for c in key_cols)] = r
        return found

    @staticmethod
    def _upsert_all(table: Table, values: Sequence[str], full_list: bool) -> Any:
        stmt = mysql.insert(table)
        set_: dict[str, Any] = {n: stmt.inserted[n] for n in values}
        set_["synced_at"] = stmt.inserted.synced_at
        if full_list:
            set_["deleted_at"] = null()
        return stmt.on_duplicate_key_update(set_)

    def quarantine(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        def build(_: Dialect) -> Any:
            q = t.quarantine
            stmt = mysql.insert(q)
            return stmt.on_duplicate_key_update(
                reason=stmt.inserted.reason, last_seen_at=stmt.inserted.last_seen_at,
                # A literal: PyMySQL's executemany takes no parameters after VALUES.
                seen_count=q.c.seen_count + literal_column("1"))

        conn.execute(prepared(conn, ("quarantine",), build), list(rows))

    # --- expressions ------------------------------------------------------------------

    def greatest(self, a: Any, b: Any) -> ColumnElement[Any]:
        return func.greatest(a, b)

    def utc_hour(self, column: Any) -> ColumnElement[str]:
        return func.date_format(column, "%Y-%m-%d %H")


def _create(table: Table, column: str) -> Any:
    """INSERT a row, or where its key is taken leave the stored row as it is, holding
    its row lock. Not `INSERT IGNORE`: that takes a shared lock on the stored row, and
    two processes each upgrading theirs to write would deadlock."""
    stmt = mysql.insert(table)
    return stmt.on_duplicate_key_update({column: table.c[column]})


class _Comparer:
    """Whether a stored row equals a new one, as the database would store the new one:
    exact numbers at their column's scale (DECIMAL rounds half away from zero)."""

    def __init__(self, table: Table, values: Sequence[str]) -> None:
        self.values = values
        self.scales: dict[str, Decimal] = {}
        for name in values:
            kind = table.c[name].type
            if isinstance(kind, Numeric) and kind.scale is not None:
                self.scales[name] = Decimal(1).scaleb(-kind.scale)

    def __call__(self, old: RowMapping, new: Mapping[str, Any]) -> bool:
        for name in self.values:
            value = new.get(name)
            scale = self.scales.get(name)
            if scale is not None and value is not None:
                value = Decimal(value).quantize(scale, rounding=ROUND_HALF_UP)
            if old[name] != value:
                return False
        return True
