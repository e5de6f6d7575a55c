"""`syncer audit`: is the stored data complete and does it add up? Sends no request.

It reads the tables, the report views, the request ledger, the quarantine and the
sync state, and finds, per license:

- tickets whose payments do not add up to their total (any difference), or whose
  lines do not (more than a cent per line: the till may round each line, and the
  receipt each rate), from `report_tickets`;
- ids missing inside the stored id range of orders, invoices and coupons. A range
  is `confirmed` when a request for a window covering it was answered (the ledger
  keeps each request's window and outcome): the API has no such documents (voided
  ones); `quarantined` when the ids are in the quarantine; else `not_asked`;
- records in the quarantine, per resource, with their reasons;
- full lists not refreshed within the planner's interval for them (`max_interval`
  of open time, and `closed_max_interval` overall where the planner has one);
- full lists whose latest answer was refused (`sync_state.last_error`): a bad answer
  past its retries, or an empty list over many live rows kept (sync.pull_full_list);
- business days on which the shop is open (`[schedule] opening_hours`) without a ticket;
- a `syncer rebuild` not yet ended (running, or killed): its tables are partial.

Every finding is a problem except a confirmed id range (the API said so) and an id
range whose records are in the quarantine (counted there). A list never refreshed is
one only once the license has been syncing longer than the list's interval.

The daemon audits what is stored: never a license whose history is still loading (a
history job that never succeeded, or is catching up: `history_loading`). It audits
each license once a day (`run_daily`), and again when its history is in: at the end of
a catch-up (`after_loading`) or of a backfill. The result, with its problems by kind
(`KINDS`), is kept in `audit_runs`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select
from sqlalchemy.exc import SQLAlchemyError

from syncer import reports
from syncer import resources as res
from syncer import tables as t
from syncer.config import Config
from syncer.jobs import JOBS, Kind, loading
from syncer.ledger import Clock, utcnow
from syncer.resume import unfinished_rebuilds

log = logging.getLogger("syncer.audit")

EXIT_PROBLEMS = 4  # `syncer audit` found problems (0: none; 1, 2, 3 keep their meaning)
ID_RESOURCES = (res.ORDERS, res.INVOICES, res.COUPONS)
# A job takes a moment to run after it is due; a list this much late is not stale yet.
GRACE = dt.timedelta(minutes=5)
DAILY = dt.timedelta(hours=24)


# The kinds of problem, in the order a person reads them, with their words (each
# kind's findings are under the same key in `syncer audit --json`).
KINDS: dict[str, str] = {
    "tickets_payments_off": "ticket(s) whose payments differ from the total",
    "tickets_lines_off": "ticket(s) whose lines differ from the total",
    "id_gaps": "id range(s) missing, not yet asked of the API",
    "quarantine": "record(s) in the quarantine",
    "stale_lists": "list(s) not refreshed in time",
    "refused_lists": "list(s) whose latest answer was refused, the rows kept",
    "open_days_without_tickets": "open day(s) without a ticket",
    "rebuild_unfinished": "`syncer rebuild` not ended (its tables are partial)",
}


def command(license: str) -> str:
    """The command that lists a license's problems."""
    return f"syncer audit --license {license}"


@dataclass(frozen=True)
class Gap:
    first: int
    last: int
    status: str  # confirmed | quarantined | not_asked

    def as_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "ids": self.last - self.first + 1,
                "status": self.status}


def licenses_in(conn: Connection, config: Config, only: str | None) -> list[str]:
    """The licenses to audit: `only`, or those of the config and of the database."""
    if only is not None:
        return [only]
    stored = set(conn.execute(select(t.sync_state.c.license).distinct()).scalars())
    return sorted(stored | {lic.name for lic in config.licenses})


def run(engine: Engine, config: Config, *, license: str | None = None,
        since: dt.date | None = None, until: dt.date | None = None,
        now: dt.datetime | None = None) -> dict[str, Any]:
    """The audit of every license (or one), as one JSON-ready object."""
    now = now or utcnow()
    with engine.connect() as conn:
        names = licenses_in(conn, config, license)
        found = [audit_license(conn, config, name, since=since, until=until, now=now)
                 for name in names]
        day_start = reports.day_start_minute(conn)
    return {
        "checked_at": now.isoformat(),
        "day_starts_at": f"{day_start // 60:02d}:{day_start % 60:02d}",
        "problems": sum(lic["problems"] for lic in found),
        "licenses": found,
    }


def audit_license(conn: Connection, config: Config, license: str, *, since: dt.date | None,
                  until: dt.date | None, now: dt.datetime) -> dict[str, Any]:
    tz = config.api.tz
    today = reports.business_day(now, tz, reports.day_start_minute(conn))
    # A day after today has no tickets yet, and 9999-12-31 has no next day to step to.
    last = min(until, today) if until else today - dt.timedelta(days=1)
    payments_off, lines_off = ticket_problems(conn, license, since, until)
    gaps = {r.name: [g.as_dict() for g in id_gaps(conn, license, r)] for r in ID_RESOURCES}
    quarantined = quarantine(conn, license)
    stale = stale_lists(conn, config, license, now)
    refused = refused_lists(conn, license)
    empty = open_days_without_tickets(conn, config, license, since, last)
    rebuild = unfinished_rebuilds(conn, license).get(license)
    kinds = problem_kinds(payments_off, lines_off, gaps, quarantined, stale, refused, empty,
                          rebuild)
    problems = sum(kinds.values())
    return {
        "license": license,
        "from": since.isoformat() if since else None,
        "to": last.isoformat(),
        "problems": problems,
        "kinds": kinds,
        "tickets_payments_off": payments_off,
        "tickets_lines_off": lines_off,
        "id_gaps": gaps,
        "quarantine": quarantined,
        "stale_lists": stale,
        "refused_lists": refused,
        "open_days_without_tickets": [day.isoformat() for day in empty],
        # A rebuild not yet ended: its tables are partial, so every other finding may be
        # its doing.
        "rebuild_unfinished": None if rebuild is None else {
            "since": rebuild[0].isoformat(), "resources": rebuild[1]},
    }


def problem_kinds(payments_off: Sequence[Any], lines_off: Sequence[Any],
                  gaps: dict[str, list[dict[str, Any]]], quarantined: dict[str, list[Any]],
                  stale: Sequence[Any], refused: Sequence[Any], empty: Sequence[Any],
                  rebuild: object | None = None) -> dict[str, int]:
    """The problems by kind (`KINDS`), kinds without one left out."""
    counts = {
        "tickets_payments_off": len(payments_off),
        "tickets_lines_off": len(lines_off),
        "id_gaps": sum(1 for ranges in gaps.values() for g in ranges if g["status"] == "not_asked"),
        "quarantine": sum(len(records) for records in quarantined.values()),
        "stale_lists": len(stale),
        "refused_lists": len(refused),
        "open_days_without_tickets": len(empty),
        "rebuild_unfinished": int(rebuild is not None),
    }
    return {kind: count for kind, count in counts.items() if count}


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def ticket_problems(conn: Connection, license: str, since: dt.date | None, until: dt.date | None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tickets whose payments, or whose lines, do not add up to their total."""
    view = reports.get("report_tickets").view
    query = select(view).where(view.c.license == license, or_(
        view.c.payment_difference != 0,
        # In cents: more than one per line is more than rounding (see the module doc).
        func.round(func.abs(view.c.difference) * 100) > view.c.lines,
    ))
    if since is not None:
        query = query.where(view.c.day >= since)
    if until is not None:
        query = query.where(view.c.day <= until)
    payments, lines = [], []
    cent = Decimal("0.01")
    for row in conn.execute(query.order_by(view.c.order_id)).mappings():
        total, difference = Decimal(row["total"]).quantize(cent), Decimal(row["difference"]).quantize(cent)
        paid, unpaid = Decimal(row["paid"]).quantize(cent), Decimal(row["payment_difference"]).quantize(cent)
        ticket = {"order_id": row["order_id"], "day": row["day"].isoformat(),
                  "register_id": row["register_id"],
                  "ordered_at": row["ordered_at"].isoformat() if row["ordered_at"] else None,
                  "total": _money(total)}
        if unpaid != 0:
            payments.append({**ticket, "paid": _money(paid), "difference": _money(unpaid)})
        if abs(difference) * 100 > row["lines"]:
            lines.append({**ticket, "lines_total": _money(Decimal(row["lines_total"]).quantize(cent)),
                          "difference": _money(difference)})
    return payments, lines


def _ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _windows(conn: Connection, license: str, function: str) -> list[tuple[int, int]]:
    """The id windows of this function that the API answered (ok or empty), merged."""
    ledger = t.request_ledger
    spans = []
    for stored in conn.execute(select(ledger.c.params).where(
            ledger.c.license == license, ledger.c.function == function,
            ledger.c.outcome.in_(("ok", "empty")))).scalars():
        # A JSON text on a driver that does not decode it.
        params = json.loads(stored) if isinstance(stored, str) else stored
        if not isinstance(params, dict):
            continue
        try:
            start, end = int(params["start"]), int(params["end"])
        except (KeyError, TypeError, ValueError):
            continue  # a `date=` request: it confirms no id range
        if start <= end:
            spans.append((start, end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _split(first: int, last: int, covered: Sequence[tuple[int, int]], status: str,
           other: str) -> list[tuple[int, int, str]]:
    """[first, last] cut into the parts inside `covered` (status) and outside (other)."""
    out: list[tuple[int, int, str]] = []
    at = first
    for start, end in covered:
        if end < at or start > last:
            continue
        if start > at:
            out.append((at, start - 1, other))
        out.append((max(start, at), min(end, last), status))
        at = min(end, last) + 1
        if at > last:
            break
    if at <= last:
        out.append((at, last, other))
    return out


def id_gaps(conn: Connection, license: str, resource: res.Resource) -> list[Gap]:
    """Ids missing between the lowest and highest stored id, with what the API said of them."""
    table = resource.table
    following = func.lead(table.c.id).over(order_by=table.c.id).label("next_id")
    pairs = select(table.c.id, following).where(table.c.license == license).subquery()
    holes = conn.execute(select(pairs.c.id, pairs.c.next_id)
                         .where(pairs.c.next_id > pairs.c.id + 1).order_by(pairs.c.id)).all()
    if not holes:
        return []
    windows = _windows(conn, license, resource.function)
    keys = conn.execute(select(t.quarantine.c.record_key).where(
        t.quarantine.c.license == license, t.quarantine.c.resource == resource.name)).scalars()
    parked = _ranges(int(k) for k in keys if k is not None and k.isdigit())
    gaps = []
    for below, above in holes:
        for first, last, status in _split(below + 1, above - 1, parked, "quarantined", "open"):
            if status == "quarantined":
                gaps.append(Gap(first, last, status))
                continue
            gaps.extend(Gap(a, b, s) for a, b, s in
                        _split(first, last, windows, "confirmed", "not_asked"))
    return gaps


def quarantine(conn: Connection, license: str) -> dict[str, list[dict[str, Any]]]:
    q = t.quarantine
    out: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(select(q.c.resource, q.c.record_key, q.c.reason, q.c.first_seen_at,
                                   q.c.last_seen_at, q.c.seen_count)
                            .where(q.c.license == license).order_by(q.c.resource, q.c.id)):
        out.setdefault(row.resource, []).append({
            "record_key": row.record_key, "reason": row.reason,
            "first_seen_at": row.first_seen_at.isoformat(),
            "last_seen_at": row.last_seen_at.isoformat(), "seen_count": row.seen_count})
    return out


def stale_lists(conn: Connection, config: Config, license: str, now: dt.datetime
                ) -> list[dict[str, Any]]:
    """Full lists whose last refresh is older than the planner lets them get (each list's
    own job in the job registry, syncer.jobs)."""
    tz, hours = config.api.tz, config.schedule.hours()
    states = {row.resource: row for row in conn.execute(
        select(t.sync_state).where(t.sync_state.c.license == license))}
    ledger = t.request_ledger.c
    first_day = conn.execute(select(func.min(ledger.day)).where(ledger.license == license)).scalar()
    syncing_since = None if first_day is None else conn.execute(
        select(func.min(ledger.sent_at)).where(ledger.license == license,
                                                ledger.day == first_day)).scalar()
    out = []
    for job in JOBS:
        spec, state = job.spec, states.get(job.name)
        if (job.kind is not Kind.OWN or job.resource.pull is not res.Pull.FULL_LIST
                or not config.resource(job.resource.name).enabled
                or (state is not None and state.disabled_reason)):
            continue
        last = state.last_success_at if state is not None else None
        entry = {"resource": job.resource.name,
                 "last_success_at": last.isoformat() if last else None,
                 "max_interval_minutes": spec.max_interval.total_seconds() / 60}
        if last is None:
            # Not stored yet is a problem only once it had its time to come.
            if syncing_since is not None and dt.timedelta(seconds=hours.open_seconds(
                    syncing_since, now, tz)) > spec.max_interval + GRACE:
                out.append({**entry, "why": "never refreshed"})
            continue
        open_time = dt.timedelta(seconds=hours.open_seconds(last, now, tz))
        if open_time > spec.max_interval + GRACE:
            out.append({**entry, "why": f"{open_time.total_seconds() / 60:.0f} minutes of opening "
                                        "hours since the last refresh"})
        elif spec.closed_max_interval is not None and now - last > max(
                spec.closed_max_interval, spec.max_interval) + GRACE:
            out.append({**entry, "why": f"{(now - last).total_seconds() / 3600:.1f} hours since "
                                        "the last refresh"})
    order = [r.name for r in res.RESOURCES]
    return sorted(out, key=lambda entry: order.index(entry["resource"]))


def refused_lists(conn: Connection, license: str) -> list[dict[str, Any]]:
    """Full lists whose latest answer was refused (kept in sync_state.last_error until an
    answer is applied): a bad answer, or an empty list that would delete many rows."""
    full = [r.name for r in res.RESOURCES if r.pull is res.Pull.FULL_LIST]
    state = t.sync_state.c
    rows = conn.execute(select(state.resource, state.last_error, state.last_error_at).where(
        state.license == license, state.resource.in_(full), state.last_error.is_not(None),
        state.disabled_reason.is_(None)))
    return sorted(({"resource": row.resource, "error": row.last_error,
                    "at": row.last_error_at.isoformat() if row.last_error_at else None}
                   for row in rows), key=lambda entry: full.index(entry["resource"]))


def open_days_without_tickets(conn: Connection, config: Config, license: str,
                              since: dt.date | None, until: dt.date) -> list[dt.date]:
    """Business days in [since or the first ticket's day, whichever is later, until] that
    the opening hours say are open, without a ticket."""
    view = reports.get("report_tickets").view
    query = select(view.c.day).where(view.c.license == license).distinct()
    if since is not None:
        query = query.where(view.c.day >= since)
    query = query.where(view.c.day <= until)
    days = set(conn.execute(query).scalars())
    # Before the first ticket nothing says the shop traded (`--from 0001-01-01` would
    # list every open weekday since the year 1); the caller ends `until` by today.
    first = conn.execute(select(func.min(view.c.day)).where(view.c.license == license)).scalar()
    if first is None:
        return []  # no history yet: nothing says since when the shop trades
    since = first if since is None else max(since, first)
    ranges = config.schedule.hours().ranges
    out = []
    day = since
    while day <= until:
        if ranges.get(day.weekday()) and day not in days:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


# --- the daemon's daily audit ------------------------------------------------------------


def history_loading(conn: Connection, config: Config, license: str) -> bool:
    """Whether the license's history is still loading: an enabled history job (orders,
    invoices, coupons by id windows) has never succeeded, or is catching up."""
    return _history_in(conn, config, license) is None


def _history_in(conn: Connection, config: Config, license: str) -> dt.datetime | None:
    """When the license's history was last loaded (the latest success of its history
    jobs); None while it is still loading."""
    state = t.sync_state.c
    stored = {row.resource: row for row in conn.execute(
        select(state.resource, state.last_success_at, state.catching_up_since)
        .where(state.license == license))}
    latest = dt.datetime.min.replace(tzinfo=dt.UTC)
    for job in JOBS:
        if not job.history or not config.resource(job.resource.name).enabled:
            continue
        row = stored.get(job.name)
        if row is None or loading(job, row.last_success_at, row.catching_up_since):
            return None
        latest = max(latest, row.last_success_at)
    return latest


def record(engine: Engine, config: Config, license: str, now: dt.datetime) -> dict[str, Any]:
    """Audit one license and keep the result in audit_runs (what the status shows)."""
    result = run(engine, config, license=license, now=now)
    [found] = result["licenses"]
    with engine.begin() as conn:
        conn.execute(insert(t.audit_runs).values(
            license=license, ran_at=now, problems=result["problems"], report=result,
            kinds=found["kinds"]))
    log.info("audit of %s: %d problem(s)%s", license, result["problems"],
             f" (see `{command(license)}`)" if result["problems"] else "")
    return result


# One audit decision at a time in a process (`run_daily`, `after_loading`).
_auditing = threading.Lock()


def run_daily(engine: Engine, config: Config, clock: Clock = utcnow) -> int:
    """Audit each configured license whose last audit is a day old (or none) and whose
    history is in, and keep the result in audit_runs; the number of licenses audited.
    The daemon calls this hourly. A license still loading its history is left for
    `after_loading`."""
    audited = 0
    try:
        for lic in config.licenses:
            # Under the lock `after_loading` takes, and timed when it decides: the
            # start-up audit and a history job that just caught up audited twice when
            # they looked at once, or when the job's success came after the audit's time.
            with _auditing:
                now = clock()
                with engine.connect() as conn:
                    last = conn.execute(select(func.max(t.audit_runs.c.ran_at)).where(
                        t.audit_runs.c.license == lic.name)).scalar()
                    if last is not None and now - last < DAILY:
                        continue
                    if history_loading(conn, config, lic.name):
                        log.debug("audit of %s: its history is still loading", lic.name)
                        continue
                record(engine, config, lic.name, now)
            audited += 1
    except SQLAlchemyError as exc:
        log.warning("daily audit failed; it runs again within the hour: %s", exc.__class__.__name__)
    return audited


def after_loading(engine: Engine, config: Config, license: str, clock: Clock = utcnow,
                  loaded_at: dt.datetime | None = None) -> bool:
    """A history job of the license just caught up (or a backfill ended): audit it once
    its whole history is in. `loaded_at`: when the run that caught up began (its
    success time); without it, the latest success of the history jobs. True when it
    was audited."""
    try:
        # Two history jobs that end at once audit once: the second finds the audit made
        # after its success (one lock per process; replicas at worst audit twice). Its
        # own success, not the latest of all: another history job's routine run that
        # began after the audit is no new history (the whole suite found two audits).
        with _auditing, engine.connect() as conn:
            loaded = _history_in(conn, config, license)
            if loaded is None:
                return False
            last = conn.execute(select(func.max(t.audit_runs.c.ran_at)).where(
                t.audit_runs.c.license == license)).scalar()
            if last is not None and last >= (loaded_at or loaded):
                return False
            record(engine, config, license, clock())
    except SQLAlchemyError as exc:
        log.warning("audit of %s failed; the daily audit tries again: %s", license,
                    exc.__class__.__name__)
        return False
    return True


@dataclass(frozen=True)
class Latest:
    """A license's latest audit, for the status."""

    ran_at: dt.datetime
    problems: int
    kinds: dict[str, int] | None  # None: an audit kept before kinds were


def latest(conn: Connection) -> dict[str, Latest]:
    """Each license's latest audit (the page, `syncer status`, syncer_audit_problems)."""
    runs = t.audit_runs
    newest = select(runs.c.license, func.max(runs.c.ran_at).label("ran_at")).group_by(
        runs.c.license).subquery()
    rows = conn.execute(select(runs.c.license, runs.c.ran_at, runs.c.problems, runs.c.kinds)
                        .join(newest, and_(newest.c.license == runs.c.license,
                                           newest.c.ran_at == runs.c.ran_at)))
    out = {}
    for row in rows:
        kinds = json.loads(row.kinds) if isinstance(row.kinds, str) else row.kinds
        out[row.license] = Latest(row.ran_at, row.problems, kinds)
    return out


def describe(result: dict[str, Any], tz: ZoneInfo) -> list[str]:
    """The audit for a person: one line per finding, problems first, counted; its time
    local, with its zone, as every other time a person reads."""
    checked = dt.datetime.fromisoformat(result["checked_at"]).astimezone(tz)
    out = [f"audit at {checked:%Y-%m-%d %H:%M:%S %Z} (business day starts at {result['day_starts_at']}): "
           f"{result['problems']} problem(s)"]
    for lic in result["licenses"]:
        out.append(f"license {lic['license']} (days {lic['from'] or 'first ticket'} to "
                   f"{lic['to']}): {lic['problems']} problem(s)")
        if lic.get("rebuild_unfinished"):
            rebuild = lic["rebuild_unfinished"]
            out.append(f"  problem: a rebuild of {', '.join(rebuild['resources'])} is unfinished "
                       f"(started {rebuild['since']}): those tables hold only part of their rows; "
                       "if no `syncer rebuild` runs, run it again (it continues where it stopped)")
        for ticket in lic["tickets_payments_off"]:
            out.append(f"  problem: ticket {ticket['order_id']} ({ticket['day']}, register "
                       f"{ticket['register_id']}): total {ticket['total']}, paid {ticket['paid']}, "
                       f"difference {ticket['difference']}")
        for ticket in lic["tickets_lines_off"]:
            out.append(f"  problem: ticket {ticket['order_id']} ({ticket['day']}, register "
                       f"{ticket['register_id']}): total {ticket['total']}, lines "
                       f"{ticket['lines_total']}, difference {ticket['difference']}")
        for name, gaps in lic["id_gaps"].items():
            for gap in gaps:
                ids = (f"id {gap['first']}" if gap["first"] == gap["last"]
                       else f"ids {gap['first']}-{gap['last']}")
                if gap["status"] == "not_asked":
                    out.append(f"  problem: {name} {ids} missing, not yet asked of the API")
            # The longest runs first: a run of voided ids is worth a look, a single one rarely.
            confirmed = sorted((g for g in gaps if g["status"] == "confirmed"),
                               key=lambda g: (-g["ids"], g["first"]))
            if confirmed:
                out.append(f"  {name}: {sum(g['ids'] for g in confirmed)} id(s) in "
                           f"{len(confirmed)} range(s) missing, confirmed by the API (voided): "
                           + ", ".join(str(g["first"]) if g["ids"] == 1
                                       else f"{g['first']}-{g['last']} ({g['ids']} ids)"
                                       for g in confirmed[:10])
                           + (" ..." if len(confirmed) > 10 else ""))
        for name, records in lic["quarantine"].items():
            for record in records:
                out.append(f"  problem: {name} record {record['record_key'] or '?'} in quarantine: "
                           f"{record['reason']}")
        for stale in lic["stale_lists"]:
            out.append(f"  problem: {stale['resource']} not refreshed within "
                       f"{stale['max_interval_minutes']:.0f} minutes of opening hours: {stale['why']}"
                       + (f" (last {stale['last_success_at']})" if stale["last_success_at"] else ""))
        for refused in lic.get("refused_lists", []):
            out.append(f"  problem: {refused['resource']}: the latest answer was refused, the rows "
                       f"kept: {refused['error']}" + (f" (at {refused['at']})" if refused["at"] else ""))
        for day in lic["open_days_without_tickets"]:
            out.append(f"  problem: {day} is an open day by the opening hours, without any ticket")
    return out
