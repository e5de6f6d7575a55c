"""Set-based loading: parsed rows in, committed-on-the-caller's-transaction rows out.

The loader knows no HTTP. An unchanged row is never written (its `synced_at`
stays as it was); the children of every parent it wrote are replaced; and for
full-list resources the rows that left the list are marked deleted (and the mark
is cleared when they come back). Everything happens on the connection it is
given: the caller's transaction also moves the cursor, so rows and state commit
together.

One interface, two ways, chosen by measurement (benchmarks/load.py):
- Postgres: `COPY` into a temporary staging table, then one
  `INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE (row) IS DISTINCT FROM
  (excluded) RETURNING key, (xmax = 0)` per window, children deleted with one
  `= ANY(keys)` and `COPY`-ed straight into their table. Per-row statements would
  cost ~10x more on the wire and in the executor.
- SQLite (in-process, no wire): executemany upserts with the same guard.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from psycopg import sql as pg_sql
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Integer,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    null,
    or_,
    select,
    tuple_,
    update,
)

from syncer import tables as t
from syncer.db import dumps, prepared, upsert_statement
from syncer.parse import Rows
from syncer.resources import BY_TABLE

CHUNK = 500  # keys per IN (...) list: far below SQLite's and Postgres's limits
# Valid in JSON, refused by the databases: lone UTF-16 surrogates (no UTF-8 text) and,
# in Postgres JSONB, NUL too.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


@dataclass
class Counts:
    """What a load did, per resource."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass(frozen=True)
class Rejected:
    """A record that goes to the quarantine instead of the tables."""

    raw: Any
    reason: str
    key: str | None = None


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def key_columns(table: Table) -> list[Column[Any]]:
    """The primary key columns after `license`."""
    return [c for c in table.primary_key.columns if c.name != "license"]


def _key_expr(table: Table) -> Any:
    cols = key_columns(table)
    return cols[0] if len(cols) == 1 else tuple_(*cols)


def _key_of(row: dict[str, Any], names: Sequence[str]) -> Any:
    return row[names[0]] if len(names) == 1 else tuple(row[n] for n in names)


def _existing_keys(conn: Connection, table: Table, license: str, keys: Sequence[Any]) -> set[Any]:
    found: set[Any] = set()
    single = len(key_columns(table)) == 1
    if single:  # the common case, built once: one key column
        stmt = prepared(conn, ("existing", table.name), lambda _: select(*key_columns(table)).where(
            table.c.license == bindparam("lic"),
            key_columns(table)[0].in_(bindparam("keys", expanding=True))))
        for chunk in _chunks(keys):
            found.update(r[0] for r in conn.execute(stmt, {"lic": license, "keys": list(chunk)}))
        return found
    expr = _key_expr(table)
    for chunk in _chunks(keys):
        result = conn.execute(
            select(*key_columns(table)).where(table.c.license == license, expr.in_(chunk))
        )
        found.update(tuple(r) for r in result)
    return found


def _upsert_parents_statement(dialect: str, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE ... WHERE (stored) IS DISTINCT FROM (new)
    RETURNING key: only rows that changed are written (rule 3). Built once per table."""
    names = [c.name for c in key_columns(table)]
    full_list = "deleted_at" in table.c
    value_cols = [c.name for c in table.columns
                  if c.name not in ("license", "synced_at", "deleted_at") and c.name not in names]
    stmt = upsert_statement(dialect, table)
    excluded = stmt.excluded
    current = [table.c[n] for n in value_cols]
    incoming: list[Any] = [excluded[n] for n in value_cols]
    if full_list:
        current.append(table.c.deleted_at)
        incoming.append(null())
    changed = (
        tuple_(*current).is_distinct_from(tuple_(*incoming))
        if len(current) > 1
        else or_(*(c.is_distinct_from(i) for c, i in zip(current, incoming, strict=True)))
    )
    set_: dict[str, Any] = {n: excluded[n] for n in value_cols}
    set_["synced_at"] = excluded.synced_at
    if full_list:
        set_["deleted_at"] = null()
    return stmt.on_conflict_do_update(
        index_elements=[table.c.license, *key_columns(table)], set_=set_, where=changed
    ).returning(*key_columns(table))


def upsert_parents(
    conn: Connection,
    table: Table,
    license: str,
    rows: Sequence[dict[str, Any]],
    now: dt.datetime,
) -> tuple[Counts, list[Any], set[Any]]:
    """Insert new rows, update changed ones, leave equal ones alone; return the counts,
    the written keys and the keys that were stored before."""
    counts = Counts()
    if not rows:
        return counts, [], set()
    names = [c.name for c in key_columns(table)]
    keys = [_key_of(r, names) for r in rows]
    existing = _existing_keys(conn, table, license, keys)

    stmt = prepared(conn, ("upsert_parents", table.name), lambda d: _upsert_parents_statement(d, table))
    params = [{**r, "license": license, "synced_at": now} for r in rows]
    written: list[Any] = []
    single = len(names) == 1
    for chunk in _chunks(params, 1000):
        result = conn.execute(stmt, list(chunk))
        written.extend(r[0] if single else tuple(r) for r in result)
    inserted = sum(1 for k in written if k not in existing)
    counts.inserted = inserted
    counts.updated = len(written) - inserted
    counts.unchanged = len(rows) - len(written)
    return counts, written, existing


def replace_children(
    conn: Connection,
    table: Table,
    parent_column: str,
    license: str,
    parent_keys: Sequence[Any],
    rows: Iterable[dict[str, Any]],
    now: dt.datetime,
) -> None:
    """Delete the stored children of these parents (`parent_keys`: the parents that were
    stored before; a new parent has none) and insert the given ones."""
    gone = prepared(conn, ("children_of", table.name), lambda _: delete(table).where(
        table.c.license == bindparam("lic"),
        table.c[parent_column].in_(bindparam("parents", expanding=True))))
    for chunk in _chunks(parent_keys):
        conn.execute(gone, {"lic": license, "parents": list(chunk)})
    params = [{**r, "license": license, "synced_at": now} for r in rows]
    added = prepared(conn, ("insert", table.name), lambda _: insert(table))
    for chunk in _chunks(params, 2000):
        conn.execute(added, list(chunk))


def mark_deleted(
    conn: Connection, table: Table, license: str, seen: set[Any], now: dt.datetime
) -> int:
    """Set `deleted_at` on live rows of a full list that the source no longer lists."""
    single = len(key_columns(table)) == 1
    live = {
        r[0] if single else tuple(r)
        for r in conn.execute(
            select(*key_columns(table)).where(table.c.license == license, table.c.deleted_at.is_(None))
        )
    }
    gone = sorted(live - seen)
    expr = _key_expr(table)
    for chunk in _chunks(gone):
        conn.execute(
            update(table)
            .where(and_(table.c.license == license, expr.in_(chunk), table.c.deleted_at.is_(None)))
            .values(deleted_at=now, synced_at=now)
        )
    return len(gone)


def load(
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
    """Load parsed records of one resource; for a full list, mark the missing as deleted.

    `unparsed`: the keys of listed records that failed to parse (quarantined). Their rows
    are not written and not marked deleted: they keep their last good version.
    """
    names = [c.name for c in key_columns(parent)]
    # One record per key, the last one winning (as sequential upserts would end): one
    # statement may not touch a row twice, and children would collide.
    records = list({_key_of(r.parent, names): r for r in records}.values())
    if conn.dialect.name == "postgresql":
        return _load_postgres(conn, parent, children, license, records, now, full_list=full_list,
                              unparsed=unparsed)
    counts, written, existing = upsert_parents(conn, parent, license,
                                               [r.parent for r in records], now)
    if children and written:
        wanted = set(written)
        # Only updated parents can have stored children: children are written with their
        # parent, in its transaction (as on Postgres: a first load deletes nothing).
        updated = [k for k in written if k in existing]
        for child in children:
            parent_column = _parent_column(parent)
            rows = [
                row
                for r in records
                if _key_of(r.parent, names) in wanted
                for row in r.children.get(child.name, [])
            ]
            replace_children(conn, child, parent_column, license, updated, rows, now)
    if full_list:
        seen = {_key_of(r.parent, names) for r in records}
        seen.update(key[0] if len(names) == 1 else key for key in unparsed)
        counts.deleted = mark_deleted(conn, parent, license, seen, now)
    return counts


# --- Postgres: COPY into staging, one set-wise upsert ---------------------------------


def _value_columns(table: Table) -> list[str]:
    keys = {c.name for c in key_columns(table)}
    return [c.name for c in table.columns
            if c.name not in ("license", "synced_at", "deleted_at") and c.name not in keys]


def _json_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, JSON))


def _copy_rows(cursor: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
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


def _load_postgres(
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
    by_key = {_key_of(r.parent, names): r for r in records}  # keys are unique here (see load)
    value_cols = _value_columns(parent)
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
            _copy_rows(cur, stage, columns,
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
                parent_column = _parent_column(parent)
                if updated:
                    cur.execute(
                        pg_sql.SQL("DELETE FROM {} WHERE license = %s AND {} = ANY(%s::bigint[])")
                        .format(ident(child.name), ident(parent_column)),
                        (license, updated),
                    )
                child_data = [c.name for c in child.columns if c.name not in ("license", "synced_at")]
                child_rows = (row for key, r in by_key.items() if key in wanted
                              for row in r.children.get(child.name, ()))
                _copy_rows(cur, child.name, ["license", *child_data, "synced_at"],
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


def _parent_column(parent: Table) -> str:
    """The children's column that holds the parent's id, as its resource declares it."""
    key = BY_TABLE[parent.name].parent_key
    if key is None:
        raise ValueError(f"{parent.name}: its resource declares no parent_key for children")
    return key


def _storable(raw: Any) -> bool:
    """Whether no key or string anywhere in `raw` holds a NUL or a lone surrogate."""
    stack = [raw]  # a loop, not recursion: a record may nest as deep as json.loads allows
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


def record_json(raw: Any, *, ensure_ascii: bool = False) -> str:
    """A record's JSON text as the API sent it (sorted keys): the numbers the client read
    as exact Decimals go back as the same JSON numbers ("12.50" stays 12.50, not a string),
    so `json.loads(text, parse_float=Decimal)` gives the record back."""
    numbers: list[str] = []
    marker = uuid.uuid4().hex  # no string of a record holds it

    def number(value: Any) -> Any:
        if isinstance(value, Decimal) and value.is_finite():
            numbers.append(str(value))  # "12.50", "-0", "1E+3": all JSON numbers
            return f"{marker}{len(numbers) - 1}"
        if isinstance(value, Decimal):
            return str(value)
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    text = json.dumps(raw, sort_keys=True, default=number, ensure_ascii=ensure_ascii)
    if not numbers:
        return text
    return re.sub(f'"{marker}([0-9]+)"', lambda m: numbers[int(m.group(1))], text)


def quarantine_raw(raw: Any) -> str:
    """A rejected record as the quarantine's `raw` stores it: its JSON text (`record_json`).

    A record holding a NUL or a lone surrogate anywhere (`"\\u0000"`, `"\\ud800"`: valid
    JSON, but a surrogate has no UTF-8 text and Postgres JSONB refuses both) is stored as
    `{"unstorable_json": <its JSON text, ASCII-escaped>}` instead: `json.loads` of that
    string gives back exactly the record `dumps` would have written, and `raw` stays valid
    UTF-8, JSON and JSONB.
    """
    try:
        if _storable(raw):
            return record_json(raw)
        return dumps({"unstorable_json": record_json(raw, ensure_ascii=True)})
    except (TypeError, ValueError):
        return repr(raw)  # repr escapes NUL and surrogates


def quarantine_hash(raw: str) -> str:
    """The quarantine's `raw_hash` of a record's `quarantine_raw` text."""
    return hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


def quarantine(
    conn: Connection, license: str, resource: str, rejected: Sequence[Rejected], now: dt.datetime
) -> int:
    """Keep records that could not be loaded, with their raw JSON and the reason.

    Every record can be kept, whatever it holds (see `quarantine_raw`): one bad record
    must not roll back its page.
    """
    if not rejected:
        return 0
    stmt = upsert_statement(conn.dialect.name, t.quarantine)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.quarantine.c.license, t.quarantine.c.resource, t.quarantine.c.raw_hash],
        set_={
            "reason": stmt.excluded.reason,
            "last_seen_at": stmt.excluded.last_seen_at,
            "seen_count": t.quarantine.c.seen_count + 1,
        },
    )
    by_hash: dict[str, dict[str, Any]] = {}
    for item in rejected:
        raw = quarantine_raw(item.raw)
        digest = quarantine_hash(raw)
        by_hash[digest] = {
            "license": license,
            "resource": resource,
            "record_key": item.key,
            "raw": raw,
            "raw_hash": digest,
            # A reason quotes values with repr(); escaped here too, whatever raised it.
            "reason": _UNSTORABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", item.reason[:2000]),
            "first_seen_at": now,
            "last_seen_at": now,
            "seen_count": 1,
        }
    # One row per distinct raw record: the same statement may not touch a row twice.
    params = list(by_hash.values())
    for chunk in _chunks(params):
        conn.execute(stmt, list(chunk))
    return len(rejected)
