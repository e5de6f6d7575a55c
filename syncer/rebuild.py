"""`syncer rebuild`: the synced tables re-derived from the response archive, no request sent.

The license's rows of the chosen resources are deleted, then every archived answer
of their functions is replayed in order of receipt through the live sync's own
parse (`parse_records`) and write (`write_parsed`), each with the time it was
received as its "now". So rows, children, `deleted_at` marks and `synced_at` end
as the live pulls left them, with this version's parser: records it now parses
land (and leave the quarantine), the others stay quarantined. Cursors only move
forward (a rebuild never makes the daemon fetch again what it has).

Resumable: each answer commits with the rebuild's resume point (the last answer
replayed); a rerun with the same resources continues there. Until it ends, `status`,
the status page and `audit` say the rebuild is unfinished (`resume.unfinished_rebuilds`):
its tables hold only part of their rows. While it runs it holds the leases of the
license's jobs, so a daemon (any replica) skips them; it is refused while a daemon
holds them, and a rebuild killed on this host does not block its own rerun (see
`leases`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, delete, func, select

from syncer import archive
from syncer import jobs as registry
from syncer import tables as t
from syncer.client import page_records
from syncer.config import Config, LicenseConfig
from syncer.leases import JobLeases
from syncer.load import Counts, quarantine_hash, quarantine_raw
from syncer.parse import ParseContext
from syncer.resources import BY_FUNCTION, Resource
from syncer.resume import REBUILD, clear_point, read_point, save_point
from syncer.sync import (
    _keepable,
    _raw_id,
    forget_marks,
    parse_context,
    parse_records,
    read_state,
    save_state,
    write_parsed,
)

log = logging.getLogger("syncer.rebuild")

TASK = REBUILD
RESET_TASK = "reset"  # resume_point data: {resource: last answer id before a --drop-rows}


class RebuildRefused(Exception):
    """A daemon holds the license's jobs, or the archive cannot rebuild what is stored."""


@dataclass
class RebuildResult:
    license: str
    answers: int = 0
    counts: dict[str, Counts] = field(default_factory=dict)
    unquarantined: int = 0
    resumed: bool = False
    seconds: float = 0.0


def job_names(resources: Sequence[Resource]) -> list[str]:
    """The daemon jobs that write these resources' tables or state."""
    names = {r.name for r in resources}
    return [job.name for job in registry.listed() if job.resource.name in names]


def _check_coverage(conn: Connection, license: str, resources: Sequence[Resource]) -> None:
    """Refuse to empty a table whose rows were stored before the archive began (an
    upgrade, or `[archive] enabled = false`): the archive could not give them back."""
    ra = t.response_archive.c
    for resource in resources:
        first = conn.execute(select(func.min(ra.received_at)).where(
            ra.license == license, ra.function == resource.function)).scalar()
        table = resource.table
        older = select(func.count()).select_from(table).where(table.c.license == license)
        if first is not None:
            older = older.where(table.c.synced_at < first)
        count = int(conn.execute(older).scalar_one())
        if count:
            raise RebuildRefused(
                f"license {license!r}: {count} row(s) of {resource.name} were stored before its "
                "first archived answer (the archive was off or newer than them); a rebuild "
                "would lose them. Leave --resource " + resource.name + " out, or `syncer reset "
                f"{resource.name} --drop-rows` and backfill it (which archives it)")


def _wipe(conn: Connection, license: str, resources: Sequence[Resource]) -> None:
    for resource in resources:
        for table in (*resource.children, resource.table):
            conn.execute(delete(table).where(table.c.license == license))
    forget_marks(conn, license, resources)  # the next pull compares row by row again


class _Quarantined:
    """The license's quarantined records of one resource, to release those that now parse."""

    def __init__(self, conn: Connection, license: str, resource: Resource, ctx: ParseContext) -> None:
        q = t.quarantine.c
        self.license, self.resource, self.ctx = license, resource, ctx
        self.by_key: dict[str | None, set[str]] = {}
        for key, digest in conn.execute(select(q.record_key, q.raw_hash).where(
                q.license == license, q.resource == resource.name)):
            self.by_key.setdefault(key, set()).add(digest)

    def release(self, conn: Connection, records: Sequence[object], rejected_raw: Sequence[object]) -> int:
        """Delete the entries of records in this answer that loaded this time."""
        if not self.by_key:
            return 0
        still = {quarantine_hash(quarantine_raw(raw)) for raw in rejected_raw}
        landed: set[str] = set()
        for raw in records:
            rid = _raw_id(raw)
            hashes = self.by_key.get(str(rid) if rid is not None else None)
            if not hashes:
                continue
            digest = quarantine_hash(quarantine_raw(_keepable(raw, self.ctx)))
            if digest in hashes and digest not in still:
                landed.add(digest)
        if not landed:
            return 0
        q = t.quarantine.c
        conn.execute(delete(t.quarantine).where(q.license == self.license,
                                                q.resource == self.resource.name,
                                                q.raw_hash.in_(sorted(landed))))
        for remaining in self.by_key.values():
            remaining.difference_update(landed)
        return len(landed)


def rebuild(engine: Engine, config: Config, license: LicenseConfig, resources: Sequence[Resource],
            *, on_answer: Callable[[archive.Answer], None] | None = None) -> RebuildResult:
    """Rebuild these resources of one license from the archive (see the module doc)."""
    started = time.perf_counter()
    result = RebuildResult(license.name)
    ctx = parse_context(config, license)
    names = sorted(r.name for r in resources)
    leases = JobLeases(engine, license.name, job_names(resources), config.schedule.lease_seconds, TASK)
    leases.take()
    try:
        with engine.begin() as conn:
            point = read_point(conn, license.name, TASK)
            if point is not None and point.get("resources") == names:
                result.resumed = True
            else:
                _check_coverage(conn, license.name, resources)
                _wipe(conn, license.name, resources)
                point = {"resources": names, "after": 0,
                         "upto": archive.last_answer_id(conn, license.name)}
                save_point(conn, license.name, TASK, point)
            floors = read_point(conn, license.name, RESET_TASK) or {}
            quarantined = {r.name: _Quarantined(conn, license.name, r, ctx) for r in resources}
            cursors = {r.name: int(getattr(read_state(conn, license.name, r.name), "cursor", 0) or 0)
                       for r in resources}
        log.info("%s: rebuilding %s from the archive%s", license.name, ", ".join(names),
                 f" (resuming after answer {point['after']})" if result.resumed else "")
        functions = [r.function for r in resources]
        for answer in archive.answers(engine, license.name, functions, after=int(point["after"]),
                                      upto=int(point["upto"])):
            resource = BY_FUNCTION[answer.function]
            if answer.id <= int(floors.get(resource.name, 0)):
                continue  # before a `reset --drop-rows`: those rows were dropped on purpose
            leases.keep_alive()
            with engine.begin() as conn:
                records = page_records(answer.function, archive.content(conn, answer.body_id),
                                       config.api.tz)
                parsed = parse_records(resource, records, ctx)
                counts = write_parsed(conn, license.name, resource, parsed, answer.received_at,
                                      full_list=answer.kind == archive.FULL_LIST)
                result.unquarantined += quarantined[resource.name].release(
                    conn, records, [r.raw for r in parsed.rejected])
                if "cursor" in answer.state and int(answer.state["cursor"]) > cursors[resource.name]:
                    cursors[resource.name] = int(answer.state["cursor"])
                    save_state(conn, license.name, resource.name, cursor=cursors[resource.name])
                save_point(conn, license.name, TASK, {**point, "after": answer.id})
            result.counts.setdefault(resource.name, Counts())
            result.counts[resource.name] += counts
            result.answers += 1
            if result.answers % 25 == 0:
                log.info("%s: %d archived answers replayed (up to id %d of %d)", license.name,
                         result.answers, answer.id, point["upto"])
            if on_answer is not None:
                on_answer(answer)
        with engine.begin() as conn:
            clear_point(conn, license.name, TASK)
    finally:
        leases.give_back()
    result.seconds = time.perf_counter() - started
    return result
