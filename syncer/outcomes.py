"""What each way a request can end means: the one table.

Every answer, API error, transport fault, door refusal, and any other exception a
pull raises is one row of `OUTCOMES`:
how far it stops (the license, the resource, or just this pull), the exit code of a
command it ends (`backfill`, `run --once`), when the license or job may try again,
what the ledger keeps in the database so that every process honours it, and the
words shown to a person. The ledger, the backfill, the daemon and `status` all read
this table; the client builds its errorcode-to-exception map from the exception
classes' own `code` (see `client.API_ERRORS`).

| outcome | scope | exit | tries again | kept in the database |
|---|---|---|---|---|
| ok, empty (2000) | - | 0 | at the planned time | clears a credentials stop |
| budget spent / `--max-requests` | license | 3 | when the API day resets | `request_budget.spent` |
| waiting (a stop with a time) | license | 3 | at that time | (already kept) |
| refused before (credentials) | license | 1 | when the config changes | (already kept) |
| 1001 / 1002 credentials | license | 1 | when the config changes | `license_state.auth_rejected_*` |
| 1003 daily limit | license | 3 | the API's time, capped (*), else midnight | `blocked_until`; day spent |
| 1004 IP blocked | license | 3 | the API's time, capped (*), else 30 min | `license_state.blocked_until` |
| 1005 module not licensed | resource | 0 | once a day | `sync_state.disabled_reason` |
| 2001-2003 input refused | pull | 1 | in 5 minutes | `sync_state.last_error` |
| any other fault (after retries) | pull | 1 | in 5 minutes | `sync_state.last_error` |
| unexpected (a bug, an answer the decoder cannot read) | pull | 1 | in 5 minutes | `sync_state.last_error` |

"In 5 minutes" is the earliest: the daemon runs the job again then or at the
planner's next run, whichever is later. A pull that fails again and again waits
longer each time (`backoff`: 5, 10, 20 ... minutes, at most 4 hours; the count is
`sync_state.failures`), so one unreadable answer never spends the day.

(*) A time the API gives is believed up to a cap (`STOP_MARGIN` past its own rules): a
1003 at most to the next API day, a 1004 at most the documented 30 minutes. A 1004
whose time is already past still blocks for 30 minutes; a 1003's is the next API day.
An operator lifts any stop on purpose with `syncer unblock` (`lift_stop`).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from syncer.client import (
    API_ERRORS,
    BudgetExhausted,
    CloudPosError,
    DailyLimitReached,
    EmptyCredentials,
    InputRejected,
    InvalidCredentials,
    IpBlocked,
    LicenseStopped,
    ModuleNotLicensed,
    NotFound,
    RequestRefused,
)
from syncer.planner import next_midnight
from syncer.redact import redact

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT (Ctrl-C)


class Scope(enum.Enum):
    NONE = "none"  # an answer: nothing stops
    LICENSE = "license"  # every resource and job of the license stops
    RESOURCE = "resource"  # this resource is skipped; the others go on
    PULL = "pull"  # this pull failed; the others go on


class Kept(enum.Enum):
    """What the ledger writes to the database after such an answer."""

    NOTHING = "nothing"
    CLEARS_CREDENTIALS = "clears a credentials stop"  # an answer with records or 2000
    CREDENTIALS = "license_state.auth_rejected_*"  # until the name, token or base_url changes
    BLOCKED = "license_state.blocked_until"  # until the time `until` gives


# When the license or job may try again: from the time the error carries (if any),
# now, and the API's time zone.
Until = Callable[[dt.datetime | None, dt.datetime, ZoneInfo], dt.datetime]


def _given_or_midnight(given: dt.datetime | None, now: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    return given or next_midnight(now, tz)


# How far past the API's own rules a time it gives is believed: clocks differ by a few
# minutes, and the API may round. A time beyond that (`9999-12-31 23:59:59`) would stop
# the license for ever; it is capped, and the ledger logs that it was not believed.
STOP_MARGIN = dt.timedelta(minutes=15)
IP_BLOCK = dt.timedelta(minutes=30)  # the API page: 5 bad logins block the IP for 30 minutes


def _daily_limit_until(given: dt.datetime | None, now: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """A 1003's stop: the time the API gave, at most the next API day (plus the margin);
    none, or one already past, is the next API day."""
    resets = next_midnight(now, tz)
    if given is None or given <= now:
        return resets
    # In UTC: aware times of one zone compare (and add) as wall clock times.
    return min(given.astimezone(dt.UTC), resets.astimezone(dt.UTC) + STOP_MARGIN)


def _ip_block_until(given: dt.datetime | None, now: dt.datetime, _tz: ZoneInfo) -> dt.datetime:
    """A 1004's stop: the time the API gave, at most the documented 30 minutes (plus the
    margin). None, or a time already past, is still a block (the API just said so): the
    documented 30 minutes."""
    if given is None or given <= now:
        return now + IP_BLOCK
    return min(given.astimezone(dt.UTC), now.astimezone(dt.UTC) + IP_BLOCK + STOP_MARGIN)


def _given_or(delay: dt.timedelta) -> Until:
    return lambda given, now, _tz: given or now + delay


def _after(delay: dt.timedelta) -> Until:
    return lambda _given, now, _tz: now + delay


_PLANNED: Until = lambda _given, now, _tz: now  # noqa: E731 - the planner decides


@dataclass(frozen=True)
class Meaning:
    """What one kind of outcome means."""

    name: str
    raised_as: tuple[type[BaseException], ...]  # the exceptions that carry it (none: an answer)
    scope: Scope
    exit_code: int
    until: Until  # when to try again (the ledger's stop, the daemon's next run)
    kept: Kept
    words: str  # what happened, for a person (the ledger's stop reason)
    advice: str = ""  # what to do about it, appended to the error's message
    records_error: bool = True  # the job's or resource's sync_state keeps the message
    proves_login: bool = False  # only a good login gets this answer

    def message(self, exc: BaseException) -> str:
        """The error's message with this outcome's advice, for logs, notes and status; an
        exception no outcome names says its type (its text alone may be cryptic) and is
        redacted here (the client's own errors are redacted when raised)."""
        text = str(exc) if self.raised_as != (Exception,) else redact(f"{type(exc).__name__}: {exc}")
        return f"{text}; {self.advice}" if self.advice else text

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(code for code, cls in API_ERRORS.items() if cls in self.raised_as)


CREDENTIALS_ADVICE = ("nothing is sent for this license until its name, token or api.base_url "
                       "changes in the config (restart a running `syncer run` after fixing it)")


def _credentials(cls: type[CloudPosError], words: str) -> Meaning:
    return Meaning(f"credentials refused ({cls.code})", (cls,), Scope.LICENSE, EXIT_ERROR,
                   _after(dt.timedelta(days=1)), Kept.CREDENTIALS, words, CREDENTIALS_ADVICE)


OK = Meaning("ok", (), Scope.NONE, EXIT_OK, _PLANNED, Kept.CLEARS_CREDENTIALS, "records",
             records_error=False, proves_login=True)
EMPTY = Meaning("empty", (NotFound,), Scope.NONE, EXIT_OK, _PLANNED, Kept.CLEARS_CREDENTIALS,
                "nothing found (2000)", records_error=False, proves_login=True)
BUDGET = Meaning("budget spent", (BudgetExhausted,), Scope.LICENSE, EXIT_BUDGET,
                 _given_or_midnight, Kept.NOTHING, "the request budget is spent",
                 records_error=False)
WAITING = Meaning("license waiting", (), Scope.LICENSE, EXIT_BUDGET, _given_or(dt.timedelta(days=1)),
                  Kept.NOTHING, "the license waits for a time the API gave", records_error=False)
REFUSED_BEFORE = Meaning("credentials refused before", (), Scope.LICENSE, EXIT_ERROR,
                         _after(dt.timedelta(days=1)), Kept.NOTHING,
                         "the license's credentials were refused", records_error=False)
EMPTY_CREDENTIALS = _credentials(EmptyCredentials, "name or token empty")
INVALID_CREDENTIALS = _credentials(InvalidCredentials, "name or token not valid")
DAILY_LIMIT = Meaning("daily limit", (DailyLimitReached,), Scope.LICENSE, EXIT_BUDGET,
                      _daily_limit_until, Kept.BLOCKED,
                      "daily request limit reached (API error 1003)")
IP_BLOCKED = Meaning("IP blocked", (IpBlocked,), Scope.LICENSE, EXIT_BUDGET,
                     _ip_block_until, Kept.BLOCKED,
                     "IP blocked after bad logins (API error 1004)")
NOT_LICENSED = Meaning("module not licensed", (ModuleNotLicensed,), Scope.RESOURCE, EXIT_OK,
                       _after(dt.timedelta(days=1)), Kept.NOTHING,
                       "the license does not include this module (1005)",
                       "this resource is skipped and tried again once a day", proves_login=True)
INPUT_REJECTED = Meaning("input refused", (InputRejected,), Scope.PULL, EXIT_ERROR,
                         _after(dt.timedelta(minutes=5)), Kept.NOTHING, "input refused",
                         proves_login=True)
OTHER_REFUSAL = Meaning("refused", (RequestRefused,), Scope.LICENSE, EXIT_BUDGET,
                        _given_or_midnight, Kept.NOTHING, "the door refused to send",
                        records_error=False)
FAILED = Meaning("failed", (CloudPosError,), Scope.PULL, EXIT_ERROR,
                 _after(dt.timedelta(minutes=5)), Kept.NOTHING, "the request failed")
UNEXPECTED = Meaning("unexpected", (Exception,), Scope.PULL, EXIT_ERROR,
                     _after(dt.timedelta(minutes=5)), Kept.NOTHING, "an unexpected error")

# First match wins: subclasses before the classes they extend.
OUTCOMES: tuple[Meaning, ...] = (
    OK, EMPTY, BUDGET, WAITING, REFUSED_BEFORE, EMPTY_CREDENTIALS, INVALID_CREDENTIALS,
    DAILY_LIMIT, IP_BLOCKED, NOT_LICENSED, INPUT_REJECTED, OTHER_REFUSAL, FAILED, UNEXPECTED,
)

# The codes of a bad login (the API blocks the IP after five of them).
BAD_LOGIN_CODES: tuple[int, ...] = (*EMPTY_CREDENTIALS.codes, *INVALID_CREDENTIALS.codes)


def of(exc: BaseException) -> Meaning:
    """The meaning of an error a pull raised (a `CloudPosError`, a door refusal, or
    anything else: `UNEXPECTED`)."""
    if isinstance(exc, LicenseStopped):
        return WAITING if exc.until is not None else REFUSED_BEFORE
    return _of_class(type(exc))


def _of_class(cls: type[BaseException]) -> Meaning:
    for meaning in OUTCOMES:
        if meaning.raised_as and issubclass(cls, meaning.raised_as):
            return meaning
    raise TypeError(f"{cls.__name__} is not an outcome of a request")


def of_answer(outcome: str, code: int | None) -> Meaning:
    """The meaning of an attempt as the door hears of it (`client.Outcome`)."""
    if outcome == "ok":
        return OK
    cls = API_ERRORS.get(code) if code is not None else None
    return FAILED if cls is None else _of_class(cls)


def retry_at(exc: BaseException, now: dt.datetime, tz: ZoneInfo, *, failures: int = 1
             ) -> dt.datetime:
    """When the license or job that raised `exc` may try again. `failures`: the job's
    failed runs in a row, this one included; a pull that keeps failing (an answer that
    cannot be read, a bug) waits longer each time (`backoff`), so it never spends the
    day's requests on the same failure."""
    again = of(exc).until(getattr(exc, "until", None), now, tz)
    if of(exc).scope is Scope.PULL:
        again = max(again, now + backoff(failures))
    return again


BACKOFF_FIRST = dt.timedelta(minutes=5)
BACKOFF_MAX = dt.timedelta(hours=4)  # still tried a few times a day: it notices a fix


def backoff(failures: int) -> dt.timedelta:
    """The least wait after a job's `failures`-th failed run in a row: 5 minutes,
    doubled each time, at most 4 hours (the planner may plan it later still)."""
    doubled: dt.timedelta = BACKOFF_FIRST * 2 ** min(max(failures, 1) - 1, 16)
    return min(doubled, BACKOFF_MAX)
