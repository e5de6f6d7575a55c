"""The response archive (design rule 8): every answer of a synced function, kept.

A request costs budget and history can only be fetched again by spending it, so
each successful answer the sync loads (full lists, id windows, `date` re-scans,
coupon re-scans) is stored here, in the transaction that stores its rows:

- the bytes as the client received them, compressed with zstd (level 9: on a
  5,000-order window 29% smaller than zlib's default level, and faster both ways;
  `benchmarks/archive.py` measures it), with their sha256;
- the license, function, parameters (never the token), the ledger row of the
  request, when it was received, the sync state it moved and what loading it did.

An answer whose bytes equal the previous answer of the same (license, function,
parameters) refers to that body instead of storing it again: a tables list pulled
every two minutes adds one small row per pull, not a body.

`syncer rebuild` (syncer/rebuild.py) replays the answers in order of receipt; the
daemon's daily `retention` drops the answers a rebuild does not need.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zstandard
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update

from syncer import tables as t
from syncer.client import Page
from syncer.config import ArchiveConfig
from syncer.db import dumps, prepared, upsert
from syncer.ledger import ledger_id_of
from syncer.load import Counts

log = logging.getLogger("syncer.archive")

# What kind of pull an answer came from.
FULL_LIST, WINDOW, DATE, RESCAN = "full_list", "window", "date", "rescan"

CODEC = "zstd"
ZSTD_LEVEL = 9
BATCH = 200  # answers read per query while replaying


def compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)


def decompress(codec: str, data: bytes) -> bytes:
    if codec == "zstd":
        return zstandard.ZstdDecompressor().decompress(data)
    if codec == "zlib":
        return zlib.decompress(data)
    raise ValueError(f"archived body in unknown codec {codec!r}")


def params_key(params: Mapping[str, Any] | None) -> str:
    """Parameters as canonical JSON text (sorted, values as the URL sends them)."""
    return dumps({k: str(v) for k, v in params.items()}) if params else ""


# The columns of an answer row besides its body, as `keep` writes them.
_ANSWER_COLUMNS = ("license", "function", "params", "params_key", "kind", "state", "ledger_id",
                   "received_at", "records", "written", "quarantined")


def _repeat_statement(_dialect: object) -> Any:
    """One statement for an answer equal to the previous one of its parameters: the
    answer row is inserted referring to that answer's body when the body's hash is the
    new answer's (no row is inserted, and none returned, otherwise)."""
    ra, ab = t.response_archive.c, t.archive_bodies.c
    previous = select(func.max(ra.id)).where(
        ra.license == bindparam("license"), ra.function == bindparam("function"),
        ra.params_key == bindparam("params_key")).scalar_subquery()
    values = [bindparam(name, type_=ra[name].type) for name in _ANSWER_COLUMNS]
    source = (select(*values, ra.body_id).select_from(t.response_archive)
              .join(t.archive_bodies, ab.id == ra.body_id)
              .where(ra.id == previous, ab.content_hash == bindparam("content_hash")))
    return (insert(t.response_archive)
            .from_select([*_ANSWER_COLUMNS, "body_id"], source)
            .returning(ra.id))


def keep(conn: Connection, license: str, function: str, params: Mapping[str, Any] | None,
         page: Page, *, kind: str, state: Mapping[str, Any], counts: Counts,
         received_at: dt.datetime) -> int:
    """Archive one answer on the caller's transaction; returns its id.

    An answer equal to the previous one of its parameters (most pulls of a day: an
    unchanged list, an empty window's `[]`) costs one statement; a new body three
    (the attempt, the body, the answer)."""
    ab = t.archive_bodies.c
    digest = hashlib.sha256(page.content).hexdigest()
    answer = {"license": license, "function": function,
              "params": {k: str(v) for k, v in params.items()} if params else None,
              "params_key": params_key(params), "kind": kind, "state": dict(state) or None,
              "ledger_id": ledger_id_of(page.ticket), "received_at": received_at,
              "records": len(page.records), "written": counts.written,
              "quarantined": counts.quarantined}
    repeated = conn.execute(prepared(conn, ("repeated_answer",), _repeat_statement),
                            {**answer, "content_hash": digest}).scalar()
    if repeated is not None:
        return int(repeated)
    body_id = int(conn.execute(
        prepared(conn, ("new_body",), lambda _: insert(t.archive_bodies).returning(ab.id)),
        {"license": license, "content_hash": digest, "codec": CODEC,
         "raw_bytes": len(page.content), "body": compress(page.content)},
    ).scalar_one())
    return int(conn.execute(
        prepared(conn, ("new_answer",), lambda _: insert(t.response_archive)
                 .returning(t.response_archive.c.id)),
        {**answer, "body_id": body_id},
    ).scalar_one())


@dataclass(frozen=True)
class Answer:
    """One archived answer, without its body."""

    id: int
    function: str
    params: dict[str, str]
    kind: str
    state: dict[str, Any]
    received_at: dt.datetime
    records: int
    body_id: int


def answers(engine: Engine, license: str, functions: Sequence[str], *, after: int = 0,
            upto: int | None = None) -> Iterator[Answer]:
    """The license's answers of these functions in order of receipt, past id `after`."""
    ra = t.response_archive.c
    while True:
        query = (select(ra.id, ra.function, ra.params, ra.kind, ra.state, ra.received_at,
                        ra.records, ra.body_id)
                 .where(ra.license == license, ra.function.in_(functions), ra.id > after)
                 .order_by(ra.id).limit(BATCH))
        if upto is not None:
            query = query.where(ra.id <= upto)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        for r in rows:
            yield Answer(int(r.id), r.function, dict(r.params or {}), r.kind, dict(r.state or {}),
                         r.received_at, int(r.records), int(r.body_id))
        if len(rows) < BATCH:
            return
        after = int(rows[-1].id)


def content(conn: Connection, body_id: int) -> bytes:
    """An archived body's bytes, as received."""
    row = conn.execute(select(t.archive_bodies.c.codec, t.archive_bodies.c.body)
                       .where(t.archive_bodies.c.id == body_id)).one()
    return decompress(row.codec, bytes(row.body))


def last_answer_id(conn: Connection, license: str) -> int:
    ra = t.response_archive.c
    return int(conn.execute(select(func.max(ra.id)).where(ra.license == license)).scalar() or 0)


# --- retention ----------------------------------------------------------------------


def droppable(rows: Sequence[Any], *, cutoff: dt.datetime) -> list[int]:
    """The ids among one function's answers (oldest first) that a rebuild does not need.

    Kept: every answer received after `cutoff`; the latest answer of each parameter
    set (a rebuild always reaches today's state); id-window answers with records
    (the history); and every other answer that wrote or quarantined something (its
    rows, or records a fixed parser may yet load, exist nowhere else). Dropped: the
    older answers that only repeated what was stored (a full list polled every few
    minutes, a day re-scan that found no change, an empty window).
    """
    latest: dict[str, int] = {}
    for r in rows:
        latest[r.params_key] = r.id
    keep_ids = set(latest.values())
    out = []
    for r in rows:
        if r.id in keep_ids or r.received_at >= cutoff:
            continue
        if r.kind == WINDOW and r.records > 0:
            continue
        if r.written or r.quarantined:
            continue
        out.append(int(r.id))
    return out


def retention(engine: Engine, keep_days: int, now: dt.datetime) -> int:
    """Drop the answers a rebuild does not need (`droppable`), then the bodies no
    answer refers to; returns the answers dropped. One transaction per function."""
    ra, ab = t.response_archive.c, t.archive_bodies.c
    cutoff = now - dt.timedelta(days=keep_days)
    with engine.connect() as conn:
        if conn.execute(select(ra.id).where(ra.received_at < cutoff).limit(1)).first() is None:
            return 0  # nothing old enough: no write at all
        groups = conn.execute(select(ra.license, ra.function).distinct()).all()
    dropped = 0
    for license, function in groups:
        with engine.begin() as conn:
            rows = conn.execute(
                select(ra.id, ra.params_key, ra.kind, ra.received_at, ra.records, ra.written,
                       ra.quarantined)
                .where(ra.license == license, ra.function == function).order_by(ra.id)
            ).all()
            ids = droppable(rows, cutoff=cutoff)
            for i in range(0, len(ids), 500):
                conn.execute(delete(t.response_archive).where(ra.id.in_(ids[i:i + 500])))
            dropped += len(ids)
    with engine.begin() as conn:
        conn.execute(delete(t.archive_bodies).where(
            ~select(ra.id).where(ra.body_id == ab.id).exists()))
    if dropped:
        log.info("archive retention: dropped %d answer(s) that only repeated stored data "
                 "(older than %d days)", dropped, keep_days)
    return dropped


def sizes(engine: Engine, license: str | None = None) -> dict[str, int]:
    """Answers, bodies, raw and stored bytes in the archive (of one license, or all)."""
    ra, ab = t.response_archive.c, t.archive_bodies.c
    with engine.connect() as conn:
        answers_q = select(func.count()).select_from(t.response_archive)
        bodies_q = select(func.count(), func.coalesce(func.sum(ab.raw_bytes), 0),
                          func.coalesce(func.sum(func.length(ab.body)), 0))
        if license is not None:
            answers_q = answers_q.where(ra.license == license)
            bodies_q = bodies_q.where(ab.license == license)
        count = int(conn.execute(answers_q).scalar_one())
        bodies, raw, stored = conn.execute(bodies_q).one()
    return {"answers": count, "bodies": int(bodies), "raw_bytes": int(raw),
            "stored_bytes": int(stored)}


RETENTION_TASK = "retention"  # resume_point (license "*") of the last daily retention
_next_check: dict[str, dt.datetime] = {}  # per database: no query before this


def daily_retention(engine: Engine, settings: ArchiveConfig, now: dt.datetime) -> None:
    """Run `retention` if a day has passed since it last ran on this database (any
    process: the UPDATE that claims the day is atomic, so one replica runs it)."""
    url = str(engine.url)
    if _next_check.get(url, now) > now:
        return
    _next_check[url] = now + dt.timedelta(hours=1)
    rp = t.resume_point.c
    with engine.connect() as conn:  # a read first: most checks find it ran today
        last = conn.execute(select(rp.updated_at).where(
            rp.license == "*", rp.task == RETENTION_TASK)).scalar()
    if last is not None and last > now - dt.timedelta(days=1):
        return
    with engine.begin() as conn:
        upsert(conn, t.resume_point, {"license": "*", "task": RETENTION_TASK,
                                      "started_at": now - dt.timedelta(days=2),
                                      "updated_at": now - dt.timedelta(days=2),
                                      "data": {}}, update=())
        claimed = conn.execute(
            update(t.resume_point)
            .where(rp.license == "*", rp.task == RETENTION_TASK,
                   rp.updated_at <= now - dt.timedelta(days=1))
            .values(updated_at=now)
        ).rowcount == 1  # the rows matched: no UPDATE ... RETURNING on MariaDB
    if claimed:
        retention(engine, settings.keep_days, now)
