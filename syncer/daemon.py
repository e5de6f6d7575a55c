"""`syncer run`: one scheduled job per (license, job), paced by the budget planner.

The jobs are declared in `syncer.jobs` (each resource's own pull, plus the day
re-checks and the coupon re-scan). Each run is one pull (one request, two for a
recheck, and for coupons a look one window further on the first empty window of a
day); afterwards the planner decides the job's next run and it is stored in
`sync_state.next_run_at`, shared by every replica. Each run logs one INFO line
(requests, rows, quarantined, cursor, lag, next run), and each license one summary
line per API day (requests spent of its budget, rows written, errors).

Replicas: before running a job a process claims its lease in its `sync_state` row
(one atomic upsert, which takes it only when the job is due and returns the job's
state), renews the lease while the job runs and lets it go with the next run
stored, so a job runs in one place at a time and never twice for one due time. A
replica that dies leaves leases that expire after `schedule.lease_seconds` (45 s):
another replica takes its jobs over at their next due time. SQLite is
single-process: a second daemon on the same file is refused (the process lock
`leases.lock_writer`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from syncer import archive, audit, outcomes, sales
from syncer import jobs as registry
from syncer import tables as t
from syncer.client import Cancelled
from syncer.config import Config, LicenseConfig
from syncer.db import error_summary, prepared
from syncer.dialects.types import UtcDateTime
from syncer.jobs import DEFAULT_JOBS
from syncer.leases import (
    claim_on,
    finish_on,
    held_by,
    let_go_all,
    lock_writer,
    owner_id,
    release,
    renew,
    unlock_writer,
)
from syncer.ledger import Clock, api_day, spent_today, utcnow
from syncer.load import Counts
from syncer.planner import JobSpec, OpeningHours, SalesProfile, plan
from syncer.runtime import Failure, Pulled, Runtime

log = logging.getLogger("syncer.daemon")

class DaemonConflict(Exception):
    """Another daemon already runs on this single-writer (SQLite) database."""


def next_run_after(conn: Connection, config: Config, license: LicenseConfig, job: str,
                   ran_at: dt.datetime, now: dt.datetime,
                   jobs: Sequence[JobSpec] = DEFAULT_JOBS,
                   spent: tuple[dt.date, int] | None = None, *,
                   hours: OpeningHours, profile: SalesProfile | None = None,
                   recent: int | None = None) -> dt.datetime:
    """When the planner runs `job` next, planned from its run at `ran_at` (not stored
    yet); `spent`: the day's count as a spend just returned it (API day, count), read
    here when it is of another day or None. A job's next run depends on its own last
    run and the day's count only (`planner.plan`), so the other jobs' runs are not read.
    `hours`: the config's opening hours, parsed once by the caller; `profile` and
    `recent`: the license's sales, learned and seen (`syncer.sales`)."""
    tz = config.api.tz
    day = api_day(now, tz)
    count = spent[1] if spent is not None and spent[0] == day else \
        spent_today(conn, license.name, day)
    planned = plan(jobs, now=now, tz=tz, hours=hours, spent=count,
                   spendable=config.spendable(license), last_runs={job: ran_at},
                   profile=profile, recent=recent)
    return planned.next_run[job]


# --- one license ---------------------------------------------------------------------


@dataclass
class RunResult:
    job: str
    next_run: dt.datetime
    ran: bool = True
    requests: int = 0
    written: int = 0
    error: str | None = None
    exit_code: int = outcomes.EXIT_OK  # the outcome's, for `run --once`
    outcome: str = outcomes.OK.name  # the name of its `outcomes` row
    scope: outcomes.Scope = outcomes.Scope.NONE  # how far its outcome stops
    license: str = ""
    counts: Counts = field(default_factory=Counts)
    cursor: int | None = None  # an id window's cursor, a re-scan's position, after the run
    failures: int = 0  # failed runs of the job in a row, this one included


@dataclass
class _Day:
    """What one license did in one API day, for its summary line."""

    day: dt.date
    rows: int = 0
    errors: int = 0


class LicenseJobs:
    """The jobs of one license, and how to run one of them."""

    def __init__(self, engine: Engine, config: Config, license: LicenseConfig, *, owner: str,
                 clock: Clock = utcnow, jobs: Sequence[JobSpec] = DEFAULT_JOBS,
                 follow_sales: bool = True) -> None:
        self.engine = engine
        self.config = config
        self.license = license
        self.name = license.name
        self.owner = owner
        self.clock = clock
        self.tz = config.api.tz
        self.hours = config.schedule.hours()
        self.ttl = dt.timedelta(seconds=config.schedule.lease_seconds)
        self.jobs = enabled_jobs(config, jobs)
        self.specs = {j.name: j for j in self.jobs}
        # The sales the plan follows (see `syncer.sales`): off, the configured hours
        # alone decide and the orders' share is spread evenly over them.
        self.follow_sales = follow_sales
        self._profiles = sales.ProfileCache()
        self._recent: int | None = None
        self.spendable = config.spendable(license)
        self.runtime = Runtime(engine, config, license, purpose="run", clock=clock)
        self.ledger = self.runtime.ledger
        # Every job's key from the start: /metrics reads it from its own threads while jobs
        # add to it (a key added mid-read would fail the read), and a counter starts at 0.
        self.written: dict[str, int] = dict.fromkeys((j.name for j in self.jobs), 0)
        # The API day's figures for its summary; the license's jobs run in parallel threads.
        self._today = _Day(api_day(clock(), self.tz))
        self._day_lock = threading.Lock()
        # The license's stop last logged: every job of a stopped license fails alike, and
        # one warning says it (the others go to DEBUG) until a job gets through again.
        self._stop_said: str | None = None
        self._wake_if_credentials_changed()

    def _wake_if_credentials_changed(self) -> None:
        """Refused credentials (name, token or base_url) that have since changed in the config:
        run everything now."""
        state = t.license_state.c
        with self.engine.begin() as conn:
            refused = conn.execute(select(state.auth_rejected_fingerprint)
                                   .where(state.license == self.name)).scalar()
            if refused is None or refused == self.license.fingerprint(self.config.api.base_url):
                return
            conn.execute(update(t.license_state).where(state.license == self.name)
                         .values(auth_rejected_fingerprint=None, auth_rejected_at=None,
                                 auth_rejected_reason=None))
            conn.execute(update(t.sync_state).where(t.sync_state.c.license == self.name)
                         .values(next_run_at=None))
        log.info("license %r: credentials or api.base_url changed since they were refused; "
                 "trying again", self.name)

    def close(self) -> None:
        self.runtime.close()

    def due_times(self) -> dict[str, dt.datetime | None]:
        """Each job's stored next run (None: never planned yet)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.sync_state.c.resource, t.sync_state.c.next_run_at)
                                .where(t.sync_state.c.license == self.name)).all()
        stored = {r.resource: r.next_run_at for r in rows}
        return {j.name: stored.get(j.name) for j in self.jobs}

    def run(self, job: str) -> RunResult:
        """Run one job if it is due and ours to run; store and return its next run.

        Three transactions around the pull: the claim, which takes the lease only when
        the job is due (a replica that just ran it has stored its next run) and returns
        the job's state; the pull's own (the ledger's before each request, the answer's
        with its rows); and the plan, with the next run stored and the lease let go in
        one statement."""
        now = self.clock()
        archive.daily_retention(self.engine, self.config.archive, now)  # once a day, any replica
        with self.engine.begin() as conn:
            taken = claim_on(conn, self.name, job, self.owner, now, self.ttl)
        if not taken.taken:
            # Not due (a replica just ran it: its next run is stored) or running elsewhere.
            return RunResult(job, taken.due_at or now + dt.timedelta(seconds=10), ran=False,
                             license=self.name)
        state = taken.state
        released = False
        try:
            self.summarize_day(now)
            # Its own requests: the license's other jobs send through the same ledger,
            # in other threads, at the same time.
            with self.ledger.for_job(job) as sent:
                result, pulled = self._execute(job, now, state)
            result.requests = sent.sent
            self.written[job] = self.written.get(job, 0) + result.written
            caught_up = False
            with self.engine.begin() as conn:
                if pulled is not None and registry.BY_NAME[job].history:
                    caught_up = self._catching_up(conn, job, state, pulled, now)
                profile, recent = self._sales(conn, job, now)
                if pulled is None or not pulled.more:
                    # Planned from this run, not the one before it (not stored yet): an
                    # overdue job (after the night, or when the shop opens and intervals
                    # shrink) was otherwise planned for "now" and ran twice in a row for
                    # one due time (found by benchmarks/fleet.py).
                    after = next_run_after(
                        conn, self.config, self.license, job, now, self.clock(), self.jobs,
                        spent=self.ledger.last_spent if result.requests else None,
                        hours=self.hours, profile=profile, recent=recent)
                    result.next_run = max(result.next_run, after)
                finish_on(conn, self.name, job, self.owner, next_run_at=result.next_run,
                          last_attempt_at=now, **({"failures": result.failures} if pulled is None
                                                  else pulled.state))
            released = True
            with self._day_lock:
                self._today.rows += result.written
                self._today.errors += result.error is not None
            self._log_run(result, state.last_success_at, now)
            if caught_up:
                # The history is in: audit what is stored now, not what it was.
                audit.after_loading(self.engine, self.config, self.name, self.clock,
                                    loaded_at=now)
            return result
        finally:
            if not released:
                release(self.engine, self.name, job, self.owner)

    def _catching_up(self, conn: Connection, job: str, state: Any, pulled: Pulled,
                     now: dt.datetime) -> bool:
        """Keep in the job's state whether its history is still catching up (a full window,
        or empty space stepped over), since when, and its first and last stored day, for
        the status; True when this run ended a catch-up that loaded history (days of it,
        or a history without days) or loaded a short history whole at its first run: time
        to audit. Read only while catching up: two index lookups."""
        since = state.catching_up_since
        if not pulled.more:
            if since is None and state.last_success_at is not None:
                return False  # up to date before, and still
            pulled.state.update(registry.CAUGHT_UP)
            # One full window of a busy hour is no history loaded: no audit for it.
            gained = state.catch_up_from_day is None or state.history_reached_day is None \
                or state.history_reached_day > state.catch_up_from_day
            return since is None or gained
        first = reached = None
        column = registry.HISTORY_DAY.get(registry.BY_NAME[job].resource.name)
        if column is not None and pulled.cursor is not None:
            # The day of the record at the cursor, not the latest stored day: the day
            # re-checks store today's records long before the windows reach them.
            table = column.table
            mine = table.c.license == bindparam("license")
            first, reached = conn.execute(prepared(conn, ("history_days", job), lambda _: select(
                select(func.min(column)).where(mine).scalar_subquery(),
                select(column).where(mine, table.c.id == select(func.max(table.c.id)).where(
                    mine, table.c.id <= bindparam("cursor")).scalar_subquery())
                .scalar_subquery())), {"license": self.name, "cursor": pulled.cursor}).one()
        pulled.state.update(catching_up_since=since or now,
                            catch_up_from_day=state.catch_up_from_day if since else reached,
                            history_first_day=first, history_reached_day=reached)
        return False

    def _sales(self, conn: Connection, job: str,
               now: dt.datetime) -> tuple[SalesProfile | None, int | None]:
        """The license's sales profile (learned once per API day) and its orders of the
        last hour (read again after each run of a job that follows sales)."""
        if not self.follow_sales:
            return None, None
        profile = self._profiles.get(conn, [self.name], now, self.tz, self.hours)[self.name]
        if self._recent is None or self.specs[job].follows_sales:
            self._recent = sales.recent_sales(conn, [self.name], now)[self.name]
        return profile, self._recent

    def _log_run(self, result: RunResult, last_success: dt.datetime | None,
                 now: dt.datetime) -> None:
        """The run's INFO line; `lag`: how old the job's data was when the run began."""
        c = result.counts
        lag = "never synced before" if last_success is None else \
            f"{(now - last_success).total_seconds():.0f} s"
        # A job its stopped license kept from sending did nothing: the warning said why.
        idle = result.requests == 0 and result.scope is outcomes.Scope.LICENSE
        # Every figure of the line is a field as well (`--log-format json`).
        fields = {"license": self.name, "job": result.job, "requests": result.requests,
                  "inserted": c.inserted, "updated": c.updated, "deleted": c.deleted,
                  "quarantined": c.quarantined, "cursor": result.cursor,
                  "lag_seconds": None if last_success is None
                  else round((now - last_success).total_seconds()),
                  "next_run": result.next_run.isoformat(), "outcome": result.outcome,
                  "exit_code": result.exit_code}
        log.log(logging.DEBUG if idle else logging.INFO,
                "%s/%s: %d request(s), %d inserted, %d updated, %d deleted, %d quarantined; "
                "cursor %s; lag %s; next run %s%s", self.name, result.job, result.requests,
                c.inserted, c.updated, c.deleted, c.quarantined,
                "-" if result.cursor is None else result.cursor, lag, self._shown(result.next_run),
                "" if result.error is None else "; failed (see the warning above)", extra=fields)

    def _shown(self, moment: dt.datetime) -> str:
        return moment.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S %Z")

    def summarize_day(self, now: dt.datetime, *, final: bool = False) -> None:
        """Log the license's summary of the API day once it is over (or, `final`, of the
        day so far: the daemon stops)."""
        with self._day_lock:  # one summary per day, however many jobs see it end
            if not final and api_day(now, self.tz) <= self._today.day:
                return  # the same day, or a run that began before another saw it end
            day = self._today
            if not final:
                self._today = _Day(api_day(now, self.tz))
        with self.engine.connect() as conn:
            spent = spent_today(conn, self.name, day.day)
        budget, reserve = self.config.budget_for(self.license)
        log.info("license %s: API day %s (%s)%s: %d of %d requests spent (daily_budget %d - "
                 "reserve %d), %d row(s) written, %d error(s)", self.name, day.day, self.tz.key,
                 " so far" if final else "", spent, self.spendable, budget, reserve, day.rows,
                 day.errors, extra={"license": self.name, "api_day": day.day.isoformat(),
                                    "timezone": self.tz.key, "final": final,
                                    "requests_spent": spent, "requests_spendable": self.spendable,
                                    "daily_budget": budget, "reserve": reserve,
                                    "rows_written": day.rows, "errors": day.errors})

    def _execute(self, job: str, now: dt.datetime, state: Any) -> tuple[RunResult, Pulled | None]:
        """Run the job's pull (`state`: its sync_state row, all empty before its first run).
        The result's `next_run` is the earliest the outcome allows: the plan may put it
        later, except after a full window (catching up: again after `min_interval`). An
        error's outcome (see `outcomes`) sets when it may run again; no pull is returned."""
        pulled = self.runtime.attempt(job, self.runtime.run_job, registry.BY_NAME[job], now, state)
        failures = int(getattr(state, "failures", 0) or 0)
        if isinstance(pulled, Failure):
            stops = pulled.meaning.scope is outcomes.Scope.LICENSE
            # A stop of the license (budget, a 1003) is no failure of the job's own.
            failures += pulled.meaning.scope is outcomes.Scope.PULL
            # A stop already said, or one that only repeats it (the license waits, or its
            # credentials were refused before): the first warning said it.
            said = stops and self._stop_said is not None and (
                pulled.note == self._stop_said
                or pulled.meaning in (outcomes.REFUSED_BEFORE, outcomes.WAITING))
            log.log(logging.DEBUG if said else logging.WARNING, "%s/%s: %s%s", self.name, job,
                    pulled.note, f" ({failures} failed runs in a row)" if failures > 1 else "",
                    extra={"license": self.name, "job": job, "outcome": pulled.meaning.name,
                           "exit_code": pulled.meaning.exit_code})
            self._stop_said = pulled.note if stops else self._stop_said
            return RunResult(job, outcomes.retry_at(pulled.error, now, self.tz, failures=failures),
                             error=pulled.note, exit_code=pulled.meaning.exit_code,
                             outcome=pulled.meaning.name, scope=pulled.meaning.scope,
                             license=self.name, failures=failures), None
        self._stop_said = None
        if failures:
            pulled.state["failures"] = 0
        # Catching up (a full window, or empty space stepped over): again soon.
        next_run = now + self.specs[job].min_interval if pulled.more else now
        return RunResult(job, next_run, written=pulled.counts.written, counts=pulled.counts,
                         cursor=pulled.cursor, license=self.name), pulled


# A run is stalled once it has gone on this long past what its requests may take.
STALL_MARGIN = dt.timedelta(minutes=1)
RUN_REQUESTS = 2  # logical requests a run makes at most (a window and its look-ahead)


def stalled_after(config: Config, backoff_max: float = 8.0) -> dt.timedelta:
    """How long a job's run may take before it shows as stalled: its requests, each with
    every attempt cut at `timeout_seconds` and the retry waits between them, plus a
    minute for the database."""
    attempts = config.api.max_attempts
    request = attempts * config.api.timeout_seconds + (attempts - 1) * backoff_max
    return dt.timedelta(seconds=RUN_REQUESTS * request) + STALL_MARGIN


def db_retry_delay(failures: int) -> dt.timedelta:
    """How long a job waits after its `failures`-th database error in a row."""
    return dt.timedelta(seconds=min(30 * 2 ** min(failures - 1, 5), 600))


def make_scheduler(max_workers: int = 4) -> BackgroundScheduler:
    """The daemon's APScheduler: `max_workers` threads; a job late or fired twice while
    it runs runs once, however late."""
    return BackgroundScheduler(
        timezone=dt.UTC,
        executors={"default": {"type": "threadpool", "max_workers": max_workers}},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )


def enabled_jobs(config: Config, jobs: Sequence[JobSpec] = DEFAULT_JOBS) -> list[JobSpec]:
    """The jobs `syncer run` schedules for a license: those of the registry whose
    resource is enabled in the config."""
    return [j for j in jobs if j.name in registry.BY_NAME
            and config.resource(registry.BY_NAME[j.name].resource.name).enabled]


# --- the daemon ------------------------------------------------------------------------


class Daemon:
    """Every license's jobs on one APScheduler, plus the lease heartbeat."""

    def __init__(self, engine: Engine, config: Config, *, clock: Clock = utcnow,
                 jobs: Sequence[JobSpec] = DEFAULT_JOBS, max_workers: int = 4,
                 follow_sales: bool = True) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.owner = owner_id()
        self.ttl = dt.timedelta(seconds=config.schedule.lease_seconds)
        self.licenses = [LicenseJobs(engine, config, lic, owner=self.owner, clock=clock, jobs=jobs,
                                     follow_sales=follow_sales)
                         for lic in config.licenses]
        # Every (license, job) this daemon runs, and the same as query parameters.
        self._jobs = {(lic.name, job.name): lic for lic in self.licenses for job in lic.jobs}
        self._scope = {"names": [lic.name for lic in self.licenses],
                       "jobs": sorted({job for _, job in self._jobs})}
        self.scheduler = make_scheduler(max_workers)
        self._stopping = threading.Event()
        self._db_failures: dict[tuple[str, str], int] = defaultdict(int)  # in a row, per job
        self._running = 0
        self._running_since: dict[tuple[str, str], dt.datetime] = {}  # (license, job): start
        self.stall_bound = stalled_after(config)
        self._idle = threading.Condition()
        self._heartbeat: threading.Thread | None = None
        self.last_error: str | None = None
        self.started_at: dt.datetime | None = None

    # -- for tests and the simulated day: run what is due, in this thread --------------

    def _planned(self, conn: Connection) -> tuple[int, dt.datetime | None]:
        """How many of this daemon's jobs have a stored next run, and the earliest."""
        state = t.sync_state.c
        stmt = prepared(conn, ("planned",), lambda _: select(
            func.count(), func.min(state.next_run_at)).where(
                state.license.in_(bindparam("names", expanding=True)),
                state.resource.in_(bindparam("jobs", expanding=True)),
                state.next_run_at.is_not(None)))
        count, earliest = conn.execute(stmt, self._scope).one()
        return int(count), earliest

    def _due(self, now: dt.datetime) -> list[tuple[dt.datetime | None, LicenseJobs, str]]:
        """The jobs due at `now` with their stored next run (None: never planned), for
        all licenses in two queries: only the rows due are read once every job has a
        next run (the common case), every row of the licenses before."""
        state = t.sync_state.c
        jobs = self._jobs
        if not jobs:
            return []
        with self.engine.connect() as conn:
            planned, _ = self._planned(conn)
            every = planned < len(jobs)
            stmt = prepared(conn, ("due", every), lambda _: select(
                state.license, state.resource, state.next_run_at).where(
                    state.license.in_(bindparam("names", expanding=True)),
                    *(() if every else
                      (state.next_run_at <= bindparam("now", type_=UtcDateTime()),))))
            rows = conn.execute(stmt, {**self._scope, "now": now}).all()
        stored = {(r.license, r.resource): r.next_run_at for r in rows}
        if not every:
            return [(when, jobs[key], key[1]) for key, when in stored.items() if key in jobs]
        return [(stored.get(key), lic, key[1]) for key, lic in jobs.items()
                if stored.get(key) is None or stored[key] <= now]

    def due_now(self) -> list[tuple[LicenseJobs, str]]:
        """Every job whose time has come, in order of due time."""
        now = self.clock()
        due = [(when or now, lic, job) for when, lic, job in self._due(now)]
        due.sort(key=lambda item: (item[0], item[1].name, item[2]))
        return [(lic, job) for _, lic, job in due]

    def run_due(self) -> list[RunResult]:
        """Run every job whose time has come, once, in order of due time."""
        return [lic.run(job) for lic, job in self.due_now()]

    def next_due(self) -> dt.datetime | None:
        """The earliest due time of any job (a job never planned is due now)."""
        now = self.clock()
        if not self._jobs:
            return None
        with self.engine.connect() as conn:
            planned, earliest = self._planned(conn)
        return now if planned < len(self._jobs) else earliest

    # -- the real thing ---------------------------------------------------------------------

    def run_once(self) -> list[RunResult]:
        """`syncer run --once`: the due jobs, under the same one-daemon rule as `start`."""
        self.claim_writer()
        try:
            return self.run_due()
        finally:
            unlock_writer(self.engine, self.owner)

    def claim_writer(self) -> None:
        """A single-writer database (SQLite) has one daemon (or `run --once`) per file.
        A holder that crashed on this host is taken over at once, not after its lease.
        `syncer run` claims it before it serves the page, so a refused second daemon says
        nothing of serving; `start` claims it again (its own lock: a no-op)."""
        other = lock_writer(self.engine, self.owner, self.clock(), self.ttl)
        if other is not None:
            raise DaemonConflict(
                f"{held_by(other)} already uses this SQLite database; SQLite supports one "
                "writer at a time (one daemon). Use Postgres to run replicas.")

    def release_writer(self) -> None:
        """Let go of the writer lock (a `syncer run` that could not start)."""
        unlock_writer(self.engine, self.owner)

    def start(self) -> None:
        now = self.clock()
        self.claim_writer()
        for lic in self.licenses:
            for job, when in lic.due_times().items():
                self._schedule(lic, job, when or now)
        # The daily `syncer audit` per license, kept in audit_runs (checked hourly).
        self.scheduler.add_job(self._audit_daily, "interval", hours=1, next_run_time=now,
                               id="audit")
        self._heartbeat = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._heartbeat.start()
        self.scheduler.start()
        self.started_at = now
        log.info("syncer run: %d license(s), %d jobs scheduled (owner %s)", len(self.licenses),
                 sum(len(lic.jobs) for lic in self.licenses), self.owner)

    def _schedule(self, lic: LicenseJobs, job: str, when: dt.datetime) -> None:
        self.scheduler.add_job(self._fire, "date", run_date=when, args=[lic, job],
                               id=f"{lic.name}/{job}", replace_existing=True)

    def _begin(self, run: tuple[str, str] | None) -> bool:
        """Count a run that stop() waits for (`run`: a job's, watched for stalling);
        False once stopping. stop() sets its flag under the same lock: a run starts
        before it and is waited for, or not at all."""
        with self._idle:
            if self._stopping.is_set():
                return False
            self._running += 1
            if run is not None:
                self._running_since[run] = self.clock()
            return True

    def _end(self, run: tuple[str, str] | None) -> None:
        with self._idle:
            self._running -= 1
            if run is not None:
                self._running_since.pop(run, None)
            self._idle.notify_all()

    def _fire(self, lic: LicenseJobs, job: str) -> None:
        if not self._begin((lic.name, job)):
            return
        try:
            when = self._run_one(lic, job)
        finally:
            self._end((lic.name, job))
        if not self._stopping.is_set():
            self._schedule(lic, job, when)

    def running(self) -> list[str]:
        """What runs now, as a person reads it (a stop that timed out names it)."""
        with self._idle:
            names = [f"{lic}/{job}" for lic, job in sorted(self._running_since)]
            if self._running > len(self._running_since):
                names.append("the daily audit")
        return names

    def _audit_daily(self) -> None:
        """The hourly look at whether a license's daily audit is due: a run like a job's,
        so that a stop waits for it (or, past its timeout, says so) rather than the
        process's exit waiting unseen."""
        if not self._begin(None):
            return
        try:
            audit.run_daily(self.engine, self.config, self.clock)
        finally:
            self._end(None)

    def _run_one(self, lic: LicenseJobs, job: str) -> dt.datetime:
        try:
            result = lic.run(job)
            self.last_error = None
            self._db_failures.pop((lic.name, job), None)
            when = result.next_run
        except Cancelled:
            # Stopping: what committed stays, the rest is pulled again on the next start.
            log.info("%s/%s: stopped mid-run; it resumes from its last commit", lic.name, job)
            when = self.clock()
        except SQLAlchemyError as exc:
            # The database is away: keep the cursor (nothing committed), retry later,
            # 30 s at first and twice as long each time after, up to 10 minutes.
            self.last_error = f"database: {type(exc).__name__}"
            failures = self._db_failures[lic.name, job] = self._db_failures[lic.name, job] + 1
            delay = db_retry_delay(failures)
            log.warning("%s/%s: database error, retrying in %d s: %s", lic.name, job,
                        delay.total_seconds(), error_summary(exc))
            return self.clock() + delay
        except Exception:
            log.exception("%s/%s: unexpected error; retrying in 5 minutes", lic.name, job)
            when = self.clock() + dt.timedelta(minutes=5)
        return when

    def _beat(self) -> None:
        interval = max(self.ttl.total_seconds() / 3, 1.0)
        while not self._stopping.wait(interval):
            try:
                renew(self.engine, self.owner, self.clock(), self.ttl)
            except SQLAlchemyError as exc:
                log.warning("lease heartbeat failed: %s", error_summary(exc))

    def stop(self, timeout: float = 8.0) -> bool:
        """Stop scheduling and cancel running jobs; False if one still runs after `timeout`.

        Closing the clients makes every job end at its next request (nothing more is
        sent or retried). A job blocked in a socket read cannot be woken: it ends
        when the answer or its deadline (`timeout_seconds`) comes, which may be after `timeout`.
        """
        with self._idle:
            self._stopping.set()
        if self.scheduler.running:
            # remove_all_jobs waits for a scheduling pass in progress: APScheduler's
            # shutdown() flags the scheduler stopped mid-pass, and the pass then fails to
            # remove the date job it just ran (JobLookupError in its thread).
            self.scheduler.remove_all_jobs()
            self.scheduler.shutdown(wait=False)
        for lic in self.licenses:
            lic.close()  # aborts requests in flight; their transactions never began
        with self._idle:
            finished = self._idle.wait_for(lambda: self._running == 0, timeout)
        try:
            let_go_all(self.engine, self.owner)
            for lic in self.licenses:
                lic.summarize_day(self.clock(), final=True)
        except SQLAlchemyError:
            pass
        return finished

    # -- operability ------------------------------------------------------------------------

    def stalled(self) -> dict[tuple[str, str], float]:
        """Runs going on past `stall_bound`: (license, job) -> seconds running."""
        now = self.clock()
        with self._idle:
            running = list(self._running_since.items())
        return {key: (now - since).total_seconds() for key, since in running
                if now - since > self.stall_bound}

    def healthy(self) -> tuple[bool, str]:
        if not self.scheduler.running:
            return False, "scheduler not running"
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return False, f"database: {type(exc).__name__}"
        stalled = self.stalled()
        if stalled:
            return False, "stalled: " + ", ".join(
                f"{lic}/{job} running for {seconds:.0f} s" for (lic, job), seconds in sorted(
                    stalled.items())) + f" (a run may take {self.stall_bound.total_seconds():.0f} s)"
        return True, "ok"

    def rows_written(self) -> dict[tuple[str, str], int]:
        """Rows each job of this process wrote since it started (a counter for /metrics)."""
        return {(lic.name, job): count for lic in self.licenses for job, count in lic.written.items()}

