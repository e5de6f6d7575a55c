"""Resume points: where a long task that commits as it goes stands (table resume_point).

`rebuild` keeps the last archived answer it replayed; `backfill` the full lists it
stored on its API day; `reset` the archived answers a `--drop-rows` put behind.
Each point is written on the caller's transaction, with the work it records.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select, update

from syncer import tables as t
from syncer.ledger import upsert_ignore, utcnow


def read_point(conn: Connection, license: str, task: str) -> dict[str, Any] | None:
    rp = t.resume_point.c
    data = conn.execute(select(rp.data).where(rp.license == license, rp.task == task)).scalar()
    return dict(data) if data is not None else None


def save_point(conn: Connection, license: str, task: str, data: dict[str, Any]) -> None:
    now = utcnow()
    rp = t.resume_point.c
    upsert_ignore(conn, t.resume_point, {"license": license, "task": task, "started_at": now,
                                         "updated_at": now, "data": data})
    conn.execute(update(t.resume_point).where(rp.license == license, rp.task == task)
                 .values(updated_at=now, data=data))


def clear_point(conn: Connection, license: str, task: str) -> None:
    rp = t.resume_point.c
    conn.execute(delete(t.resume_point).where(rp.license == license, rp.task == task))
