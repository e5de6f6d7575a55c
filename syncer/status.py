"""The read model of the operations surface: what a person or a scraper sees.

One `Status` is built by a fixed handful of queries, whatever the number of licenses
and jobs (no query per license or job): `syncer status` prints it (text or `--json`),
`/metrics` exposes it through a Prometheus collector, and the page at `/` renders it.
So the three always say the same thing.

Which licenses: those in the config, then every other license the database knows
(`sync_state`, `request_budget`, `license_state`), marked `configured=False`: a
database filled by `syncer demo`, or a license since removed from the config, still
shows. For those the budget is `[api]`'s and nothing is planned (no daemon runs them).

The plan (requests expected for the rest of the day) is the budget planner's, for the
minute: it costs a few milliseconds per license, so it is computed once per license,
spend and minute and kept for that minute (a page that refreshes, and a scrape in the
same minute, reuse it).

Nothing here holds a token or a national register number: the model reads neither.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, func, or_, select, union

from syncer import audit, dialects, outcomes, sales
from syncer import jobs as registry
from syncer import tables as t
from syncer.config import Config, LicenseConfig
from syncer.daemon import enabled_jobs
from syncer.jobs import DEFAULT_JOBS
from syncer.ledger import BAD_LOGIN_WINDOW, api_day, login_pause, utcnow
from syncer.planner import HourPlan, JobSpec, OpeningHours, Plan, SalesProfile, next_midnight, plan
from syncer.redact import redact
from syncer.resume import unfinished_rebuilds

HOURS_SHOWN = 24  # the page's chart: requests per hour over the last day


# --- the model -----------------------------------------------------------------------


@dataclass(frozen=True)
class StopSign:
    """Why a license (or all of them) does not sync as it should, and what to do."""

    # credentials_refused, rebuild_unfinished, paused, budget_spent, budget_tight,
    # not_configured, login_pause
    kind: str
    severity: str  # error (stopped), warning (degraded), info
    says: str
    todo: str


@dataclass(frozen=True)
class CatchUp:
    """A history job still catching up (its last run found a full window): how far its
    days have come, as the backfill's bar counts them (from the first stored day to
    today, done up to the last stored day), and when it should be in at the pace so far.
    Coupons carry no day: only `since` is known."""

    since: dt.datetime
    first_day: dt.date | None
    reached_day: dt.date | None
    days_done: int | None
    days_total: int | None
    expected_end: dt.datetime | None  # None: no pace yet (or no days)

    @property
    def days_left(self) -> int | None:
        return None if self.days_total is None or self.days_done is None else \
            self.days_total - self.days_done


def catch_up(since: dt.datetime, from_day: dt.date | None, first: dt.date | None,
             reached: dt.date | None, today: dt.date, now: dt.datetime) -> CatchUp:
    """A catch-up from its stored state; the pace is the days gained since it began."""
    if first is None or reached is None:
        return CatchUp(since, None, None, None, None, None)
    total = max((today - first).days, 1)
    done = min(max((reached - first).days, 0), total)
    gained = (reached - (from_day or first)).days
    elapsed = (now - since).total_seconds()
    end = None
    if done == total:
        end = now  # today's records are all that is left
    elif gained > 0 and elapsed > 0:
        end = now + dt.timedelta(seconds=(total - done) * elapsed / gained)
    return CatchUp(since, first, reached, done, total, end)


@dataclass(slots=True)  # not frozen: 3,200 of them per build at 200 licenses, 4x cheaper
class JobView:
    job: str
    table_rows: int | None  # rows of the resource's table (None for a re-check or re-scan)
    cursor: int | None
    last_success_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    next_run_at: dt.datetime | None
    planned_requests: int  # for the rest of the API day
    last_error: str | None
    last_error_at: dt.datetime | None
    disabled: str | None  # why the job does not run (1005, or off in the config)
    lag_seconds: float | None  # since its last success
    catching_up: CatchUp | None = None  # a history job still loading its history

    @property
    def failing(self) -> bool:
        """Its last run ended in an error (a disabled job is not failing: it waits)."""
        return self.last_error is not None and self.disabled is None


@dataclass(slots=True)
class RequestCount:
    """Ledger rows of one license, function and outcome (see `outcome_label`)."""

    function: str
    outcome: str
    total: int  # every request in the ledger
    today: int  # in the current API day


@dataclass(frozen=True)
class LicenseView:
    name: str
    configured: bool
    day: dt.date
    daily_budget: int
    reserve: int
    spent: int  # requests spent in the API day (any purpose)
    left: int  # what scheduled work may still spend today: daily_budget - reserve - spent
    planned: int  # requests the plan expects for the rest of the day
    needed: int  # requests the rest of the day costs at every job's longest interval
    resets_at: dt.datetime
    shop_open: bool
    credentials_refused: str | None  # the API's reason; nothing is sent until they change
    credentials_refused_at: dt.datetime | None
    paused_until: dt.datetime | None  # 1003 / 1004 in force
    paused_reason: str | None
    quarantined: int
    jobs: tuple[JobView, ...]
    requests: tuple[RequestCount, ...]
    hourly: tuple[int, ...]  # requests per hour, oldest first, HOURS_SHOWN of them
    # Problems found by the latest audit; None until an audit has run for the license.
    audit_problems: int | None = None
    audit_at: dt.datetime | None = None
    audit_kinds: Mapping[str, int] | None = None  # problems by kind (audit.KINDS)
    # A history job never synced or still catching up: the audit waits for it.
    history_loading: bool = False
    # A `syncer rebuild` unfinished since then (running, or killed): its tables are partial.
    rebuild_unfinished_since: dt.datetime | None = None
    rebuild_resources: tuple[str, ...] = ()
    stop_lifted: str | None = None  # the last stop lifted on purpose: when, by whom, what
    stop_signs: tuple[StopSign, ...] = ()
    # The plan's shape: the rest of the day hour by hour, requests beside expected sales.
    plan_ahead: tuple[HourPlan, ...] = ()

    def job(self, name: str) -> JobView | None:
        return next((j for j in self.jobs if j.job == name), None)

    @property
    def catching_up(self) -> list[JobView]:
        """Its history jobs still catching up."""
        return [j for j in self.jobs if j.catching_up is not None]


@dataclass(frozen=True)
class Status:
    now: dt.datetime
    tz: ZoneInfo
    licenses: tuple[LicenseView, ...]
    bad_logins: int  # any license, in the last BAD_LOGIN_WINDOW
    new_credentials_wait_until: dt.datetime | None
    hours_from: dt.datetime  # start of the first hour in LicenseView.hourly
    stop_signs: tuple[StopSign, ...] = field(default=())  # for all licenses

    def license(self, name: str) -> LicenseView | None:
        return next((lic for lic in self.licenses if lic.name == name), None)

    @property
    def not_configured(self) -> list[str]:
        return [lic.name for lic in self.licenses if not lic.configured]


def outcome_label(outcome: str, error_code: int | None, attempt: int, max_attempts: int) -> str:
    """One word per kind of answer: ok (records or none), auth (1001/1002), 1003, 1004,
    1005 (module not licensed), api_error (another code), retried (a transport fault,
    5xx or bad body that was tried again), failed (the same, on the last attempt),
    pending (no answer recorded: in flight, or the process died)."""
    if outcome in ("ok", "empty"):
        return "ok"
    if error_code in outcomes.BAD_LOGIN_CODES:
        return "auth"
    if error_code in (1003, 1004, 1005):
        return str(error_code)
    if outcome == "api_error" or error_code is not None:
        return "api_error"
    if outcome == "failed":
        return "retried" if attempt < max_attempts else "failed"
    return outcome


def when(moment: dt.datetime | None, tz: ZoneInfo) -> str:
    """A time as a person reads it: local, with its zone."""
    return "" if moment is None else moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def catching_up_words(label: str, job: JobView, now: dt.datetime, tz: ZoneInfo) -> str:
    """A history job still catching up, for a person (the page, `syncer status`)."""
    up = job.catching_up
    assert up is not None
    if up.reached_day is None or up.days_done is None or up.days_total is None:
        reached = "" if job.cursor is None else f", id {job.cursor} reached"
        return f"{label}: catching up on history since {when(up.since, tz)}{reached}"
    if up.expected_end is None:
        end = "expected end not known yet (no day gained so far)"
    elif up.days_left == 0 or up.expected_end <= now:
        end = "the last day is loading"
    else:
        end = f"expected end about {when(up.expected_end, tz)}"
    return (f"{label}: catching up on history: {up.reached_day.isoformat()} reached, day "
            f"{up.days_done:,} of {up.days_total:,} ({100 * up.days_done // up.days_total} %); {end}")


def audit_words(lic: LicenseView, tz: ZoneInfo) -> str:
    """The license's latest audit for a person: problems by kind and the command that
    lists them, or why there is none yet."""
    if lic.audit_at is None:
        return ("Audit: history still loading; the audit runs when it is in" if lic.history_loading
                else "Audit: not run yet (the daemon audits each license once a day)")
    head = f"Audit of {when(lic.audit_at, tz)}: "
    loading = "; history loading again, audited when it is in" if lic.history_loading else ""
    if not lic.audit_problems:
        return head + "no problem" + loading
    kinds = lic.audit_kinds or {}
    order = [*audit.KINDS, *sorted(set(kinds) - set(audit.KINDS))]  # JSONB keeps no order
    listed = "; ".join(f"{kinds[kind]} {audit.KINDS.get(kind, kind)}" for kind in order
                       if kinds.get(kind))
    return (f"{head}{lic.audit_problems} problem(s){': ' + listed if listed else ''} "
            f"(listed by `{audit.command(lic.name)}`){loading}")


def _job_names() -> list[str]:
    """Every job, in the order a person reads them: the resources, then the re-reads."""
    return [job.name for job in registry.listed()]


def plan_shape(hours: Sequence[HourPlan], tz: ZoneInfo) -> str:
    """The rest of the day's plan, one `HH:MM zone: requests (orders expected)` per hour."""
    return ", ".join(
        f"{h.start.astimezone(tz):%H:%M %Z}: {h.requests:.0f} req"
        + ("" if h.sales is None else f" ({h.sales:.0f} orders expected)")
        + ("" if h.open else " closed") for h in hours)


# --- the plan, once per license, spend and minute -------------------------------------

# Plans of one minute, by (jobs, schedule, zone, minute), then by (spent, spendable):
# licenses on the same schedule that spent the same share one plan.
_plans: dict[tuple[Any, ...], dict[tuple[Any, ...], Plan]] = {}
_plans_lock = threading.Lock()
_profiles = sales.ProfileCache()  # each license's sales profile, learned once a day


def _plans_for(jobs: tuple[JobSpec, ...], hours: OpeningHours, tz: ZoneInfo, now: dt.datetime,
               schedule_key: str) -> Callable[[int, int, SalesProfile | None, int | None], Plan]:
    """The plan of a license that spent `spent` of `spendable`, made once per minute."""
    minute = now.replace(second=0, microsecond=0)
    key = (jobs, schedule_key, str(tz), minute)
    with _plans_lock:
        if key not in _plans:
            if len(_plans) > 16:
                _plans.clear()  # only the current minute matters
            _plans[key] = {}
        made = _plans[key]

    def plan_of(spent: int, spendable: int, profile: SalesProfile | None,
                recent: int | None) -> Plan:
        found = made.get((spent, spendable, profile, recent))
        if found is None:
            found = made[(spent, spendable, profile, recent)] = plan(
                jobs, now=minute, tz=tz, hours=hours, spent=spent, spendable=spendable,
                last_runs={}, profile=profile, recent=recent, by_hour=True)
        return found

    return plan_of


# --- building it ---------------------------------------------------------------------


def stored_licenses(conn: Connection) -> set[str]:
    """Every license the database holds state, spending or stop signs of."""
    return set(conn.execute(union(
        select(t.sync_state.c.license), select(t.request_budget.c.license),
        select(t.license_state.c.license))).scalars()) - {"*"}


def build(engine: Engine, config: Config, *, now: dt.datetime | None = None,
          totals: bool = False, requests: bool = True, cache: Cache | None = None) -> Status:
    """The status of every license the config or the database knows.

    `totals`: also count every ledger row ever (the requests counter of /metrics;
    `RequestCount.total`); the page and `syncer status` need today's only, which the
    ledger's (license, day) index reads fast. `cache`: what a long-running process keeps
    between builds (see `Cache`); without one, everything is read afresh. `requests`
    False: leave `LicenseView.requests` empty (the page does not show them).
    """
    now = now or utcnow()
    tz = config.api.tz
    day = api_day(now, tz)
    hours_from = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=HOURS_SHOWN - 1)
    with engine.connect() as conn:
        states: dict[str, dict[str, tuple[Any, ...]]] = defaultdict(dict)
        state = t.sync_state.c
        for license, resource, *values in conn.execute(select(
                state.license, state.resource, state.cursor, state.last_success_at,
                state.last_attempt_at, state.next_run_at, state.last_error, state.last_error_at,
                state.disabled_reason, state.catching_up_since, state.catch_up_from_day,
                state.history_first_day, state.history_reached_day)):
            states[license][resource] = tuple(values)
        stops = {row.license: row for row in conn.execute(select(t.license_state))}
        spent = {row.license: int(row.spent) for row in conn.execute(
            select(t.request_budget.c.license, t.request_budget.c.spent)
            .where(t.request_budget.c.day == day))}
        quarantined = {row[0]: int(row[1]) for row in conn.execute(
            select(t.quarantine.c.license, func.count()).group_by(t.quarantine.c.license))}
        audited = audit.latest(conn)
        rebuilds = unfinished_rebuilds(conn)
        known = stored_licenses(conn) | set(rebuilds)
        configured = {lic.name: lic for lic in config.licenses}
        names = [*configured, *sorted(known - set(configured))]
        rows = _table_rows(conn, now, cache)
        all_time = _totals(conn, cache or Cache(), now, config.api.max_attempts) if totals else None
        by_outcome = (_requests(conn, names, day, config.api.max_attempts, all_time)
                      if requests or totals else {})
        hourly = _hourly(conn, names, now, hours_from, tz, cache)
        bad_logins, wait_until = login_pause(conn, now)
        hours = config.schedule.hours()
        # The sales the daemon's plan follows (`syncer.sales`), for the configured licenses.
        followed = [lic.name for lic in config.licenses]
        profiles = _profiles.get(conn, followed, now, tz, hours) if followed else {}
        recent = sales.recent_sales(conn, followed, now) if followed else {}
    schedule_key = repr(config.schedule.opening_hours)
    jobs = tuple(enabled_jobs(config, DEFAULT_JOBS))
    off = {}  # job: why the config keeps it from running
    for job in registry.JOBS:
        if not config.resource(job.resource.name).enabled:
            off[job.name] = f"resources.{job.resource.name}.enabled = false in the config"
    shop_open, resets_at = hours.is_open(now, tz), next_midnight(now, tz)  # one API time zone
    views = []
    job_names = _job_names()
    plan_of = _plans_for(jobs, hours, tz, now, schedule_key)
    for name in names:
        lic = configured.get(name) or LicenseConfig(name=name)
        budget, reserve = config.budget_for(lic)
        used = spent.get(name, 0)
        spendable = max(config.spendable(lic), 0)
        stop = stops.get(name)
        refused = None
        if stop is not None and stop.auth_rejected_fingerprint is not None and (
                name not in configured
                or stop.auth_rejected_fingerprint == lic.fingerprint(config.api.base_url)):
            refused = stop.auth_rejected_reason or "credentials refused"
        # Nothing is planned where nothing will be sent: a license no daemon runs, or one
        # stopped until its credentials change.
        made = (plan_of(used, spendable, profiles.get(name), recent.get(name))
                if name in configured and refused is None else None)
        paused = stop.blocked_until if stop is not None and stop.blocked_until is not None \
            and stop.blocked_until > now else None
        job_views = tuple(_job_view(name, job, states[name].get(job), rows, made, off.get(job), now,
                                    day) for job in job_names)
        loading = any(not j.disabled and registry.loading(
            registry.BY_NAME[j.job], j.last_success_at, None if j.catching_up is None else
            j.catching_up.since) for j in job_views)
        last_audit = audited.get(name)
        view = LicenseView(
            name=name, configured=name in configured, day=day, daily_budget=budget,
            reserve=reserve, spent=used, left=max(spendable - used, 0),
            planned=sum(made.expected.values()) if made else 0,
            needed=made.needed if made else 0, resets_at=resets_at, shop_open=shop_open,
            credentials_refused=refused,
            credentials_refused_at=stop.auth_rejected_at if refused and stop is not None else None,
            paused_until=paused, paused_reason=stop.blocked_reason if paused and stop else None,
            quarantined=quarantined.get(name, 0),
            audit_problems=None if last_audit is None else last_audit.problems,
            audit_at=None if last_audit is None else last_audit.ran_at,
            audit_kinds=None if last_audit is None else last_audit.kinds,
            history_loading=loading,
            rebuild_unfinished_since=rebuilds[name][0] if name in rebuilds else None,
            rebuild_resources=tuple(rebuilds[name][1]) if name in rebuilds else (),
            stop_lifted=(f"{when(stop.lifted_at, tz)} by {stop.lifted_by}: {stop.lifted_stop}"
                         if stop is not None and stop.lifted_at is not None else None),
            jobs=job_views,
            requests=tuple(by_outcome.get(name, ())),
            hourly=tuple(hourly.get(name, [0] * HOURS_SHOWN)),
            plan_ahead=made.hourly if made else (),
        )
        views.append(_with_stop_signs(view, tz))
    general = []
    if wait_until is not None:
        general.append(StopSign(
            "login_pause", "warning",
            f"{bad_logins} bad logins in the last {BAD_LOGIN_WINDOW.seconds // 60} minutes: new "
            f"credentials wait until {when(wait_until, tz)}, so that the API does not block this IP.",
            "Check the name and token of the licenses that were refused; nothing else to do, "
            "the wait ends by itself."))
    return Status(now=now, tz=tz, licenses=tuple(views), bad_logins=bad_logins,
                  new_credentials_wait_until=wait_until, hours_from=hours_from,
                  stop_signs=tuple(general))


_NO_STATE = (None,) * 11
_OWNING = frozenset(job.name for job in registry.JOBS if job.table is not None)  # jobs with rows


def _job_view(license: str, job: str, state: tuple[Any, ...] | None,
              rows: Mapping[tuple[str, str], int], made: Plan | None, off: str | None,
              now: dt.datetime, today: dt.date) -> JobView:
    (cursor, success, attempt, next_run, error, error_at, disabled, since, from_day, first,
     reached) = state or _NO_STATE
    return JobView(
        job=job,
        table_rows=rows.get((license, job), 0) if job in _OWNING else None,
        cursor=cursor,
        last_success_at=success,
        last_attempt_at=attempt,
        next_run_at=next_run,
        planned_requests=made.expected.get(job, 0) if made else 0,
        last_error=redact(error) if error else None,
        last_error_at=error_at if error else None,
        disabled=off or disabled,
        lag_seconds=None if success is None else max((now - success).total_seconds(), 0.0),
        catching_up=None if since is None else catch_up(since, from_day, first, reached, today, now),
    )


def _table_rows(conn: Connection, now: dt.datetime,
                cache: Cache | None) -> Mapping[tuple[str, str], int]:
    """Rows per license in each resource's table: one grouped count per table. With a
    cache, counted at most once every ROWS_EVERY (a count reads every row's index entry:
    at years of history for 200 licenses it would be most of a page's time)."""
    if cache is not None:
        with cache.lock:
            if cache.rows_at is not None and abs((now - cache.rows_at).total_seconds()) < ROWS_EVERY:
                return cache.rows
    out: dict[tuple[str, str], int] = {}
    for job in registry.JOBS:
        table = job.table
        if table is None:
            continue
        for license, count in conn.execute(
                select(table.c.license, func.count()).group_by(table.c.license)):
            out[(license, job.name)] = int(count)
    if cache is not None:
        with cache.lock:
            cache.rows, cache.rows_at = out, now
    return out


PENDING_FOR = dt.timedelta(hours=1)  # a request still pending after this never got its answer
RECENT = dt.timedelta(minutes=1)  # rows younger than this are counted afresh on every build
ROWS_EVERY = 60.0  # seconds: with a cache, table rows are counted at most this often


class Cache:
    """What one process keeps between builds (the daemon's page and scrapes share one):
    the ledger's counts up to a watermark, finished hours of the chart, and the table
    row counts of the last ROWS_EVERY seconds (so a page's or a scrape's `rows` may be
    up to a minute old; `syncer status` always counts afresh).

    Ledger rows are only ever added, and each changes once, from `pending` to its
    outcome. Rows up to the watermark (the row before the first one that is still
    pending, or younger than RECENT; a pending row older than PENDING_FOR never got its
    answer: its process died) never change again, so each build counts only the rows
    added since. Rows still pending are left out of the counter until they settle, so
    every series of it only grows.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mark = 0
        self.settled: dict[tuple[str, str, str], int] = defaultdict(int)
        # Finished hours of the chart (requests per license), for the licenses named.
        self.hour_names: tuple[str, ...] = ()
        self.hours: dict[dt.datetime, dict[str, int]] = {}
        self.rows: Mapping[tuple[str, str], int] = {}
        self.rows_at: dt.datetime | None = None


def _totals(conn: Connection, cache: Cache, now: dt.datetime,
            max_attempts: int) -> dict[tuple[str, str, str], int]:
    """Every settled ledger row per license, function and outcome."""
    ledger = t.request_ledger.c

    def grouped(*where: Any) -> dict[tuple[str, str, str], int]:
        out: dict[tuple[str, str, str], int] = defaultdict(int)
        for license, function, outcome, code, attempt, count in conn.execute(
                select(ledger.license, ledger.function, ledger.outcome, ledger.error_code,
                       ledger.attempt, func.count())
                .where(*where)
                .group_by(ledger.license, ledger.function, ledger.outcome, ledger.error_code,
                          ledger.attempt)):
            out[(license, function, outcome_label(outcome, code, attempt, max_attempts))] += int(count)
        return out

    with cache.lock:
        top = conn.execute(select(func.max(ledger.id))).scalar() or 0
        if top < cache.mark:  # a ledger emptied under us (a new database): start again
            cache.mark, cache.settled = 0, defaultdict(int)
        # The first row after the mark that may still change: pending (and not dead), or
        # so recent that a row with a smaller id may not be committed yet (ids are taken
        # when a transaction inserts, not when it commits).
        live = conn.execute(select(func.min(ledger.id)).where(
            ledger.id > cache.mark,
            or_(ledger.sent_at > now - RECENT,
                and_(ledger.outcome == "pending", ledger.sent_at > now - PENDING_FOR)))).scalar()
        mark = top if live is None else int(live) - 1
        if mark > cache.mark:
            for key, count in grouped(ledger.id > cache.mark, ledger.id <= mark).items():
                cache.settled[key] += count
            cache.mark = mark
        totals = dict(cache.settled)
        after = cache.mark
    for key, count in grouped(ledger.id > after, ledger.outcome != "pending").items():
        totals[key] = totals.get(key, 0) + count
    return totals


def _requests(conn: Connection, names: list[str], day: dt.date, max_attempts: int,
              totals: Mapping[tuple[str, str, str], int] | None) -> dict[str, list[RequestCount]]:
    """Per license: requests today (the ledger's (license, day) index), and all time when
    `totals` are given."""
    ledger = t.request_ledger.c
    today: dict[tuple[str, str, str], int] = defaultdict(int)
    for license, function, outcome, code, attempt, count in conn.execute(
            select(ledger.license, ledger.function, ledger.outcome, ledger.error_code,
                   ledger.attempt, func.count())
            .where(ledger.license.in_(names), ledger.day == day)
            .group_by(ledger.license, ledger.function, ledger.outcome, ledger.error_code,
                      ledger.attempt)):
        today[(license, function, outcome_label(outcome, code, attempt, max_attempts))] += int(count)
    keys = set(today) | set(totals or {})
    out: dict[str, list[RequestCount]] = defaultdict(list)
    for key in sorted(keys):
        license, function, label = key
        out[license].append(RequestCount(function, label, (totals or {}).get(key, 0), today.get(key, 0)))
    return out


def _hour_of(text: str) -> dt.datetime:
    """'YYYY-MM-DD HH' (UTC) as an aware datetime."""
    return dt.datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), tzinfo=dt.UTC)


def _hourly(conn: Connection, names: list[str], now: dt.datetime, start: dt.datetime,
            tz: ZoneInfo, cache: Cache | None) -> dict[str, list[int]]:
    """Requests per license and UTC hour since `start`, grouped in SQL. With a cache,
    hours that ended more than an hour ago are read once."""
    ledger = t.request_ledger.c
    hour = dialects.of(conn).utc_hour(ledger.sent_at)
    current = now.replace(minute=0, second=0, microsecond=0)
    settled_before = current - dt.timedelta(hours=1)  # a late write may still land in the last one
    moments = [start + dt.timedelta(hours=h) for h in range(HOURS_SHOWN)]
    since = start
    if cache is not None:
        with cache.lock:
            if cache.hour_names != tuple(names):
                cache.hour_names, cache.hours = tuple(names), {}
            if all(m in cache.hours for m in moments if m < settled_before):
                since = settled_before
    rows = conn.execute(
        select(ledger.license, hour.label("hour"), func.count())
        .where(ledger.license.in_(names), ledger.day >= api_day(since, tz),
               ledger.sent_at >= since, ledger.sent_at <= now + dt.timedelta(minutes=1))
        .group_by(ledger.license, hour))
    found: dict[dt.datetime, dict[str, int]] = defaultdict(dict)
    for license, text, count in rows:
        found[_hour_of(text)][license] = int(count)
    if cache is not None:
        with cache.lock:
            for moment in moments:
                if since <= moment < settled_before:
                    cache.hours[moment] = found.get(moment, {})
            for moment in [m for m in cache.hours if m < start]:
                del cache.hours[moment]
            for moment in moments:
                if moment < since:
                    found[moment] = cache.hours[moment]
    return {name: [found.get(moment, {}).get(name, 0) for moment in moments] for name in names}


def _with_stop_signs(view: LicenseView, tz: ZoneInfo) -> LicenseView:
    signs = []
    if not view.configured:
        signs.append(StopSign(
            "not_configured", "info",
            "Not in the config: this database holds its data, but no `syncer run` with this "
            "config syncs it.",
            "Add it as a [[licenses]] entry to sync it again; nothing to do if it is retired "
            "(or a demo)."))
    if view.credentials_refused:
        signs.append(StopSign(
            "credentials_refused", "error",
            f"The API refused the credentials, license stopped: {view.credentials_refused}"
            + (f" (since {when(view.credentials_refused_at, tz)})" if view.credentials_refused_at else "")
            + ". Nothing is sent for this license until its name, token or api.base_url changes.",
            "Fix the license name, token or api.base_url in the config, then restart the syncer "
            "(or, once fixed elsewhere, `syncer unblock --license NAME`)."))
    if view.rebuild_unfinished_since is not None:
        signs.append(StopSign(
            "rebuild_unfinished", "error",
            f"A rebuild is unfinished (started {when(view.rebuild_unfinished_since, tz)}): "
            f"{', '.join(view.rebuild_resources) or 'its tables'} hold only part of their rows "
            "until it ends.",
            "If no `syncer rebuild` is running, run it again with the same --resource choice: "
            "it continues where it stopped."))
    if view.paused_until is not None:
        reason = view.paused_reason or "the API asked to wait"
        todo = ("Nothing: it resumes by itself. If this happens often, another program spends "
                "this license's requests; lower daily_budget to leave it room."
                if "1003" in reason else
                "Check that no other program on this IP uses wrong credentials; it resumes by itself.")
        signs.append(StopSign("paused", "error",
                              f"Paused until {when(view.paused_until, tz)}: {reason}.", todo))
    if view.configured and view.left == 0 and view.daily_budget > view.reserve:
        signs.append(StopSign(
            "budget_spent", "warning",
            f"Today's requests are spent ({view.spent} of {view.daily_budget - view.reserve} for "
            f"scheduled work; the reserve of {view.reserve} is kept for `syncer call`). Scheduled "
            f"work waits until {when(view.resets_at, tz)}.",
            "Nothing: it resumes at midnight. A backfill or `syncer call` today spent from the "
            "same budget."))
    elif view.configured and view.needed > view.left:
        signs.append(StopSign(
            "budget_tight", "warning",
            f"Budget tight: the rest of the day needs {view.needed} requests with every job at its "
            f"longest interval, and {view.left} are left; jobs run less often than usual.",
            "Nothing urgent; avoid backfills and `syncer call` during opening hours, or raise "
            "daily_budget if the license allows more."))
    return replace(view, stop_signs=tuple(signs))


# --- for `syncer status --json` ---------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def to_json(status: Status) -> dict[str, Any]:
    """The JSON of `syncer status --json` (the keys are a contract for scripts)."""
    return {
        "generated_at": status.now.isoformat(),
        "timezone": str(status.tz),
        "licenses": [_license_json(lic) for lic in status.licenses],
        "not_in_config": status.not_configured,
        "bad_logins_last_30_min": status.bad_logins,
        "new_credentials_wait_until": _iso(status.new_credentials_wait_until),
        "stop_signs": [sign.__dict__ for sign in status.stop_signs],
    }


def _license_json(lic: LicenseView) -> dict[str, Any]:
    return {
        "license": lic.name,
        "configured": lic.configured,
        "day": lic.day.isoformat(),
        "requests_used_today": lic.spent,
        "requests_left_today": lic.left,
        "requests_planned_today": lic.planned,
        "requests_needed_today": lic.needed,
        "daily_budget": lic.daily_budget,
        "reserve": lic.reserve,
        "shop_open": lic.shop_open,
        "auth_rejected": lic.credentials_refused,
        "blocked_until": _iso(lic.paused_until),
        "blocked_reason": lic.paused_reason,
        "quarantined": lic.quarantined,
        "audit_problems": lic.audit_problems,
        "audit": None if lic.audit_at is None else {
            "ran_at": lic.audit_at.isoformat(), "problems": lic.audit_problems,
            "kinds": lic.audit_kinds, "listed_by": audit.command(lic.name)},
        "history_loading": lic.history_loading,
        "rebuild_unfinished_since": _iso(lic.rebuild_unfinished_since),
        "stop_lifted": lic.stop_lifted,
        "stop_signs": [sign.__dict__ for sign in lic.stop_signs],
        "requests_today": {f"{r.function} {r.outcome}": r.today for r in lic.requests if r.today},
        "requests_per_hour": list(lic.hourly),
        "plan_ahead": [{"hour": _iso(h.start), "requests": round(h.requests, 1), "open": h.open,
                        "expected_orders": None if h.sales is None else round(h.sales, 1)}
                       for h in lic.plan_ahead],
        "resources": [{
            "resource": job.job,
            "planned_requests_today": job.planned_requests,
            "rows": job.table_rows,
            "cursor": job.cursor,
            "last_success_at": _iso(job.last_success_at),
            "lag_seconds": None if job.lag_seconds is None else round(job.lag_seconds),
            "next_run_at": _iso(job.next_run_at),
            "last_error": job.last_error,
            "last_error_at": _iso(job.last_error_at),
            "disabled": job.disabled,
            "catching_up": None if job.catching_up is None else _catch_up_json(job.catching_up),
        } for job in lic.jobs],
    }


def _catch_up_json(up: CatchUp) -> dict[str, Any]:
    return {"since": up.since.isoformat(),
            "first_day": None if up.first_day is None else up.first_day.isoformat(),
            "reached_day": None if up.reached_day is None else up.reached_day.isoformat(),
            "days_done": up.days_done, "days_total": up.days_total,
            "expected_end": _iso(up.expected_end)}
