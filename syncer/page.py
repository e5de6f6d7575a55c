"""The status page at `/`: the read model (syncer.status) as one HTML page for people.

Server-rendered, no JavaScript (a meta refresh reloads it), readable on a phone. It
only reads: no form, no button, no link that changes anything. Every time on it says
its zone (`api.timezone`).
"""

from __future__ import annotations

import datetime as dt
import functools
from html import escape
from zoneinfo import ZoneInfo

from syncer.status import (
    HOURS_SHOWN,
    JobView,
    LicenseView,
    Status,
    StopSign,
    audit_words,
    catching_up_words,
    plan_shape,
    when,
)

CATALOG_JOB = "products"  # the catalog's freshness: when the products last came
STALE_AFTER = dt.timedelta(minutes=30)  # orders older than this while open: flagged

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:12px;
background:#f5f6f8;color:#1d2430;font-size:16px;line-height:1.4}
main{max-width:1100px;margin:0 auto}
h1{font-size:1.3em;margin:0 0 4px}
h2{font-size:1.15em;margin:0 0 6px}
.meta{color:#5b6472;font-size:.9em;margin-bottom:12px}
section.license{background:#fff;border-radius:8px;padding:12px;margin:0 0 14px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
.sign{border-left:4px solid;padding:6px 10px;margin:6px 0;border-radius:4px}
.sign.error{border-color:#c62828;background:#fdecea}
.sign.warning{border-color:#ef8f00;background:#fff4e0}
.sign.info{border-color:#1e6fd9;background:#e8f0fc}
.sign b{display:block}
.bar{display:flex;height:18px;border-radius:4px;overflow:hidden;background:#e3e6ea;margin:6px 0 2px}
.bar span{display:block;height:100%}
.spent{background:#3b6fd4}.planned{background:#8fb0ec}.free{background:#d9e6d3}.reserve{background:#b9bec6}
.legend{font-size:.85em;color:#3c4450}
.legend i{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px;border-radius:2px}
.grid{display:flex;flex-wrap:wrap;gap:10px 24px;margin:8px 0}
.fresh.stale{color:#c62828;font-weight:600}
.fresh.catching-up{color:#8a5a00;font-weight:600;flex-basis:100%}
.bar.history{height:8px;max-width:420px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #e3e6ea;vertical-align:top}
td.n{text-align:right}
td.e{color:#b3261e;max-width:28em}
svg{display:block;max-width:100%}
svg rect{fill:#3b6fd4}svg text{font-size:10px;fill:#5b6472}
@media (max-width:640px){
table.jobs thead{display:none}
table.jobs tr{display:block;border-bottom:1px solid #d5d9df;padding:4px 0}
table.jobs td{display:inline-block;border:0;padding:1px 8px 1px 0}
table.jobs td:first-child{display:block;font-weight:600}
table.jobs td:not(:empty)::before{color:#5b6472}
table.jobs td:nth-child(2):not(:empty)::before{content:"last run: "}
table.jobs td:nth-child(3):not(:empty)::before{content:"last success: "}
table.jobs td:nth-child(4):not(:empty)::before{content:"next run: "}
table.jobs td:nth-child(5):not(:empty)::before{content:"planned: "}
table.jobs td:nth-child(6):not(:empty)::before{content:"rows: "}
td.e{display:block!important}
}
"""


def render(status: Status, *, refresh_seconds: int = 30) -> str:
    tz = status.tz
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f'<meta http-equiv=refresh content="{int(refresh_seconds)}">',
        "<title>cloudpos-syncer status</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>cloudpos-syncer</h1>",
        f"<div class=meta id=updated>Updated {status.now.astimezone(tz):%Y-%m-%d %H:%M:%S %Z} "
        f"(times in {escape(str(tz))}); refreshes every {int(refresh_seconds)} s. "
        f"{len(status.licenses)} license(s).</div>",
    ]
    parts += [_sign(sign) for sign in status.stop_signs]
    if not status.licenses:
        parts.append('<p class="sign info"><b>No license yet.</b>Add a [[licenses]] entry to the '
                     "config and run <code>syncer backfill</code> or <code>syncer run</code>.</p>")
    hours = _hours(status.hours_from, tz)
    parts += [_license(lic, status, hours) for lic in status.licenses]
    parts.append("</main></body></html>")
    return "".join(parts)


def _sign(sign: StopSign) -> str:
    return (f'<div class="sign {escape(sign.severity)}" data-kind="{escape(sign.kind)}">'
            f"<b>{escape(sign.says)}</b>What to do: {escape(sign.todo)}</div>")


def _license(lic: LicenseView, status: Status, hours: list[str]) -> str:
    tz = status.tz
    title = escape(lic.name) + ("" if lic.configured else " <small>(not in the config)</small>")
    state = ("stopped" if any(s.severity == "error" for s in lic.stop_signs)
             else "degraded" if any(s.severity == "warning" for s in lic.stop_signs) else "ok")
    return "".join([
        f'<section class=license id="license-{escape(lic.name)}" data-state="{state}">',
        f"<h2>{title}</h2>",
        *(_sign(sign) for sign in lic.stop_signs),
        _budget(lic),
        '<div class=grid>',
        _freshness("Orders", lic.job("orders"), lic, status.now, tz),
        *(_catching_up(job.job.capitalize(), job, status.now, tz) for job in lic.catching_up
          if job.job != "orders"),
        _freshness("Catalog (products)", lic.job(CATALOG_JOB), lic, status.now, tz),
        f"<div>Shop {'open' if lic.shop_open else 'closed'} now</div>",
        ("" if not lic.plan_ahead else
         "<div class=plan-ahead>Plan by hour: "
         f"{escape(plan_shape(lic.plan_ahead, tz))}</div>"),
        f"<div>Quarantine: <b>{lic.quarantined}</b> record(s)</div>",
        f'<div class=audit data-problems="{"" if lic.audit_problems is None else lic.audit_problems}">'
        f"{escape(audit_words(lic, tz))}</div>",
        "</div>",
        _chart(lic, hours, tz),
        _jobs(lic, status.now, tz),
        "</section>",
    ])


# The budget bar's segments, in order, with the legend's word for each.
SEGMENTS = (("spent", "spent"), ("planned", "planned"), ("free", "not planned"),
            ("reserve", "reserve"))


def budget_segments(lic: LicenseView) -> dict[str, int]:
    """The day's requests as the bar shows them, each counted once: spent (the reserve
    spent by `syncer call` included), planned for the rest of the day (no more than is
    left), left but not planned, and the reserve not spent. They add up to the
    daily_budget (to what was spent, if a lowered budget was already passed)."""
    reserve_spent = max(lic.spent - (lic.daily_budget - lic.reserve), 0)
    planned = min(lic.planned, lic.left)
    return {"spent": lic.spent, "planned": planned, "free": lic.left - planned,
            "reserve": max(lic.reserve - reserve_spent, 0)}


def _budget(lic: LicenseView) -> str:
    parts = budget_segments(lic)
    total = sum(parts.values())
    bar = "".join(f'<span class={name} style="width:{100 * value / max(total, 1):.2f}%" '
                  f'title="{word} {value}"></span>'
                  for name, word in SEGMENTS if (value := parts[name]) > 0)
    legend = "".join(f"<i class={name}></i>{word} <b class=v-{name}>{parts[name]}</b>"
                     for name, word in SEGMENTS)
    of = (f" of <b class=v-budget>{lic.daily_budget}</b> today" if total == lic.daily_budget else
          f" = <b class=v-budget>{total}</b> today (more than the daily_budget of "
          f"{lic.daily_budget})")
    return (f'<div class=budget aria-label="requests today"><div class=bar>{bar}</div>'
            f"<div class=legend>{legend}{of}</div></div>")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _catching_up(label: str, job: JobView, now: dt.datetime, tz: ZoneInfo) -> str:
    """A history still loading: its words, and a bar of its days as the backfill's."""
    up = job.catching_up
    assert up is not None
    bar = ""
    if up.days_done is not None and up.days_total:
        bar = (f'<div class="bar history"><span class=spent style="width:'
               f'{100 * up.days_done / up.days_total:.2f}%"></span></div>')
    return (f'<div class="fresh catching-up" data-job="{escape(job.job)}">'
            f"{escape(catching_up_words(label, job, now, tz))}{bar}</div>")


def _freshness(label: str, job: JobView | None, lic: LicenseView, now: dt.datetime,
               tz: ZoneInfo) -> str:
    if job is not None and job.catching_up is not None:
        return _catching_up(label, job, now, tz)
    if job is None or job.last_success_at is None or job.lag_seconds is None:
        return f"<div class=fresh>{escape(label)}: never synced</div>"
    stale = lic.shop_open and job.job == "orders" and job.lag_seconds > STALE_AFTER.total_seconds()
    return (f'<div class="fresh{" stale" if stale else ""}">{escape(label)}: as of '
            f"{escape(when(job.last_success_at, tz))} ({_ago(job.lag_seconds)})</div>")


def _hours(start: dt.datetime, tz: ZoneInfo) -> list[str]:
    """The chart's hours, local with their zone: the same for every license."""
    return [f"{(start + dt.timedelta(hours=h)).astimezone(tz):%H:00 %Z}" for h in range(HOURS_SHOWN)]


_BAR, _HEIGHT, _GAP = 12, 60, 2


def _chart(lic: LicenseView, hours: list[str], tz: ZoneInfo) -> str:
    top = max(max(lic.hourly, default=0), 1)
    step = _BAR + _GAP
    bars = "".join(
        f'<rect x="{index * step}" y="{_HEIGHT - round(_HEIGHT * count / top)}" width="{_BAR}" '
        f'height="{round(_HEIGHT * count / top)}"><title>{hours[index]}: {count} request(s)</title></rect>'
        for index, count in enumerate(lic.hourly))
    labels = "".join(
        f'<text x="{index * step + shift}" y="{_HEIGHT + 13}" text-anchor="{anchor}">{hours[index]}</text>'
        for index, anchor, shift in ((0, "start", 0), (HOURS_SHOWN // 2, "middle", _BAR // 2),
                                     (HOURS_SHOWN - 1, "end", _BAR)))
    full = HOURS_SHOWN * step
    return (f"<div><div class=legend>Requests per hour, last {HOURS_SHOWN} h ({escape(tz.key)}); "
            f"highest {top}</div>"
            f'<svg class=hourly viewBox="0 0 {full} {_HEIGHT + 16}" width="{full}" height="{_HEIGHT + 16}" '
            f'role=img aria-label="requests per hour">{bars}{labels}</svg></div>')


@functools.lru_cache(maxsize=16384)  # a job's times stay the same from one reload to the next
def short_when(moment: dt.datetime | None, today: dt.date, tz: ZoneInfo) -> str:
    """A time with its zone, the date left out when it is `today` (local)."""
    if moment is None:
        return ""
    local = moment.astimezone(tz)
    clock = f"{local.hour:02d}:{local.minute:02d} {local.tzname()}"
    return clock if local.date() == today else f"{local.date().isoformat()} {clock}"


def _jobs(lic: LicenseView, now: dt.datetime, tz: ZoneInfo) -> str:
    """The jobs, one row each (end tags left out, as HTML allows: 200 licenses make
    3,200 rows)."""
    today = now.astimezone(tz).date()
    rows = []
    for job in lic.jobs:
        note = (f"disabled: {job.disabled}" if job.disabled else job.last_error or "")
        since = f" (since {when(job.last_error_at, tz)})" if job.last_error and job.last_error_at else ""
        rows.append(
            f'{_job_cell(job.job)}'
            f"<td>{short_when(job.last_attempt_at, today, tz)}"
            f"<td>{short_when(job.last_success_at, today, tz)}"
            f"<td>{short_when(job.next_run_at, today, tz)}"
            f"<td class=n>{job.planned_requests}"
            f"<td class=n>{'' if job.table_rows is None else job.table_rows}"
            f"<td class=e>{escape(note + since) if note else ''}")
    return ("<div class=scroll><table class=jobs><thead><tr><th>job<th>last run"
            "<th>last success<th>next run<th>planned today<th>rows"
            f"<th>last error</thead><tbody>{''.join(rows)}</tbody></table></div>")


@functools.cache
def _job_cell(job: str) -> str:
    return f'<tr data-job="{escape(job)}"><td>{escape(job)}'
