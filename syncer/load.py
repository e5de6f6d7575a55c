"""Set-based loading: parsed rows in, committed-on-the-caller's-transaction rows out.

The loader knows no HTTP. An unchanged row is never written (its `synced_at`
stays as it was); the children of every parent it wrote are replaced; and for
full-list resources the rows that left the list are marked deleted (and the mark
is cleared when they come back). Everything happens on the connection it is
given: the caller's transaction also moves the cursor, so rows and state commit
together.

One interface; how the parents are written is the database's (`syncer.dialects`):
- the common way, here: the parents through the dialect's `write_parents` (SQLite:
  executemany upserts guarded by `IS DISTINCT FROM`), the children of updated parents
  replaced, the rows that left a full list marked;
- a database with a faster way of its own takes the whole load (`Dialect.bulk_load`;
  Postgres: `COPY`, chosen by measurement, benchmarks/load.py).
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

from sqlalchemy import (
    Column,
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
    update,
)

from syncer import dialects
from syncer.db import dumps, prepared
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


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def key_columns(table: Table) -> list[Column[Any]]:
    """The primary key columns after `license`."""
    return [c for c in table.primary_key.columns if c.name != "license"]


def value_columns(table: Table) -> list[str]:
    """The columns a load writes besides the key, `synced_at` and `deleted_at`."""
    keys = {c.name for c in key_columns(table)}
    return [c.name for c in table.columns
            if c.name not in ("license", "synced_at", "deleted_at") and c.name not in keys]


def _key_expr(table: Table) -> Any:
    cols = key_columns(table)
    return cols[0] if len(cols) == 1 else tuple_(*cols)


def key_of(row: dict[str, Any], names: Sequence[str]) -> Any:
    return row[names[0]] if len(names) == 1 else tuple(row[n] for n in names)


def existing_keys(conn: Connection, table: Table, license: str, keys: Sequence[Any]) -> set[Any]:
    found: set[Any] = set()
    single = len(key_columns(table)) == 1
    if single:  # the common case, built once: one key column
        stmt = prepared(conn, ("existing", table.name), lambda _: select(*key_columns(table)).where(
            table.c.license == bindparam("lic"),
            key_columns(table)[0].in_(bindparam("keys", expanding=True))))
        for chunk in chunks(keys):
            found.update(r[0] for r in conn.execute(stmt, {"lic": license, "keys": list(chunk)}))
        return found
    expr = _key_expr(table)
    for chunk in chunks(keys):
        result = conn.execute(
            select(*key_columns(table)).where(table.c.license == license, expr.in_(chunk))
        )
        found.update(tuple(r) for r in result)
    return found


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
    for chunk in chunks(parent_keys):
        conn.execute(gone, {"lic": license, "parents": list(chunk)})
    params = [{**r, "license": license, "synced_at": now} for r in rows]
    added = prepared(conn, ("insert", table.name), lambda _: insert(table))
    for chunk in chunks(params, 2000):
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
    for chunk in chunks(gone):
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
    records = list({key_of(r.parent, names): r for r in records}.values())
    dialect = dialects.of(conn)
    bulk = dialect.bulk_load(conn, parent, children, license, records, now, full_list=full_list,
                             unparsed=list(unparsed))
    if bulk is not None:
        return bulk
    counts, written, existing = dialect.write_parents(conn, parent, license,
                                                      [r.parent for r in records], now)
    if children and written:
        wanted = set(written)
        # Only updated parents can have stored children: children are written with their
        # parent, in its transaction (as on Postgres: a first load deletes nothing), unless
        # the dialect may have found new a parent stored meanwhile.
        updated = (list(written) if dialect.new_parents_may_have_children
                   else [k for k in written if k in existing])
        for child in children:
            parent_key = parent_column(parent)
            rows = [
                row
                for r in records
                if key_of(r.parent, names) in wanted
                for row in r.children.get(child.name, [])
            ]
            replace_children(conn, child, parent_key, license, updated, rows, now)
    if full_list:
        seen = {key_of(r.parent, names) for r in records}
        seen.update(key[0] if len(names) == 1 else key for key in unparsed)
        counts.deleted = mark_deleted(conn, parent, license, seen, now)
    return counts


def parent_column(parent: Table) -> str:
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
    for chunk in chunks(params):
        dialects.of(conn).quarantine(conn, chunk)
    return len(rejected)
