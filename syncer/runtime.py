"""One license wired for one purpose, and the one place a pull step runs.

Every command that sends requests opens a `Runtime`: the license's ledger (the door),
client and sync, for the ledger's purpose (`backfill`, `run`, `call`, `check`).
`Runtime.attempt` runs a pull step and turns what it raises into its outcome
(`outcomes`, where an exception no row names is `unexpected`): kept on the job's sync
state when the outcome says so, and returned as a `Failure` for the caller's loop to
pace. A stopping client (`Cancelled`) and a database that is away go to the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from syncer import outcomes
from syncer.client import Cancelled, CloudPosClient
from syncer.config import Config, LicenseConfig
from syncer.jobs import RECHECKED, Job, Kind
from syncer.ledger import MAY_USE_RESERVE, Clock, Ledger, utcnow
from syncer.load import Counts
from syncer.outcomes import Meaning, Scope
from syncer.resources import Pull, Resource
from syncer.sync import PullResult, Step, Sync, WindowWalk, parse_context

log = logging.getLogger("syncer.runtime")

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class Failure:
    """A pull step that raised: its outcome, the error, and the words stored and shown."""

    meaning: Meaning
    error: Exception
    note: str


@dataclass
class Pulled:
    """What one run of a daemon job pulled."""

    more: bool = False  # a full window, or empty space stepped over: go on soon
    counts: Counts = field(default_factory=Counts)
    cursor: int | None = None  # an id window's cursor, a re-scan's position, after the run
    state: dict[str, Any] = field(default_factory=dict)  # stored with the run's next run

    def add(self, result: PullResult) -> Pulled:
        self.counts += result.counts
        return self


class FullList:
    """A full-list resource as a walk of one step: its whole list."""

    cursor: int | None = None

    def __init__(self, sync: Sync, resource: Resource, max_deletes: int) -> None:
        self.sync = sync
        self.resource = resource
        self.max_deletes = max_deletes

    def step(self) -> Step:
        return Step(self.sync.pull_full_list(self.resource, max_deletes=self.max_deletes),
                    0, 0, done=True)


class Runtime:
    """One license's ledger, client and sync for one purpose (close it, or use `with`)."""

    def __init__(self, engine: Engine, config: Config, license: LicenseConfig, *, purpose: str,
                 max_requests: int | None = None, clock: Clock = utcnow,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.engine = engine
        self.config = config
        self.license = license
        self.clock = clock
        # Scheduled work and backfills keep the reserve; `call` and `check` may use it.
        cap = config.cap(license, may_use_reserve=purpose in MAY_USE_RESERVE)
        self.ledger = Ledger(engine, license.name, fingerprint=license.fingerprint(config.api.base_url),
                             tz=config.api.tz, cap=cap, purpose=purpose,
                             max_requests=max_requests, clock=clock)
        # Every request passes the ledger (rule 1: nothing is sent that it did not count
        # first). `transport`, `sleep`: for tests.
        self.client = CloudPosClient(config.api.base_url, license.name, license.resolved_token(),
                                     tz=config.api.tz, timeout=config.api.timeout_seconds,
                                     max_attempts=config.api.max_attempts, door=self.ledger,
                                     transport=transport, sleep=sleep,
                                     max_answer_bytes=config.api.max_answer_bytes)
        self.sync = Sync(engine, license.name, self.client, parse_context(config, license), clock,
                         keep_answers=config.archive.enabled)
        self._looked_ahead: dict[str, dt.date] = {}  # job: API day of its last look-ahead

    def close(self) -> None:
        """Close the client: a request in flight fails and nothing more is sent."""
        self.client.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def walk(self, resource: Resource, *, probes: int = 0, state: Any = None) -> WindowWalk | FullList:
        """The resource's pull as steps: its full list in one, or its id windows past the
        cursor (`probes`, `state`: see `WindowWalk`)."""
        if resource.pull is Pull.FULL_LIST:
            return FullList(self.sync, resource,
                            self.config.resource(resource.name).empty_list_max_deletes)
        return WindowWalk(self.sync, resource, self.config.resource(resource.name),
                          attempts=self.config.api.max_attempts, probes=probes, state=state)

    def attempt(self, job: str, pull: Callable[P, T], *args: P.args, **kwargs: P.kwargs
                ) -> T | Failure:
        """Run `pull(*args, **kwargs)`, a pull step of `job`; what it raises becomes its
        outcome's `Failure`, and the job's sync state keeps the message when the outcome
        says so."""
        try:
            return pull(*args, **kwargs)
        except (Cancelled, SQLAlchemyError):
            raise  # stopping, or the database is away: nothing to store, the caller's
        except Exception as exc:
            meaning = outcomes.of(exc)
            note = meaning.message(exc)
            if meaning.records_error:
                self.sync.record_error(job, note, **(
                    {"disabled_reason": str(exc)} if meaning.scope is Scope.RESOURCE else {}))
            return Failure(meaning, exc, note)

    def run_job(self, job: Job, now: dt.datetime, state: Any) -> Pulled:
        """One run of a daemon job (`state`: its sync_state row, read with its lease)."""
        resource, tz = job.resource, self.config.api.tz
        today = now.astimezone(tz).date()
        if job.kind is Kind.RECHECK:
            total = Pulled()
            for day in (today - dt.timedelta(days=1), today):
                total.add(self.sync.pull_date(resource, day))
            total.state = {"last_success_at": self.clock(), "last_error": None}
            return total
        if job.kind is Kind.RESCAN:
            return self._rescan(job, state)
        walk = self.walk(resource, state=state)
        step = walk.step()
        pulled = Pulled(more=step.more).add(step.result)
        if (isinstance(walk, WindowWalk) and step.done and step.result.max_id is None
                and resource.name not in RECHECKED
                and self._looked_ahead.get(job.name) != today):
            # An empty window alone means "nothing new yet"; but ids that will never
            # come (voided documents, more in a row than the window) must not hold the
            # cursor for ever. Resources without a day re-check look one max_window
            # further, once an API day (one request a day).
            self._looked_ahead[job.name] = today
            ahead = walk.look_ahead()
            pulled.add(ahead.result)
            if ahead.more:
                log.info("%s/%s: ids %d-%d are empty and later ones exist; the cursor went on "
                         "to %d", self.license.name, job.name, step.start, step.end, walk.cursor)
                pulled.more = True
        pulled.cursor = walk.cursor
        return pulled

    def _rescan(self, job: Job, state: Any) -> Pulled:
        """One window of stored ids again, from the job's own position (wrapping to the
        start once it passes the cursor); the position moves with the run's state."""
        resource = job.resource
        position = int(getattr(state, "rescan_position", 0) or 0)
        cursor, _ = self.sync.cursor(resource)
        if position >= cursor:
            position = 0
        width = self.config.resource(resource.name).max_window
        result = self.sync.rescan_window(resource, position + 1, min(position + width, cursor or width))
        return Pulled(cursor=position + width, state={
            "rescan_position": position + width, "last_success_at": self.clock(),
            "last_error": None}).add(result)
