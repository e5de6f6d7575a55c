"""Terminal views: what the commands show a person (progress bars, summaries, status,
the demo's tables). The commands in `syncer.cli` gather the figures and call these;
a report's rows are written by `syncer.writers`."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Column
from rich.table import Table as RichTable
from rich.text import Text
from sqlalchemy import Engine, func, select

from syncer import reports, writers
from syncer.backfill import Reporter, Summary
from syncer.config import Setting
from syncer.jobs import HISTORY_DAY
from syncer.load import Counts
from syncer.outcomes import EXIT_BUDGET, Scope
from syncer.redact import redact
from syncer.status import Status, audit_words, catching_up_words, plan_shape, when
from syncer.sync import PullResult

if TYPE_CHECKING:
    from syncer.daemon import RunResult


def _width(stream: Any) -> int | None:
    """A terminal's own width; elsewhere (cron mail, a log file, a pipe) 200 columns, so
    that tables keep whole words where rich would assume 80."""
    return None if stream.isatty() else writers.PLAIN_WIDTH


# markup=False: names, messages and records come from the API and the config, and a
# product called `Koffie [/]` is text, not a closing tag. Colours go in as rich `Text`
# styles (`Text.assemble(("error:", "red"), ...)`), never as markup in a string.
console = Console(stderr=False, width=_width(sys.stdout), markup=False)
errors = Console(stderr=True, width=_width(sys.stderr), markup=False)


# --- backfill ----------------------------------------------------------------------------



class EtaColumn(ProgressColumn):
    """`ETA 0:01:05` while a bar with a total runs; nothing for a bar that only pulses."""

    def render(self, task: Task) -> Text:
        if task.total is None or task.finished:
            return Text("")
        remaining = task.time_remaining
        left = "…" if remaining is None else str(dt.timedelta(seconds=round(remaining)))
        return Text(f"ETA {left}", style="progress.remaining")


def backfill_progress(enabled: bool) -> Progress:
    """The backfill's bars: transient (they go when the backfill ends, and the summary
    table says it all); on a narrow terminal the status text is cut (an ellipsis),
    never the bar or the ETA."""
    return Progress(SpinnerColumn(),
                    TextColumn("{task.description}", markup=False, table_column=Column(no_wrap=True)),
                    BarColumn(bar_width=max(10, min(30, console.width // 8))),
                    TaskProgressColumn(),
                    EtaColumn(table_column=Column(no_wrap=True)),
                    TextColumn("{task.fields[status]}", markup=False, table_column=Column(
                        no_wrap=True, overflow="ellipsis", ratio=1)),
                    console=console, disable=not enabled, transient=True, expand=True)


def counted(n: int, noun: str) -> str:
    """`1 request`, `2 requests`: a count with its noun in the right number."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _counted(c: Counts) -> str:
    return f"{c.inserted:,} inserted, {c.updated:,} updated"


class RichReporter(Reporter):
    """A progress bar per resource on a terminal. A history's bar counts days: from the
    first stored day to today, done up to the last stored day, with a percentage, the
    records per second and an ETA; the other bars say their counts in words."""

    def __init__(self, progress: Progress, engine: Engine, today: dt.date) -> None:
        self.progress = progress
        self.engine = engine
        self.today = today
        self.tasks: dict[tuple[str, str], Any] = {}
        self.began: dict[tuple[str, str], tuple[float, int]] = {}  # monotonic, records

    def _days(self, summary: Summary) -> tuple[dt.date, dt.date] | None:
        """The first and last stored day of this history, if it has one and rows."""
        column = HISTORY_DAY.get(summary.resource)
        if column is None:
            return None
        with self.engine.connect() as conn:
            first, last = conn.execute(select(func.min(column), func.max(column)).where(
                column.table.c.license == summary.license)).one()
        return (first, last) if first is not None and last is not None else None

    def _history(self, summary: Summary) -> dict[str, Any]:
        days = self._days(summary)
        if days is None:
            return {}
        first, last = days
        total = max((self.today - first).days, 1)
        done = min(max((last - first).days, 0), total)
        return {"total": total, "completed": done,
                "reached": f"{last:%Y-%m-%d}, day {done:,} of {total:,}"}

    def started(self, summary: Summary) -> None:
        key = (summary.license, summary.resource)
        history = self._history(summary)
        self.began[key] = (time.monotonic(), 0)
        self.tasks[key] = self.progress.add_task(
            f"{summary.license}/{summary.resource}", total=history.get("total"),
            completed=history.get("completed", 0), status=history.get("reached", ""))

    def advanced(self, summary: Summary, result: PullResult) -> None:
        key = (summary.license, summary.resource)
        since, records = self.began[key]
        records += result.records
        self.began[key] = (since, records)
        rate = records / max(time.monotonic() - since, 1e-3)
        status = f"{_counted(summary.counts)}, {rate:,.0f}/s"
        history = self._history(summary)
        if history:
            status = f"{history['reached']}: {status}"
        self.progress.update(self.tasks[key], total=history.get("total"),
                             completed=history.get("completed", 0), status=status)

    def finished(self, summary: Summary) -> None:
        task = self.tasks.get((summary.license, summary.resource))
        if task is not None:
            self.progress.update(task, total=1, completed=1,
                                 status=f"{summary.status}: {_counted(summary.counts)}")


def _shown_status(summaries: Sequence[Summary]) -> list[tuple[Summary, str, bool]]:
    """Each summary with the status a person reads, and whether its note is news: a stop
    is said once, at the resource where it happened; the resources after it, which the
    backfill never began, are "not started"."""
    seen: set[tuple[str, str]] = set()
    out = []
    for s in summaries:
        key = (s.license, s.note)
        repeat = bool(s.note) and s.status == "stopped" and key in seen
        seen.add(key)
        out.append((s, "not started" if repeat else s.status, bool(s.note) and s.status != "done"
                    and not repeat))
    return out


# The columns of a results table that hold words; the rest are counts, right-aligned.
WORD_COLUMNS = frozenset({"license", "resource", "job", "cursor", "status"})


def fitted(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
           width: int | None = None) -> list[RenderableType]:
    """A results table that fits `width` (the terminal's) with nothing a person needs cut:
    whole when it fits; else without the counts that are 0 in every row, with a note that
    says which; else stacked, one line per row with each figure named."""
    width = width or console.width

    def table_of(shown: Sequence[int]) -> RichTable:
        table = RichTable(title=title)
        for i in shown:
            table.add_column(columns[i], no_wrap=True,
                             justify="left" if columns[i] in WORD_COLUMNS else "right")
        for row in rows:
            table.add_row(*(row[i] for i in shown))
        return table

    def fits(table: RichTable) -> bool:  # its natural width (a measure clamps to the given)
        natural = console.options.update_width(10_000)
        return Measurement.get(console, natural, table).maximum <= width

    every = list(range(len(columns)))
    table = table_of(every)
    if fits(table):
        return [table]
    zeros = [i for i in every if columns[i] not in WORD_COLUMNS
             and all(row[i] in ("0", "") for row in rows)]
    if zeros:
        table = table_of([i for i in every if i not in zeros])
        if fits(table):
            return [table, Text(f"(not shown, 0 in every row: "
                                f"{', '.join(columns[i] for i in zeros)})")]
    # Stacked: who and how it ended first, then every figure by its name.
    names = [i for i in every if columns[i] in ("license", "resource", "job")]
    status = columns.index("status") if "status" in columns else None
    lines: list[RenderableType] = [Text(f"{title} (counts that are 0 not shown)", style="italic")]
    for row in rows:
        figures = [f"{columns[i]} {row[i]}" for i in every
                   if i not in names and i != status and row[i] not in ("", "0")]
        lines.append(Text("/".join(row[i] for i in names)
                          + (f": {row[status]}" if status is not None else "")))
        lines.extend(Text(f"  {part}") for part in _wrapped(figures, width - 2))
    return lines


def _wrapped(items: Sequence[str], width: int) -> list[str]:
    """`items` joined with commas into lines of at most `width`, never split inside one."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += f", {item}"
        else:
            lines.append(item)
    return lines


def summary_table(summaries: Sequence[Summary], width: int | None = None) -> list[RenderableType]:
    """The backfill's summary, fitted to the terminal (see `fitted`)."""
    columns = ("license", "resource", "requests", "inserted", "updated", "unchanged", "deleted",
               "quarantined", "status")
    rows = [(s.license, s.resource, str(s.requests), str(s.counts.inserted), str(s.counts.updated),
             str(s.counts.unchanged), str(s.counts.deleted), str(s.counts.quarantined), shown)
            for s, shown, _news in _shown_status(summaries)]
    return fitted("Backfill summary", columns, rows, width)


def print_summary(summaries: Sequence[Summary], started: float, code: int) -> None:
    """The summary table, the request count, and below it, in full and once each, why work
    stopped, failed or was skipped (a table cell would cut a sentence short)."""
    for part in summary_table(summaries):
        console.print(part, highlight=False)
    console.print(f"{counted(sum(s.requests for s in summaries), 'request')} in "
                  f"{time.monotonic() - started:.1f} s", highlight=False)
    shown = _shown_status(summaries)
    for s, status, news in shown:
        if not news:
            continue
        after = sum(1 for o, other, _ in shown
                    if other == "not started" and (o.license, o.note) == (s.license, s.note))
        rest = f" (and the {after} resource(s) after it: not started)" if after else ""
        note = s.note.removeprefix(f"license {s.license!r}: ")  # the line has named it
        errors.print(f"{s.license}/{s.resource} {status}{rest}: {redact(note)}", highlight=False)
    if code == EXIT_BUDGET:
        errors.print("work is left: run again to continue (it starts at the cursors; nothing "
                     "stored is fetched again)", highlight=False)


# --- run --once --------------------------------------------------------------------------


def print_run_once(results: Sequence[RunResult], refused: Mapping[str, str]) -> None:
    """`syncer run --once` for a person: one line per license that stopped (why, once, and
    how many jobs it kept from running), then a table of the jobs that did run, and below
    it each other failure in full. `refused`: licenses whose credentials were refused
    before, with the words for it (said when no job of theirs did)."""
    stops: dict[str, str] = {}
    idle: dict[str, int] = {}
    for r in results:
        if r.error and r.scope is Scope.LICENSE:
            # The first stop is the cause: the jobs after it only repeat it.
            stops.setdefault(r.license, r.error.removeprefix(f"license {r.license!r}: "))
            idle[r.license] = idle.get(r.license, 0) + (r.requests == 0)
    for name, note in stops.items():
        kept = f"; {counted(idle[name], 'job')} not run" if idle[name] else ""
        errors.print(f"license {name}: stopped: {redact(note)}{kept}", markup=False,
                     highlight=False)
    for name, words in refused.items():
        if name not in stops:
            errors.print(f"license {name}: {words}", markup=False, highlight=False)
    ran = [r for r in results if not (r.error and r.scope is Scope.LICENSE and r.requests == 0)]
    if ran:
        columns = ("license", "job", "requests", "inserted", "updated", "deleted", "quarantined",
                   "cursor", "status")
        rows = [(r.license, r.job, str(r.requests), str(r.counts.inserted), str(r.counts.updated),
                 str(r.counts.deleted), str(r.counts.quarantined),
                 "" if r.cursor is None else str(r.cursor), "ok" if r.error is None else r.outcome)
                for r in ran]
        for part in fitted("Jobs run", columns, rows):
            console.print(part, highlight=False)
    elif not stops:
        console.print("no job was due", highlight=False)
    console.print(f"{counted(sum(r.requests for r in results), 'request')}, "
                  f"{counted(sum(r.written for r in results), 'row')} written", highlight=False)
    for r in ran:
        if r.error and r.scope is not Scope.LICENSE:
            errors.print(f"{r.license}/{r.job} {r.outcome}: {redact(r.error)}", markup=False,
                         highlight=False)


# --- status ------------------------------------------------------------------------------


def print_status(status: Status) -> None:
    """`syncer status` for a person: per license its budget and stop signs, per job a row."""
    tz = status.tz
    console.print(f"status at {when(status.now, tz)}", highlight=False)
    for sign in status.stop_signs:
        console.print(Text(f"{sign.says} {sign.todo}", style="yellow"), highlight=False)
    if not status.licenses:
        console.print(Text(
            "no license in the config, and none in this database yet: add a [[licenses]] entry "
            "(or set CLOUDPOS_LICNAME and CLOUDPOS_TOKEN), then run `syncer backfill` or "
            "`syncer run`", style="yellow"), highlight=False)
    for lic in status.licenses:
        console.print(Text.assemble((f"license {lic.name}", "bold"),
                                    "" if lic.configured else " (not in the config)",
                                    f": {lic.spent} requests used today, {lic.left} left "
                                    f"(budget {lic.daily_budget}, reserve {lic.reserve}; "
                                    f"{lic.planned} planned for the rest of the day); "
                                    f"{lic.quarantined} record(s) in quarantine"),
                      highlight=False)
        if lic.plan_ahead:
            console.print("  plan by hour: " + plan_shape(lic.plan_ahead, tz),
                          highlight=False)
        for sign in lic.stop_signs:
            colour = "red" if sign.severity == "error" else "yellow"
            console.print(Text(f"  {sign.says} {sign.todo}", style=colour), highlight=False)
        for job in lic.catching_up:
            console.print(Text(f"  {catching_up_words(job.job, job, status.now, tz)}",
                               style="yellow"), highlight=False)
        console.print(f"  {audit_words(lic, tz)}", highlight=False)
        if lic.stop_lifted:
            console.print(f"  last stop lifted on purpose: {lic.stop_lifted}", highlight=False)
        table = RichTable()
        for name in ("job", "rows", "cursor", "last success", "next run", "planned today", "last error"):
            table.add_column(name)
        for job in lic.jobs:
            table.add_row(job.job, "" if job.table_rows is None else str(job.table_rows),
                          "" if job.cursor is None else str(job.cursor),
                          when(job.last_success_at, tz), when(job.next_run_at, tz),
                          str(job.planned_requests),
                          (job.disabled and f"disabled: {job.disabled}") or (job.last_error or ""))
        console.print(table)


# --- config ----------------------------------------------------------------------------------


def print_config(file: Path | None, settings: Sequence[Setting]) -> None:
    """`syncer config`: which file was read, then every setting in effect with where it
    came from; secrets are masked before they get here (`config.explain`)."""
    console.print(f"config file: {file}" if file is not None else
                  "config file: none (no --config, no $SYNCER_CONFIG, no ./syncer.toml): "
                  "defaults and the environment", highlight=False, markup=False)
    table = RichTable()
    for name in ("key", "value", "from"):
        table.add_column(name, overflow="fold")
    for setting in settings:
        table.add_row(Text(setting.key), Text(setting.value), Text(setting.origin))
    console.print(table)


# --- reports and the demo ------------------------------------------------------------------


def report_list() -> RichTable:
    """`syncer report` without a name: every report and what it holds."""
    table = RichTable(title="Reports (syncer report NAME; the report_ prefix may be left out)")
    table.add_column("name")
    table.add_column("what")
    for listed in reports.REPORTS:
        table.add_row(listed.name, listed.summary)
    return table


def sales_per_day(engine: Engine, license: str, days: int = 7) -> RichTable:
    """Tickets and revenue per business day, the last `days` days: report_daily_sales added
    up over the registers (the demo's table; the same tickets as every view)."""
    totals: dict[dt.date, tuple[int, Decimal]] = {}
    for row in reports.fetch(engine, reports.get("report_daily_sales"), license=license):
        count, revenue = totals.get(row["day"], (0, Decimal("0.00")))
        totals[row["day"]] = (count + row["orders"], revenue + row["revenue_incl_vat"])
    table = RichTable(title="Sales per day (business days, from report_daily_sales, incl. VAT)")
    table.add_column("day")
    table.add_column("tickets", justify="right")
    table.add_column("revenue", justify="right")
    for day in sorted(totals)[-days:]:
        count, revenue = totals[day]
        table.add_row(day.isoformat(), str(count), f"{revenue:.2f}")
    return table


def last_days_of(engine: Engine, report: reports.Report, tz: ZoneInfo, days: int = 3) -> RichTable:
    """A report's rows of its last `days` days."""
    rows = reports.fetch(engine, report)
    shown = sorted({row["day"] for row in rows})[-days:]
    return writers.table_of(writers.Extract(report, [row for row in rows if row["day"] in shown], tz,
                                            title=f"{report.name} (last {len(shown)} days)"))


# --- rebuild and doctor --------------------------------------------------------------------


def rebuild_table(license: str, counts: Mapping[str, Counts], resumed: bool) -> RichTable:
    """What a rebuild wrote, per resource."""
    table = RichTable(title=f"Rebuild of {license}" + (" (resumed)" if resumed else ""))
    for name in ("resource", "inserted", "updated", "unchanged", "deleted", "quarantined"):
        table.add_column(name, justify="left" if name == "resource" else "right")
    for name, c in sorted(counts.items()):
        table.add_row(name, str(c.inserted), str(c.updated), str(c.unchanged), str(c.deleted),
                      str(c.quarantined))
    return table


# The value formats `syncer doctor` points out: what the parser had to read generously.
ODD_FORMATS = frozenset({"number as string", "decimal comma", "zero date", "empty string",
                         "local time YYYY-MM-DD HH:MM[:SS]", "date YYYY-MM-DD"})


def doctor_table(found: Mapping[str, Any]) -> RichTable:
    """One license's part of the doctor's report: per function, what its answers look like."""
    table = RichTable(title=f"doctor: license {found['license']}")
    for name in ("function", "envelope", "records", "rows", "quarantined", "unknown fields",
                 "missing fields", "values"):
        table.add_column(name)
    for function, entry in found["functions"].items():
        fields, parsed = entry.get("fields", {}), entry.get("parsed", {})
        formats: Iterable[Mapping[str, Any]] = entry.get("formats", {}).values()
        odd = sorted({kind for counts in formats for kind in counts} & ODD_FORMATS)
        table.add_row(function, entry.get("envelope") or entry.get("note", ""),
                      str(entry.get("records", "")), str(parsed.get("rows", "")),
                      str(parsed.get("quarantined", "")),
                      ", ".join(fields.get("unknown", [])),
                      ", ".join(fields.get("missing", [])),
                      Text.assemble(", ".join(odd), (f" {entry['error']}" if "error" in entry
                                                     else "", "red")))
    return table
