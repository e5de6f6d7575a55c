"""The request ledger: the door every request passes, and the license's stop signs.

Before a request leaves, one transaction (1) spends one request from the day's
counter with a single atomic upsert that adds 1 only while `spent < cap` and only
for a license not stopped (credentials refused, daily limit or IP block in force:
then the license's state is read to say which), and (2) writes the ledger row.
That transaction commits before the request is sent, so no crash, restart or
second process can spend behind the budget's back.
After the answer, the row gets its outcome, and 1001/1002/1003/1004 become
persisted license state that every process honours.

Credentials are probed one request at a time: until the API has accepted a
license's name and token once in this process, its requests go out singly, so
jobs that start together cost one bad login between them, not one each. Such a
probe is also refused while `MAX_BAD_LOGINS` bad logins (any license, any
process on this database) fall in the last `BAD_LOGIN_WINDOW`: the API blocks
the IP after five, and other software of the shop may share that IP.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from syncer import dialects, outcomes
from syncer import tables as t
from syncer.client import BudgetExhausted, LicenseStopped, Outcome, RequestInfo
from syncer.db import prepared, upsert
from syncer.outcomes import Kept
from syncer.planner import next_midnight

log = logging.getLogger("syncer.ledger")

Clock = Callable[[], dt.datetime]

# The API blocks an IP for 30 minutes after 5 bad logins; we stay well under.
MAX_BAD_LOGINS = 3
BAD_LOGIN_WINDOW = dt.timedelta(minutes=30)
# Purposes that may spend the reserve: one request a person asked for.
MAY_USE_RESERVE = frozenset({"call", "check"})


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def api_day(moment: dt.datetime, tz: ZoneInfo) -> dt.date:
    """The API's day (in its time zone) that `moment` falls in."""
    return moment.astimezone(tz).date()


@dataclass(frozen=True)
class LicenseStatus:
    auth_rejected: bool
    auth_reason: str | None
    blocked_until: dt.datetime | None
    blocked_reason: str | None
    refusal_stored: bool = False  # a refusal of any credentials is stored for the license


def license_status(conn: Connection, license: str, fingerprint: str) -> LicenseStatus:
    stmt = prepared(conn, ("license_status",), lambda _: select(t.license_state).where(
        t.license_state.c.license == bindparam("license")))
    row = conn.execute(stmt, {"license": license}).first()
    if row is None:
        return LicenseStatus(False, None, None, None)
    rejected = row.auth_rejected_fingerprint == fingerprint
    return LicenseStatus(rejected, row.auth_rejected_reason if rejected else None,
                         row.blocked_until, row.blocked_reason,
                         refusal_stored=row.auth_rejected_fingerprint is not None)


def login_pause(conn: Connection, now: dt.datetime) -> tuple[int, dt.datetime | None]:
    """Bad logins (any license) in the last `BAD_LOGIN_WINDOW`, and until when unproven
    credentials must wait (None: they may be tried)."""
    ledger = t.request_ledger.c
    recent = conn.execute(
        select(ledger.sent_at)
        .where(ledger.error_code.in_(outcomes.BAD_LOGIN_CODES),
               ledger.sent_at > now - BAD_LOGIN_WINDOW)
        .order_by(ledger.sent_at)
    ).scalars().all()
    if len(recent) < MAX_BAD_LOGINS:
        return len(recent), None
    return len(recent), recent[-MAX_BAD_LOGINS] + BAD_LOGIN_WINDOW


def spent_today(conn: Connection, license: str, day: dt.date) -> int:
    budget = t.request_budget.c
    value = conn.execute(prepared(conn, ("spent_today",), lambda _: select(budget.spent).where(
        budget.license == bindparam("license"), budget.day == bindparam("day"))),
        {"license": license, "day": day}).scalar()
    return int(value or 0)


@dataclass(frozen=True)
class _Ticket:
    ledger_id: int
    probe: bool  # this request tries credentials not yet accepted
    # A refusal was stored when it was sent: an answer that proves the credentials
    # clears it (without one, there is nothing to clear: no statement).
    refusal_stored: bool = True


def ledger_id_of(ticket: object) -> int | None:
    """The ledger row of the request a page answered (None: it passed no ledger)."""
    return ticket.ledger_id if isinstance(ticket, _Ticket) else None


@dataclass
class JobRequests:
    """The requests one job (or one backfilled resource) sent through a ledger."""

    job: str
    sent: int = 0


@dataclass(eq=False)
class Ledger:
    """The door for one license: spends the budget and records every request
    (`runtime.Runtime` builds it from the config)."""

    engine: Engine
    license: str
    _: KW_ONLY
    fingerprint: str  # of the name and token, to know refused credentials again
    tz: ZoneInfo  # the API's: its day is the budget's day
    cap: int  # requests per API day this door lets through (all processes together)
    purpose: str  # run, backfill, call, check: written to each ledger row
    max_requests: int | None = None  # this door's own cap (`--max-requests`)
    clock: Clock = utcnow
    sent: int = field(default=0, init=False)  # requests this door let through
    # Whether the API has accepted these credentials in this process; until it has,
    # one request at a time is the probe and the others wait for its answer.
    _accepted: bool = field(default=False, init=False, repr=False)
    _probing: bool = field(default=False, init=False, repr=False)
    _gate: threading.Condition = field(default_factory=threading.Condition, init=False,
                                       repr=False)
    # The job this thread sends for (`for_job`): the daemon's jobs of one license share
    # this door and run in threads side by side.
    _here: threading.local = field(default_factory=threading.local, init=False, repr=False)

    @contextmanager
    def for_job(self, job: str) -> Iterator[JobRequests]:
        """The requests this thread sends inside the block are `job`'s: its name is written
        on their ledger rows and they are counted in what this yields (not those of the
        other jobs sending through this door at the same time)."""
        counted = JobRequests(job)
        outer = getattr(self._here, "job", None)
        self._here.job = counted
        try:
            yield counted
        finally:
            self._here.job = outer

    # -- Door protocol ----------------------------------------------------------

    def before_send(self, info: RequestInfo) -> object:
        if self.max_requests is not None and self.sent >= self.max_requests:
            raise BudgetExhausted(f"--max-requests {self.max_requests} reached")
        probe = self._enter()
        try:
            ledger_id, refusal_stored = self._spend(info, probe)
            return _Ticket(ledger_id, probe, refusal_stored)
        except BaseException:
            if probe:
                self._leave(accepted=False)
            raise

    def _enter(self) -> bool:
        """Wait while another request probes the credentials; True: this one probes."""
        with self._gate:
            while not self._accepted and self._probing:
                self._gate.wait()
            if self._accepted:
                return False
            self._probing = True
            return True

    def _leave(self, *, accepted: bool) -> None:
        with self._gate:
            self._probing = False
            self._accepted = self._accepted or accepted
            self._gate.notify_all()

    def _spend(self, info: RequestInfo, probe: bool) -> tuple[int, bool]:
        now = self.clock()
        day = api_day(now, self.tz)
        mine: JobRequests | None = getattr(self._here, "job", None)
        with self.engine.begin() as conn:
            if probe:  # unproven credentials: told apart from a near IP block first
                self._refuse_if_stopped(conn, now)
                self._refuse_near_ip_block(conn, now)
            # One atomic statement: replicas and backfills never pass the cap together,
            # and a stopped license spends nothing.
            spend = None if self.cap < 1 else dialects.of(conn).spend(
                conn, license=self.license, day=day, cap=self.cap, now=now,
                fingerprint=self.fingerprint)
            if spend is None:
                self._refuse_if_stopped(conn, now)
                allowed = ("the whole daily_budget" if self.purpose in MAY_USE_RESERVE
                           else "daily_budget - reserve")
                raise BudgetExhausted(
                    f"license {self.license!r}: {self.cap} requests spent today "
                    f"({self.purpose} may use {allowed}); the day resets at "
                    f"{next_midnight(now, self.tz):%Y-%m-%d %H:%M %Z}",
                    next_midnight(now, self.tz),
                )
            spent, refusal_stored = spend
            ledger_id = conn.execute(
                prepared(conn, ("ledger_row",), lambda _: insert(t.request_ledger)
                         .returning(t.request_ledger.c.id)),
                {"license": self.license, "day": day, "sent_at": now, "function": info.function,
                 "params": dict(info.params) or None, "purpose": self.purpose,
                 "job": None if mine is None else mine.job, "attempt": info.attempt, "outcome": "pending"},
            ).scalar_one()
        self.sent += 1
        if mine is not None:
            mine.sent += 1
        self.last_spent = (day, int(spent))
        return int(ledger_id), bool(refusal_stored)

    def _refuse_if_stopped(self, conn: Connection, now: dt.datetime) -> None:
        """Raise LicenseStopped when the license's stored state stops it (its credentials
        refused, or a block in force), saying which."""
        status = license_status(conn, self.license, self.fingerprint)
        if status.auth_rejected:
            raise LicenseStopped(
                f"license {self.license!r}: credentials were refused ({status.auth_reason}); "
                "nothing is sent until its name, token or api.base_url changes in the config"
            )
        if status.blocked_until is not None and status.blocked_until > now:
            raise LicenseStopped(
                f"license {self.license!r}: {status.blocked_reason}; "
                f"waiting until {status.blocked_until.astimezone(self.tz):%Y-%m-%d %H:%M %Z}",
                status.blocked_until,
            )

    def _refuse_near_ip_block(self, conn: Connection, now: dt.datetime) -> None:
        """Refuse to try unproven credentials while recent bad logins near the IP block."""
        count, until = login_pause(conn, now)
        if until is not None:
            raise LicenseStopped(
                f"license {self.license!r}: {count} bad logins from this database's "
                f"licenses in the last {BAD_LOGIN_WINDOW.seconds // 60} minutes; unproven "
                f"credentials wait until {until.astimezone(self.tz):%H:%M %Z} so the API does "
                "not block this IP", until)

    def after_response(self, ticket: object, outcome: Outcome) -> None:
        assert isinstance(ticket, _Ticket)
        meaning = outcomes.of_answer(outcome.outcome, outcome.error_code)
        try:
            self._record(ticket, outcome, meaning)
        finally:
            if ticket.probe:
                # Records, or an answer about the function itself, prove the credentials;
                # a transport failure or a limit proves nothing, so the next request
                # probes again.
                self._leave(accepted=meaning.proves_login)

    def _record(self, ticket: _Ticket, outcome: Outcome, meaning: outcomes.Meaning) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                prepared(conn, ("ledger_outcome",), lambda _: update(t.request_ledger)
                         .where(t.request_ledger.c.id == bindparam("ledger_id"))),
                {"ledger_id": ticket.ledger_id, "outcome": outcome.outcome,
                 "error_code": outcome.error_code, "http_status": outcome.http_status,
                 "duration_ms": outcome.duration_ms})
            code = outcome.error_code
            if meaning.kept is Kept.CREDENTIALS:
                self._set_state(conn, now, auth_rejected_fingerprint=self.fingerprint,
                                auth_rejected_at=now,
                                auth_rejected_reason=f"API error {code}: {meaning.words}")
                log.error("license %r: credentials refused (API error %s); stopped until the "
                          "config changes. Fix licname/token, then restart.", self.license, code,
                          extra={"license": self.license, "outcome": meaning.name,
                                 "error_code": code})
            elif meaning.kept is Kept.BLOCKED:
                until = meaning.until(outcome.until, now, self.tz)
                # In UTC: a time in the repeated autumn hour never equals another zone's.
                if outcome.until is not None and until.astimezone(dt.UTC) != outcome.until.astimezone(dt.UTC):
                    log.warning("license %r: the API gave %s as the end of its stop (%s); not "
                                "believed (%s), waiting until %s instead", self.license,
                                outcome.until.strftime("%Y-%m-%d %H:%M %Z"), code,
                                "already past" if outcome.until <= now else "past the cap",
                                until.astimezone(self.tz).strftime("%Y-%m-%d %H:%M %Z"))
                self._set_state(conn, now, blocked_until=until, blocked_reason=meaning.words)
                if meaning is outcomes.DAILY_LIMIT:
                    # Another client spent the day: count the day as spent so the
                    # planner stretches instead of asking again.
                    conn.execute(
                        update(t.request_budget)
                        .where(t.request_budget.c.license == self.license,
                               t.request_budget.c.day == api_day(now, self.tz))
                        .values(spent=dialects.of(conn).greatest(t.request_budget.c.spent, self.cap))
                    )
                log.warning("license %r: %s; no requests until %s", self.license, meaning.words,
                            until.astimezone(self.tz).strftime("%Y-%m-%d %H:%M %Z"),
                            extra={"license": self.license, "outcome": meaning.name,
                                   "error_code": code, "until": until.isoformat()})
            elif meaning.kept is Kept.CLEARS_CREDENTIALS and ticket.refusal_stored:
                self._clear_auth(conn, now)

    def _set_state(self, conn: Connection, now: dt.datetime, **values: Any) -> None:
        changes = {"updated_at": now, **values}
        upsert(conn, t.license_state, {"license": self.license, **changes})

    def _clear_auth(self, conn: Connection, now: dt.datetime) -> None:
        conn.execute(
            update(t.license_state)
            .where(t.license_state.c.license == self.license,
                   t.license_state.c.auth_rejected_fingerprint.is_not(None))
            .values(auth_rejected_fingerprint=None, auth_rejected_at=None,
                    auth_rejected_reason=None, updated_at=now)
        )


# --- lifting a stop on purpose -----------------------------------------------------------


def stops_in_force(conn: Connection, license: str, now: dt.datetime, tz: ZoneInfo) -> list[str]:
    """The license's stops that `lift_stop` would lift, in words (none: it is not stopped).
    A credentials stop counts whichever credentials it was stored for."""
    row = conn.execute(select(t.license_state).where(t.license_state.c.license == license)).first()
    if row is None:
        return []
    found = []
    if row.auth_rejected_fingerprint is not None:
        since = f" since {row.auth_rejected_at.astimezone(tz):%Y-%m-%d %H:%M %Z}" \
            if row.auth_rejected_at else ""
        found.append(f"credentials refused ({row.auth_rejected_reason or 'no reason kept'}){since}")
    if row.blocked_until is not None and row.blocked_until > now:
        found.append(f"paused until {row.blocked_until.astimezone(tz):%Y-%m-%d %H:%M %Z} "
                     f"({row.blocked_reason or 'no reason kept'})")
    return found


def lift_stop(engine: Engine, license: str, *, by: str, now: dt.datetime, tz: ZoneInfo) -> list[str]:
    """Lift the license's stops on purpose (an operator who fixed the cause, or who knows
    better than the API's time): the next request is sent (and, for refused credentials,
    probes them alone). The row keeps who lifted what, and when; the log says so too.
    Returns what was lifted (none: nothing was stopped, nothing changed)."""
    with engine.begin() as conn:
        lifted = stops_in_force(conn, license, now, tz)
        if not lifted:
            return []
        conn.execute(update(t.license_state).where(t.license_state.c.license == license).values(
            auth_rejected_fingerprint=None, auth_rejected_at=None, auth_rejected_reason=None,
            blocked_until=None, blocked_reason=None, updated_at=now,
            lifted_at=now, lifted_by=by[:200], lifted_stop="; ".join(lifted)))
        # Jobs that waited for the stop are due at once (a running daemon reads it at
        # each job's next run; a restart runs them now).
        conn.execute(update(t.sync_state).where(t.sync_state.c.license == license)
                     .values(next_run_at=None))
    log.warning("license %r: stop lifted by %s: %s", license, by, "; ".join(lifted))
    return lifted
