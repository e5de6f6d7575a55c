"""PostgreSQL, the production target: psycopg 3, sessions in UTC, `COPY` for bulk loads.

Loading: up to `INLINE_ROWS` records go inline in one guarded upsert (`VALUES`); more
go through a temporary staging table filled by `COPY`, then one
`INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE (row) IS DISTINCT FROM
(excluded) RETURNING key, (xmax = 0)`; children are deleted with one `= ANY(keys)`
and `COPY`-ed straight into their table. Per-row statements would cost ~10x more on
the wire and in the executor (benchmarks/load.py). This SQL is composed with psycopg's
`sql` module, not SQLAlchemy, because `COPY` and the staging table live on the driver's
cursor.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from psycopg import sql as pg_sql
from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Table,
    create_engine,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL

from syncer.db import dumps, ping_when_idle
from syncer.dialects.base import OnConflict
from syncer.load import Counts, key_columns, key_of, parent_column, value_columns
from syncer.parse import Rows

_NO_DATABASE = re.compile(r'database "([^"]+)" does not exist')


class Postgres(OnConflict):
    title = "PostgreSQL"
    names = ("postgresql",)
    default_driver = "postgresql+psycopg"

    def make_engine(self, url: URL, **kwargs: Any) -> Engine:
        # prepare_threshold=None: psycopg would otherwise prepare statements after
        # 5 runs and could keep a plan made while the tables were tiny (pitfalls.md).
        # timezone=UTC: timestamptz values arrive in UTC (datetime.UTC itself), so
        # reading one needs no conversion (types.UtcDateTime); no SQL of ours depends
        # on the session's zone (the views convert with explicit zones).
        # The URL's own `options` (a search_path, say) are kept, after ours.
        given = url.query.get("options") or ""
        options = " ".join(["-c timezone=UTC", *([given] if isinstance(given, str) else given)])
        engine = create_engine(
            url,
            json_serializer=dumps,
            pool_use_lifo=True,
            connect_args={"prepare_threshold": None, "options": options},
            **kwargs,
        )
        ping_when_idle(engine)
        return engine

    def before_migrations(self, conn: Connection) -> None:
        # Replicas that each migrate on start (ExecStartPre, an entrypoint) take turns:
        # the second sees the first one's work instead of redoing it.
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('cloudpos-syncer migrate ' "
                          "|| current_schema()))"))

    def missing_database_hint(self, url: URL, exc: BaseException) -> str | None:
        missing = _NO_DATABASE.search(str(getattr(exc, "orig", None) or exc))
        if not missing:
            return None
        flags = "".join(f" {flag} {value}" for flag, value in (
            ("-h", url.host), ("-p", url.port), ("-U", url.username)) if value)
        return (f"database {missing.group(1)!r} does not exist; create it with "
                f"`createdb{flags} {missing.group(1)}` and run the command again")

    def insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    def bulk_load(self, conn: Connection, parent: Table, children: Sequence[Table], license: str,
                  records: Sequence[Rows], now: dt.datetime, *, full_list: bool,
                  unparsed: Sequence[tuple[Any, ...]]) -> Counts | None:
        return load_with_copy(conn, parent, children, license, records, now, full_list=full_list,
                              unparsed=unparsed)

    def greatest(self, a: Any, b: Any) -> ColumnElement[Any]:
        return func.greatest(a, b)

    def utc_hour(self, column: Any) -> ColumnElement[str]:
        return func.to_char(func.timezone(literal_column("'UTC'"), column),
                            literal_column("'YYYY-MM-DD HH24'"))


def _json_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, JSON))


def copy_rows(cursor: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """`COPY table (columns) FROM STDIN`: psycopg adapts Decimal, date, aware datetime, None."""
    statement = pg_sql.SQL("COPY {} ({}) FROM STDIN").format(
        pg_sql.Identifier(table), pg_sql.SQL(", ").join(map(pg_sql.Identifier, columns)))
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _tuples(
    dicts: Iterable[dict[str, Any]], table: Table, data_columns: Sequence[str],
    license: str, now: dt.datetime,
) -> Iterator[list[Any]]:
    """Rows as COPY values: license, `data_columns`, synced_at.

    JSON goes as its deterministic text (JSONB then compares equal content as equal).
    """
    json_at = [i + 1 for i, name in enumerate(data_columns) if name in _json_columns(table)]
    for row in dicts:
        values = [license, *map(row.get, data_columns), now]
        for i in json_at:
            if values[i] is not None:
                values[i] = dumps(values[i])
        yield values


# Up to this many records a window's rows go inline in the upsert (`VALUES`); more go
# through a temporary staging table filled by `COPY`. A daemon run's answer is small
# (a few new orders, a list of tables): creating, filling and dropping a temporary
# table cost it 4 round trips and catalog writes more than the upsert itself, while
# for thousands of rows `COPY` is the fastest way in (benchmarks/load.py).
INLINE_ROWS = 200


def load_with_copy(
    conn: Connection,
    parent: Table,
    children: Sequence[Table],
    license: str,
    records: Sequence[Rows],
    now: dt.datetime,
    *,
    full_list: bool,
    unparsed: Collection[tuple[Any, ...]] = (),
) -> Counts:
    counts = Counts()
    names = [c.name for c in key_columns(parent)]
    by_key = {key_of(r.parent, names): r for r in records}  # keys are unique here (see load)
    value_cols = value_columns(parent)
    data_cols = [*names, *value_cols]
    columns = ["license", *data_cols, "synced_at"]
    ident = pg_sql.Identifier
    comma = pg_sql.SQL(", ")
    target = ident(parent.name)
    stage = f"_stage_{parent.name}"
    staged = ident(stage)
    inline = len(by_key) <= INLINE_ROWS
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cur:
        column_list = comma.join(map(ident, columns))
        key_list = comma.join(map(ident, names))
        params: list[Any] = []
        if inline:
            # In key order, as the staging table's rows are read: concurrent loads of
            # overlapping keys lock them in one order.
            ordered = [by_key[k] for k in sorted(by_key)]
            rows = list(_tuples((r.parent for r in ordered), parent, data_cols, license, now))
            row_sql = pg_sql.SQL("({})").format(comma.join([pg_sql.Placeholder()] * len(columns)))
            source: pg_sql.Composable = pg_sql.SQL("VALUES {}").format(comma.join([row_sql] * len(rows)))
            params = [value for row in rows for value in row]
        else:
            # Inside the caller's transaction: gone at commit (and at rollback).
            cur.execute(pg_sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP")
                        .format(staged, target))
            copy_rows(cur, stage, columns,
                       _tuples((r.parent for r in by_key.values()), parent, data_cols, license, now))
            source = pg_sql.SQL("SELECT {} FROM {} ORDER BY {}").format(column_list, staged, key_list)

        # Rows written before COPY was used hold JSON 'null' where COPY writes NULL:
        # the same "no extra fields", so it must not count as a change.
        json_cols = _json_columns(parent)
        current: list[pg_sql.Composable] = [
            pg_sql.SQL("NULLIF(t.{}, 'null'::jsonb)" if n in json_cols else "t.{}").format(ident(n))
            for n in value_cols]
        incoming: list[pg_sql.Composable] = [pg_sql.SQL("EXCLUDED.{}").format(ident(n)) for n in value_cols]
        updates: list[pg_sql.Composable] = [pg_sql.SQL("{} = EXCLUDED.{}").format(ident(n), ident(n))
                   for n in [*value_cols, "synced_at"]]
        if full_list:
            # A row that comes back after it left the list is written, to clear the mark.
            current.append(pg_sql.SQL("t.deleted_at"))
            incoming.append(pg_sql.SQL("NULL::timestamptz"))
            updates.append(pg_sql.SQL("deleted_at = NULL"))
        returned: list[Any] = []
        if by_key:
            cur.execute(pg_sql.SQL(
                "INSERT INTO {target} AS t ({columns}) {source} "
                "ON CONFLICT (license, {keys}) DO UPDATE SET {updates} "
                "WHERE ({current}) IS DISTINCT FROM ({incoming}) "
                "RETURNING {returned}, (t.xmax = 0)"
            ).format(target=target, columns=column_list, source=source, keys=key_list,
                     updates=comma.join(updates), current=comma.join(current),
                     incoming=comma.join(incoming),
                     returned=comma.join(pg_sql.SQL("t.{}").format(ident(n)) for n in names)),
                params or None)
            # xmax = 0: the row version was inserted by this statement, not updated.
            returned = cur.fetchall()
        counts.inserted = sum(1 for r in returned if r[-1])
        counts.updated = len(returned) - counts.inserted
        counts.unchanged = len(by_key) - len(returned)

        if children and returned:
            if len(names) != 1:
                raise NotImplementedError(f"{parent.name}: children of a composite-key parent")
            wanted = {r[0] for r in returned}
            # Only updated parents can have stored children: children are written with
            # their parent, in its transaction. Skipping the inserted ones keeps a first
            # load free of deletes. `::bigint[]`: psycopg would send small ids as
            # smallint[], which turns the key lookup into a per-row array scan.
            updated = [r[0] for r in returned if not r[-1]]
            for child in children:
                parent_key = parent_column(parent)
                if updated:
                    cur.execute(
                        pg_sql.SQL("DELETE FROM {} WHERE license = %s AND {} = ANY(%s::bigint[])")
                        .format(ident(child.name), ident(parent_key)),
                        (license, updated),
                    )
                child_data = [c.name for c in child.columns if c.name not in ("license", "synced_at")]
                child_rows = (row for key, r in by_key.items() if key in wanted
                              for row in r.children.get(child.name, ()))
                copy_rows(cur, child.name, ["license", *child_data, "synced_at"],
                           _tuples(child_rows, child, child_data, license, now))

        if full_list:
            # Listed: the staged rows (or, inline, their keys) and the keys of unparsed
            # records, one array per key column, zipped back into keys by `unnest`.
            listed = list(unparsed)
            if inline:  # no staging table to look the rows up in
                listed += [(k,) if len(names) == 1 else k for k in by_key]
            listed_columns = [[key[i] for key in listed] for i in range(len(names))]
            arrays = [pg_sql.SQL("%s::bigint[]" if isinstance(parent.c[n].type, Integer)
                                 else "%s::text[]") for n in names]
            staged_rows = pg_sql.SQL("") if inline else pg_sql.SQL(
                "AND NOT EXISTS (SELECT 1 FROM {} AS s WHERE s.license = t.license AND {}) ").format(
                staged, pg_sql.SQL(" AND ").join(
                    pg_sql.SQL("s.{} = t.{}").format(ident(n), ident(n)) for n in names))
            cur.execute(
                pg_sql.SQL("UPDATE {} AS t SET deleted_at = %s, synced_at = %s "
                           "WHERE t.license = %s AND t.deleted_at IS NULL {}"
                           "AND ({}) NOT IN (SELECT * FROM unnest({}))")
                .format(target, staged_rows,
                        comma.join(pg_sql.SQL("t.{}").format(ident(n)) for n in names),
                        comma.join(arrays)),
                (now, now, license, *listed_columns),
            )
            counts.deleted = cur.rowcount
        if not inline:
            cur.execute(pg_sql.SQL("DROP TABLE {}").format(staged))
    return counts


