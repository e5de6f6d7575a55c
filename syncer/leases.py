"""Leases: who runs a job right now, and the single-writer rule of SQLite.

Two kinds, two functions families, no flag between them:
- a job's lease lives in its `sync_state` row, beside the due time it guards: the
  daemon takes it only when the job is due (`claim_on`, which returns the job's state
  in the same statement), a rebuild or reset takes it whether or not the job is due
  (`JobLeases`), and the run's end stores the next run and lets go in one statement
  (`finish_on`);
- the writer lock (`lock_writer`), in `job_lease`: a database with one writer at a
  time (SQLite, `Dialect.single_writer`) has one daemon, and a rebuild or reset keeps
  it off while it works.

A holder is `host:pid:random[:task]` (`owner_id`). Every lease expires unless renewed
(`renew`, the daemon's heartbeat; `JobLeases.keep_alive`); a holder that died on this
host (a crash, a SIGKILL) is taken over at once, not after its expiry (`_dead_here`).
The atomic statements themselves are the database's (`Dialect.claim`,
`Dialect.finish`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, select, update

from syncer import dialects
from syncer import tables as t
from syncer.db import prepared

log = logging.getLogger("syncer.leases")

WRITER_LOCK = "__daemon__"  # job_lease's row of the single writer (license "*")


@dataclass(frozen=True)
class LeaseHome:
    """Where leases are kept: a table, its two key columns, its holder and its expiry."""

    table: Table
    keys: tuple[str, str]
    owner: str
    expires: str


JOBS = LeaseHome(t.sync_state, ("license", "resource"), "lease_owner", "lease_expires_at")
LOCKS = LeaseHome(t.job_lease, ("license", "job"), "owner", "expires_at")


class Held(Exception):
    """Another live process holds a lease this work needs."""


def _this_host() -> str:
    """The host name, with the PID namespace where there is one: two containers may
    share a host name, never a PID namespace."""
    try:
        return f"{socket.gethostname()}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def owner_id(task: str | None = None) -> str:
    """`host:pid:random`, and `:task` for a command's leases (`rebuild`, `reset`):
    who holds a lease, and whether it can still be alive."""
    owner = f"{_this_host()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    return f"{owner}:{task}" if task else owner


def _dead_here(owner: str | None) -> bool:
    """Whether `owner` was a process on this host that no longer runs (a crash, a
    SIGKILL): its leases need not wait for their expiry."""
    if owner is None:
        return False
    host, pid_text = [*owner.split(":"), "", ""][:2]
    if host != _this_host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, but belongs to someone else
        pass
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether `pid` has ended but its parent has not yet reaped it (a SIGKILLed command
    whose shell or supervisor has not waited for it): it holds nothing any more."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (name) state ...": the name may hold ')' itself, the state follows the last.
            return stat.read().rpartition(b")")[2].split()[:1] == [b"Z"]
    except OSError:  # no /proc (not Linux), or it ended in between
        return False


def held_by(owner: str | None) -> str:
    """Who a lease's holder is, for a person: a daemon, or a command (`…:rebuild`)."""
    if owner is None:
        return "another process"
    parts = owner.split(":")
    what = f"a `syncer {parts[3]}`" if len(parts) > 3 else "a daemon"
    return f"{what} (process {parts[1]} on {parts[0].partition('/')[0]})" if len(parts) > 1 else what


@dataclass(frozen=True)
class Claim:
    """What a claim found. Taken: the lease is ours, `state` the job's sync_state row
    (None for the writer lock). Not taken: `due_at` is the job's stored next run when
    it is not due yet (a replica just ran it), None when a live process holds it."""

    taken: bool
    state: Any = None
    due_at: dt.datetime | None = None


def _claim(conn: Connection, home: LeaseHome, key: tuple[str, str], owner: str,
           now: dt.datetime, ttl: dt.timedelta, *, due: bool) -> Claim:
    row = dialects.of(conn).claim(conn, home, key, owner, now + ttl, now, due=due)
    if row is not None:
        return Claim(True, row if home is JOBS else None)
    c = home.table.c
    where = (c[home.keys[0]] == key[0], c[home.keys[1]] == key[1])
    stored = conn.execute(select(*home.table.c).where(*where)).first()
    if stored is None:  # deleted in between (a reset): nothing to run
        return Claim(False)
    if due and stored.next_run_at is not None and stored.next_run_at > now:
        return Claim(False, due_at=stored.next_run_at)
    held_by = stored._mapping[home.owner]
    if not _dead_here(held_by):
        return Claim(False)
    # Atomic: the UPDATE names the holder it replaces.
    taken = conn.execute(update(home.table).where(*where, c[home.owner] == held_by)
                         .values({home.owner: owner, home.expires: now + ttl})).rowcount
    if not taken:
        return Claim(False)
    log.info("%s/%s: took over the lease of %s, which no longer runs", key[0], key[1], held_by)
    return Claim(True, conn.execute(select(*home.table.c).where(*where)).first()
                 if home is JOBS else None)


def _let_go(conn: Connection, home: LeaseHome, key: tuple[str, str], owner: str) -> None:
    c = home.table.c
    lic, name = home.keys
    conn.execute(prepared(conn, ("release", home.table.name), lambda _: update(home.table).where(
        c[lic] == bindparam("lic"), c[name] == bindparam("name"),
        c[home.owner] == bindparam("holder")).values({home.owner: None, home.expires: None})),
        {"lic": key[0], "name": key[1], "holder": owner})


def _holder(engine: Engine, home: LeaseHome, key: tuple[str, str]) -> str | None:
    c = home.table.c
    with engine.connect() as conn:
        return conn.execute(select(c[home.owner]).where(
            c[home.keys[0]] == key[0], c[home.keys[1]] == key[1])).scalar()


# --- a job's lease -----------------------------------------------------------------------


def claim_on(conn: Connection, license: str, job: str, owner: str, now: dt.datetime,
             ttl: dt.timedelta) -> Claim:
    """Take the job's lease, on the caller's transaction, if the job is due and its lease
    is free, expired, ours, or held by a dead process of this host; the job's state
    comes with it (one statement in the common case)."""
    return _claim(conn, JOBS, (license, job), owner, now, ttl, due=True)


def claim(engine: Engine, license: str, job: str, owner: str, now: dt.datetime,
          ttl: dt.timedelta) -> bool:
    """Take a job's lease whether or not it is due (a rebuild or reset keeps the daemon
    off the job while it works)."""
    with engine.begin() as conn:
        return _claim(conn, JOBS, (license, job), owner, now, ttl, due=False).taken


def release(engine: Engine, license: str, job: str, owner: str) -> None:
    """Let go of a job's lease if it is still ours."""
    with engine.begin() as conn:
        _let_go(conn, JOBS, (license, job), owner)


def holder(engine: Engine, license: str, job: str) -> str | None:
    """Who holds a job's lease, for messages."""
    return _holder(engine, JOBS, (license, job))


def finish_on(conn: Connection, license: str, job: str, owner: str, **values: Any) -> None:
    """Store the job's state after its run (`values`: its next run and what the run
    moved) and let go of its lease if it is still ours: one statement."""
    dialects.of(conn).finish(conn, license, job, owner, values)


def _update_held(engine: Engine, owner: str, values: Callable[[LeaseHome], dict[str, Any]]) -> None:
    """Set `values(home)` on every lease and lock `owner` holds."""
    with engine.begin() as conn:
        for home in (JOBS, LOCKS):
            conn.execute(update(home.table).where(home.table.c[home.owner] == owner)
                         .values(values(home)))


def renew(engine: Engine, owner: str, now: dt.datetime, ttl: dt.timedelta) -> None:
    """Push back the expiry of every lease and lock `owner` holds."""
    _update_held(engine, owner, lambda home: {home.expires: now + ttl})


def let_go_all(engine: Engine, owner: str) -> None:
    """Let go of every lease and lock `owner` holds (a process stopping)."""
    _update_held(engine, owner, lambda home: {home.owner: None, home.expires: None})


# --- the single writer -----------------------------------------------------------------


def lock_writer(engine: Engine, owner: str, now: dt.datetime, ttl: dt.timedelta) -> str | None:
    """On a database with one writer at a time (SQLite), take the writer lock; returns
    who holds it when another live process does (None: taken, or not needed)."""
    if not dialects.of(engine).single_writer:
        return None
    with engine.begin() as conn:
        if _claim(conn, LOCKS, ("*", WRITER_LOCK), owner, now, ttl, due=False).taken:
            return None
    return _holder(engine, LOCKS, ("*", WRITER_LOCK)) or "another process"


def unlock_writer(engine: Engine, owner: str) -> None:
    """Let go of the writer lock if `owner` holds it."""
    with engine.begin() as conn:
        _let_go(conn, LOCKS, ("*", WRITER_LOCK), owner)


# --- a command's leases ------------------------------------------------------------------


class JobLeases:
    """A license's job leases (and the writer lock where there is one), held while a
    rebuild or reset changes its tables and state (renewed as it goes), so no daemon
    replica runs those jobs meanwhile."""

    def __init__(self, engine: Engine, license: str, jobs: Sequence[str], lease_seconds: float,
                 task: str) -> None:
        self.engine, self.license, self.jobs, self.task = engine, license, list(jobs), task
        self.owner = owner_id(task)
        self.ttl = dt.timedelta(seconds=lease_seconds)
        self.held: list[str] = []
        self.writer = False
        self.renewed = time.monotonic()

    def take(self) -> None:
        """Take every lease, or none: Held names the holder of the first one refused."""
        now = dt.datetime.now(dt.UTC)
        other = lock_writer(self.engine, self.owner, now, self.ttl)
        if other is not None:
            self._refused(other, "the database")
        self.writer = True
        for job in self.jobs:
            if not claim(self.engine, self.license, job, self.owner, now, self.ttl):
                self._refused(holder(self.engine, self.license, job), f"its job {job!r}")
            self.held.append(job)

    def _refused(self, other: str | None, what: str) -> None:
        self.give_back()
        raise Held(f"license {self.license!r}: {held_by(other)} holds {what}; stop it (or "
                   f"wait for it to finish) and run the {self.task} again")

    def keep_alive(self) -> None:
        if time.monotonic() - self.renewed > self.ttl.total_seconds() / 3:
            renew(self.engine, self.owner, dt.datetime.now(dt.UTC), self.ttl)
            self.renewed = time.monotonic()

    def give_back(self) -> None:
        for job in self.held:
            release(self.engine, self.license, job, self.owner)
        self.held.clear()
        if self.writer:
            unlock_writer(self.engine, self.owner)
            self.writer = False
