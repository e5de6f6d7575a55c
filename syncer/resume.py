"""Resume points: where a long task that commits as it goes stands (table resume_point).

`rebuild` keeps the last archived answer it replayed; `backfill` the full lists it
stored on its API day; `reset` the archived answers a `--drop-rows` put behind.
Each point is written on the caller's transaction, with the work it records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, select

from syncer import tables as t
from syncer.db import upsert
from syncer.ledger import utcnow


def read_point(conn: Connection, license: str, task: str) -> dict[str, Any] | None:
    rp = t.resume_point.c
    data = conn.execute(select(rp.data).where(rp.license == license, rp.task == task)).scalar()
    return dict(data) if data is not None else None


def save_point(conn: Connection, license: str, task: str, data: dict[str, Any]) -> None:
    now = utcnow()
    upsert(conn, t.resume_point, {"license": license, "task": task, "started_at": now,
                                  "updated_at": now, "data": data}, update=("updated_at", "data"))


REBUILD = "rebuild"  # the rebuild's task: its point exists while a rebuild is unfinished


def unfinished_rebuilds(conn: Connection, license: str | None = None
                        ) -> dict[str, tuple[dt.datetime, list[str]]]:
    """Per license, since when a rebuild has been unfinished (running, or killed before
    its end: its tables hold only part of their rows until it is run again) and which
    resources it rebuilds."""
    rp = t.resume_point.c
    query = select(rp.license, rp.started_at, rp.data).where(rp.task == REBUILD)
    if license is not None:
        query = query.where(rp.license == license)
    return {name: (started, list((data or {}).get("resources", ())))
            for name, started, data in conn.execute(query)}


def clear_point(conn: Connection, license: str, task: str) -> None:
    rp = t.resume_point.c
    conn.execute(delete(t.resume_point).where(rp.license == license, rp.task == task))


class BackfillProgress:
    """The full lists a backfill stored on its API day, so that a rerun the same day
    (a small `--max-requests`, a budget stop, Ctrl-C) goes on to the id windows
    instead of pulling them again: without it, `--max-requests 3` repeated never gets
    past the first three lists. A rerun is the same backfill when it asks for the same
    resources on the same API day; another day starts the lists afresh (they may have
    changed), and so does another `--resource` choice (a new backfill, asked for).
    A backfill that finishes forgets the record. Id windows need no record: their
    cursors move with their rows.
    """

    TASK = "backfill"

    def __init__(self, engine: Engine, license: str, day: dt.date, resources: Sequence[str]) -> None:
        self.engine, self.license, self.day = engine, license, day.isoformat()
        self.resources = sorted(resources)
        with engine.connect() as conn:
            point = read_point(conn, license, self.TASK) or {}
        same = point.get("day") == self.day and point.get("resources") == self.resources
        self.lists: set[str] = set(point.get("lists", ())) if same else set()

    def stored(self, resource: str) -> None:
        # Its own transaction, after the list's: a crash between the two costs one
        # request on the rerun, never a list skipped without its rows.
        self.lists.add(resource)
        with self.engine.begin() as conn:
            save_point(conn, self.license, self.TASK, {"day": self.day, "resources": self.resources,
                                                       "lists": sorted(self.lists)})

    def finished(self) -> None:
        with self.engine.begin() as conn:
            clear_point(conn, self.license, self.TASK)
