"""The interface every database module fills in, and the one shape shared by the
databases that speak `INSERT ... ON CONFLICT` (SQLite and Postgres).

A method here owns one idea whose SQL differs per database; its meaning is said once,
in its docstring, and each database module keeps to it. Code outside this package
asks `syncer.dialects.of(conn)` for the database's module and never which database
it is.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Table,
    and_,
    bindparam,
    case,
    exists,
    literal,
    null,
    or_,
    select,
    tuple_,
)
from sqlalchemy.engine import URL

from syncer import tables as t
from syncer.db import prepared
from syncer.dialects.types import UtcDateTime
from syncer.load import Counts, chunks, existing_keys, key_columns, key_of, value_columns
from syncer.parse import Rows

if TYPE_CHECKING:
    from syncer.leases import LeaseHome


class Dialect(ABC):
    """What differs between the databases we support, one method per idea."""

    # The name a person knows the database by, for messages.
    title: ClassVar[str]
    # The SQLAlchemy dialect names this module serves.
    names: ClassVar[tuple[str, ...]]
    # The driver a URL without one gets (`postgresql://` -> psycopg).
    default_driver: ClassVar[str]
    # One writing process per database (a file): one daemon, and a rebuild keeps it off.
    single_writer: ClassVar[bool] = False
    # Migrations alter a table by copying it (SQLite's ALTER TABLE is limited).
    batch_migrations: ClassVar[bool] = False
    # `write_parents` may call a parent new that another transaction stored between its
    # read and its write, so the loader replaces the children of every parent it wrote,
    # not only of those it found stored (an index probe that finds nothing on a first load).
    new_parents_may_have_children: ClassVar[bool] = False

    # --- connecting -------------------------------------------------------------------

    @abstractmethod
    def make_engine(self, url: URL, **kwargs: Any) -> Engine:
        """An engine tuned for this workload (pool, session settings, driver options)."""

    def database_file(self, url: URL) -> Path | None:
        """The file that holds the database, for an embedded one (None: a server's)."""
        return None

    def forgetful(self, url: URL) -> bool:
        """Whether the database at `url` is lost when the process ends (in memory):
        it would forget the data and the request ledger, the budget, at exit."""
        return False

    def missing_database_hint(self, url: URL, exc: BaseException) -> str | None:
        """What to run when `exc` says the database at `url` was never created."""
        return None

    def before_migrations(self, conn: Connection) -> None:
        """Run in the migrations' transaction before the first revision: replicas that
        each migrate on start must take turns, and the database may need settings."""
        return None

    def after_migrations(self, conn: Connection) -> None:
        """Run after the last revision, before the commit."""
        return None

    # --- statements -------------------------------------------------------------------

    @abstractmethod
    def upsert(self, conn: Connection, table: Table, row: Mapping[str, Any],
               changed: Sequence[str]) -> None:
        """INSERT `row`, or where its primary key is taken UPDATE the stored row's
        `changed` columns to `row`'s values (none: leave the stored row as it is); one
        atomic statement, built once per table and set of columns."""

    @abstractmethod
    def spend(self, conn: Connection, *, license: str, day: dt.date, cap: int, now: dt.datetime,
              fingerprint: str) -> tuple[int, bool] | None:
        """Spend one request of `license`'s `day`, atomically under concurrent
        processes: the day's first request creates its budget row, each later one adds
        1 while the count is below `cap`, and nothing is spent while the license is
        stopped (`stopped`). Returns the new count and whether a refusal of any
        credentials is stored for the license; None when nothing was spent."""

    @abstractmethod
    def claim(self, conn: Connection, home: LeaseHome, key: tuple[str, str], owner: str,
              expires: dt.datetime, now: dt.datetime, *, due: bool) -> Row[Any] | None:
        """Take the lease of `home`'s row `key` atomically: a new row is ours, a stored
        one only when its lease is free, expired or `owner`'s and, with `due`, its
        `next_run_at` has come. Returns the row (all columns) when taken, else None."""

    @abstractmethod
    def finish(self, conn: Connection, license: str, job: str, owner: str,
               values: Mapping[str, Any]) -> None:
        """Store `values` in the job's `sync_state` row and let go of its lease if
        `owner` still holds it: one statement."""

    @abstractmethod
    def write_parents(self, conn: Connection, table: Table, license: str,
                      rows: Sequence[dict[str, Any]], now: dt.datetime
                      ) -> tuple[Counts, list[Any], set[Any]]:
        """Insert new rows, update changed ones and leave equal ones alone (rule 3:
        `synced_at` of an unchanged row stays); returns the counts, the keys written and
        the keys that were stored before."""

    @abstractmethod
    def quarantine(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert quarantine rows; one already kept (same license, resource and
        `raw_hash`) gets the new reason and last sighting, and its count goes up."""

    def bulk_load(self, conn: Connection, parent: Table, children: Sequence[Table], license: str,
                  records: Sequence[Rows], now: dt.datetime, *, full_list: bool,
                  unparsed: Sequence[tuple[Any, ...]]) -> Counts | None:
        """A load of one resource's parsed records the database does faster its own way
        (Postgres: COPY), with the meaning of `load.load`; None: use the common way."""
        return None

    # --- expressions ------------------------------------------------------------------

    @abstractmethod
    def greatest(self, a: Any, b: Any) -> ColumnElement[Any]:
        """The larger of two values."""

    @abstractmethod
    def utc_hour(self, column: Any) -> ColumnElement[str]:
        """A UTC time column as its hour's text, `YYYY-MM-DD HH`."""


def stopped_condition() -> ColumnElement[bool]:
    """A license is stopped (it may spend nothing) while its credentials stored as
    refused are the ones in use (`:fingerprint`) or a block is in force (`:now`)."""
    state = t.license_state.c
    now = bindparam("now", type_=UtcDateTime())
    return exists().where(state.license == bindparam("lic"), or_(
        state.auth_rejected_fingerprint == bindparam("fingerprint"), state.blocked_until > now))


def refusal_stored() -> Any:
    """Whether a refusal of any credentials is stored for `:lic` (a scalar subquery)."""
    state = t.license_state.c
    return select(state.auth_rejected_fingerprint.is_not(None)).where(
        state.license == bindparam("lic")).scalar_subquery()


def lease_free(home: LeaseHome, owner: Any, *, due: bool) -> ColumnElement[bool]:
    """A stored lease may be taken by `owner`: free, expired (`:now`) or `owner`'s,
    and with `due`, the job's next run has come."""
    c = home.table.c
    now = bindparam("now", type_=UtcDateTime())
    free = or_(c[home.owner].is_(None), c[home.owner] == owner, c[home.expires] < now)
    if due:
        free = and_(free, or_(c.next_run_at.is_(None), c.next_run_at <= now))
    return free


class OnConflict(Dialect):
    """SQLite and Postgres: `INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING`
    (SQLAlchemy gives both the same construct)."""

    @abstractmethod
    def insert(self, table: Table) -> Any:
        """The database's INSERT of `table`, which knows `ON CONFLICT`."""

    def upsert(self, conn: Connection, table: Table, row: Mapping[str, Any],
               changed: Sequence[str]) -> None:
        key_names = [c.name for c in table.primary_key.columns]

        def build(_: Dialect) -> Any:
            stmt = self.insert(table)
            if not changed:
                return stmt.on_conflict_do_nothing()
            return stmt.on_conflict_do_update(index_elements=key_names,
                                              set_={k: stmt.excluded[k] for k in changed})

        conn.execute(prepared(conn, ("upsert", table.name, tuple(row), tuple(changed)), build),
                     dict(row))

    def spend(self, conn: Connection, *, license: str, day: dt.date, cap: int, now: dt.datetime,
              fingerprint: str) -> tuple[int, bool] | None:
        def build(_: Dialect) -> Any:
            budget = t.request_budget.c
            source = select(bindparam("lic", type_=budget.license.type),
                            bindparam("day", type_=budget.day.type), literal(1)
                            ).where(~stopped_condition())
            stmt = self.insert(t.request_budget).from_select(["license", "day", "spent"], source)
            return stmt.on_conflict_do_update(
                index_elements=["license", "day"], set_={"spent": budget.spent + 1},
                where=budget.spent < bindparam("cap")).returning(budget.spent, refusal_stored())

        row = conn.execute(prepared(conn, ("spend",), build), {
            "lic": license, "day": day, "cap": cap, "now": now, "fingerprint": fingerprint}).first()
        return None if row is None else (int(row[0]), bool(row[1]))

    def claim(self, conn: Connection, home: LeaseHome, key: tuple[str, str], owner: str,
              expires: dt.datetime, now: dt.datetime, *, due: bool) -> Row[Any] | None:
        def build(_: Dialect) -> Any:
            stmt = self.insert(home.table)
            return stmt.on_conflict_do_update(
                index_elements=list(home.keys),
                set_={home.owner: stmt.excluded[home.owner],
                      home.expires: stmt.excluded[home.expires]},
                where=lease_free(home, stmt.excluded[home.owner], due=due),
            ).returning(*home.table.c)

        lic, name = home.keys
        return conn.execute(prepared(conn, ("claim", home.table.name, due), build), {
            lic: key[0], name: key[1], home.owner: owner, home.expires: expires,
            "now": now}).first()

    def finish(self, conn: Connection, license: str, job: str, owner: str,
               values: Mapping[str, Any]) -> None:
        def build(_: Dialect) -> Any:
            c = t.sync_state.c
            stmt = self.insert(t.sync_state)
            ours = c.lease_owner == bindparam("holder")
            set_: dict[str, Any] = {k: stmt.excluded[k] for k in values}
            set_["lease_owner"] = case((ours, null()), else_=c.lease_owner)
            set_["lease_expires_at"] = case((ours, null()), else_=c.lease_expires_at)
            return stmt.on_conflict_do_update(index_elements=["license", "resource"], set_=set_)

        conn.execute(prepared(conn, ("finish", tuple(values)), build),
                     {"license": license, "resource": job, "holder": owner, **values})

    def write_parents(self, conn: Connection, table: Table, license: str,
                      rows: Sequence[dict[str, Any]], now: dt.datetime
                      ) -> tuple[Counts, list[Any], set[Any]]:
        counts = Counts()
        if not rows:
            return counts, [], set()
        names = [c.name for c in key_columns(table)]
        existing = existing_keys(conn, table, license, [key_of(r, names) for r in rows])
        stmt = prepared(conn, ("upsert_parents", table.name), lambda _: self._guarded_upsert(table))
        params = [{**r, "license": license, "synced_at": now} for r in rows]
        written: list[Any] = []
        single = len(names) == 1
        for chunk in chunks(params, 1000):
            result = conn.execute(stmt, list(chunk))
            written.extend(r[0] if single else tuple(r) for r in result)
        counts.inserted = sum(1 for k in written if k not in existing)
        counts.updated = len(written) - counts.inserted
        counts.unchanged = len(rows) - len(written)
        return counts, written, existing

    def _guarded_upsert(self, table: Table) -> Any:
        """INSERT ... ON CONFLICT DO UPDATE ... WHERE (stored) IS DISTINCT FROM (new)
        RETURNING key: only rows that changed are written (rule 3)."""
        full_list = "deleted_at" in table.c
        values = value_columns(table)
        stmt = self.insert(table)
        excluded = stmt.excluded
        current = [table.c[n] for n in values]
        incoming: list[Any] = [excluded[n] for n in values]
        if full_list:
            current.append(table.c.deleted_at)
            incoming.append(null())
        changed = (
            tuple_(*current).is_distinct_from(tuple_(*incoming))
            if len(current) > 1
            else or_(*(c.is_distinct_from(i) for c, i in zip(current, incoming, strict=True)))
        )
        set_: dict[str, Any] = {n: excluded[n] for n in values}
        set_["synced_at"] = excluded.synced_at
        if full_list:
            set_["deleted_at"] = null()
        return stmt.on_conflict_do_update(
            index_elements=[table.c.license, *key_columns(table)], set_=set_, where=changed
        ).returning(*key_columns(table))

    def quarantine(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        def build(_: Dialect) -> Any:
            q = t.quarantine
            stmt = self.insert(q)
            return stmt.on_conflict_do_update(
                index_elements=[q.c.license, q.c.resource, q.c.raw_hash],
                set_={"reason": stmt.excluded.reason, "last_seen_at": stmt.excluded.last_seen_at,
                      "seen_count": q.c.seen_count + 1})

        conn.execute(prepared(conn, ("quarantine",), build), list(rows))
