"""`syncer reset`: forget resources' sync state so they are pulled again (a full refresh).

The next backfill (or the daemon) pulls a reset resource from its first id, or,
with `--since`, from the first id of that day (found now with the backfill's own
`date` probes, a few budgeted requests). Rows stay and are overwritten as the new
answers arrive; with `--drop-rows` the license's rows of the resource (children
included) are deleted first, and `syncer rebuild` then starts that resource after
the answers archived so far, so it does not bring the dropped rows back. The
archive itself is kept: every answer was paid for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select

from syncer import archive
from syncer import tables as t
from syncer.config import Config, LicenseConfig
from syncer.leases import JobLeases
from syncer.ledger import utcnow
from syncer.rebuild import RESET_TASK, job_names
from syncer.resources import Pull, Resource
from syncer.resume import read_point, save_point
from syncer.runtime import Runtime
from syncer.sync import forget_marks


@dataclass
class ResetResult:
    resource: str
    cursor_was: int | None
    rows: int  # rows of the license in the resource's table (before a drop)
    dropped: bool
    cursor: int = 0  # where the next pull starts after (0: the first id)


def since_applies(resource: Resource) -> bool:
    return resource.pull is Pull.ID_WINDOW and "date" in resource.filters


def reset(engine: Engine, config: Config, license: LicenseConfig, resources: Sequence[Resource],
          *, since: dt.date | None = None, drop_rows: bool = False) -> list[ResetResult]:
    """Forget the state of these resources of one license (see the module doc)."""
    leases = JobLeases(engine, license.name, job_names(resources), config.schedule.lease_seconds,
                       "reset")
    leases.take()
    out = []
    try:
        with engine.begin() as conn:
            floors = read_point(conn, license.name, RESET_TASK) or {}
            last = archive.last_answer_id(conn, license.name)
            for resource in resources:
                state = t.sync_state.c
                cursor = conn.execute(select(state.cursor).where(
                    state.license == license.name, state.resource == resource.name)).scalar()
                table = resource.table
                rows = int(conn.execute(select(func.count()).select_from(table)
                                        .where(table.c.license == license.name)).scalar_one())
                conn.execute(delete(t.sync_state).where(
                    state.license == license.name,
                    state.resource.in_(job_names([resource]))))
                forget_marks(conn, license.name, [resource])  # a full refresh parses everything
                if drop_rows:
                    for tbl in (*resource.children, table):
                        conn.execute(delete(tbl).where(tbl.c.license == license.name))
                    floors[resource.name] = last
                out.append(ResetResult(resource.name, cursor, rows, drop_rows))
            if drop_rows:
                save_point(conn, license.name, RESET_TASK, floors)
    finally:
        leases.give_back()
    if since is not None:
        with Runtime(engine, config, license, purpose="backfill") as rt:
            today = utcnow().astimezone(config.api.tz).date()
            for result, resource in zip(out, resources, strict=True):
                if since_applies(resource):
                    result.cursor = rt.sync.start_history(resource, since, today)
    return out
