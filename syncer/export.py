"""`syncer export`: the period's pack, one workbook an accountant can take as it is.

Its sheets, in order: a summary (the period, the license, the totals per VAT rate of
the tickets and of the documents with the boxes of the periodic VAT return they feed,
and the audit's result for the period in words), the daily receipts book, VAT per
rate, payments per method, register days (the Z view), the documents and the tickets.
Every figure is read from the report views (`syncer.reports`) and written by
`syncer.writers`; the pack adds sums of view rows, never figures of its own, so each
total equals the views to the cent.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Column, Date, Engine, Integer, MetaData, Numeric, String, Table, select

from syncer import audit, reports, writers
from syncer import tables as t
from syncer.config import Config
from syncer.labels import Labels

# The sheets that are not views: their columns, typed, for the writers.
sheets = MetaData()
ZERO = Decimal("0.00")


class ExportError(ValueError):
    """A pack that cannot be made as asked; the message says what to change."""


@dataclass(frozen=True)
class Period:
    """The business days of a pack, and the view that holds its VAT per period."""

    since: dt.date
    until: dt.date
    name: str  # 2026-11, 2026-Q4, 2026-10..2026-12
    grain: Literal["month", "quarter"]

    @property
    def described(self) -> str:
        return f"{self.name} (business days {self.since} to {self.until}, inclusive)"


def _month_end(year: int, month: int) -> dt.date:
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def parse_period(text: str) -> Period:
    """`2026-11` (a month) or `2026-Q4` (a quarter)."""
    if match := re.fullmatch(r"(\d{4})-(\d{2})", text):
        year, month = int(match[1]), int(match[2])
        if 1 <= month <= 12:
            return Period(dt.date(year, month, 1), _month_end(year, month), text, "month")
    if match := re.fullmatch(r"(\d{4})-[Qq]([1-4])", text):
        year, quarter = int(match[1]), int(match[2])
        return Period(dt.date(year, 3 * quarter - 2, 1), _month_end(year, 3 * quarter),
                      f"{year}-Q{quarter}", "quarter")
    raise ExportError(f"--period {text!r} is not a month (2026-11) or a quarter (2026-Q4)")


def period_between(since: dt.date, until: dt.date) -> Period:
    """Whole months `since`..`until`: VAT is returned per month or quarter, so a pack is too."""
    if since.day != 1:
        raise ExportError(f"--from {since} is not the first day of a month; a pack covers "
                          "whole months (or use --period)")
    if until != _month_end(until.year, until.month):
        raise ExportError(f"--to {until} is not the last day of a month; a pack covers "
                          "whole months (or use --period)")
    if until < since:
        raise ExportError(f"--from {since} is after --to {until}")
    name = (f"{since:%Y-%m}" if (since.year, since.month) == (until.year, until.month)
            else f"{since:%Y-%m}..{until:%Y-%m}")
    return Period(since, until, name, "month")


def license_of(engine: Engine, license: str | None) -> str:
    """The license asked for, or the database's only one."""
    with engine.connect() as conn:
        held = sorted(set(conn.execute(select(t.sync_state.c.license).distinct()).scalars()))
    if license is not None:
        if license not in held:
            raise ExportError(f"no data for license {license!r} in this database; it holds: "
                              f"{', '.join(held) or 'none yet'}")
        return license
    if len(held) != 1:
        raise ExportError("a pack is for one license: choose it with --license "
                          f"({', '.join(held) or 'the database holds none yet'})")
    return str(held[0])


# --- the sheets --------------------------------------------------------------------------

# Named for the reader: the summary is a page a person reads, not a view a script does.
TOTALS = Table(
    "totals", sheets, Column("source", String(20)), Column("rate %", Numeric(7, 4)),
    Column("base box", String(2)), Column("VAT box", String(2)), Column("items", Integer),
    Column("base", Numeric(15, 2)), Column("VAT", Numeric(15, 2)), Column("total", Numeric(15, 2)),
)
# The view's columns that the summary's columns are.
SUMMED = {"source": "source", "rate %": "tax_rate", "base box": "base_grid",
          "VAT box": "vat_grid", "items": "items", "base": "base", "VAT": "vat", "total": "total"}
TOTALS_REPORT = reports.Report(TOTALS, "totals per VAT rate of the period", ("source", "rate %"),
                               day_column=None)
DOCUMENT_SOURCES = ("invoices", "credit_notes")


def totals(vat_rows: Sequence[Mapping[str, Any]], tickets: int, documents: int,
           labels: Labels) -> list[dict[str, Any]]:
    """Per source and rate, the period's rows of the VAT view added up; then the tickets',
    the documents' and the turnover's totals (the last three rows), with the number of
    tickets and of documents that are turnover (a ticket with two rates is one)."""
    grouped: dict[tuple[str, Decimal], dict[str, Any]] = {}
    for row in vat_rows:
        key = (row["source"], row["tax_rate"])
        into = grouped.setdefault(key, {**{mine: row[theirs] for mine, theirs in SUMMED.items()},
                                        "items": 0, "base": ZERO, "VAT": ZERO, "total": ZERO})
        for mine in ("items", "base", "VAT", "total"):
            into[mine] += row[SUMMED[mine]]
    order = {"tickets": 0, "invoices": 1, "credit_notes": 2}
    out = sorted(grouped.values(), key=lambda r: (order.get(r["source"], 3), r["rate %"]))

    def summed(label: str, sources: Sequence[str], items: int) -> dict[str, Any]:
        rows = [r for r in out if r["source"] in sources]
        return {"source": labels("sources", label), "rate %": None, "base box": None,
                "VAT box": None, "items": items,
                **{name: sum((r[name] for r in rows), ZERO) for name in ("base", "VAT", "total")}}

    lines = [*out, summed("tickets_total", ("tickets",), tickets),
             summed("documents_total", DOCUMENT_SOURCES, documents),
             summed("turnover", ("tickets", *DOCUMENT_SOURCES), tickets + documents)]
    for row in out:
        row["source"] = labels.get("sources", row["source"], row["source"])
    return lines


def receipts_book(rows: Sequence[Mapping[str, Any]], labels: Labels
                  ) -> tuple[reports.Report, list[dict[str, Any]]]:
    """The daily receipts book, a line per business day: the turnover per VAT rate (base,
    VAT, total), the day's turnover, then the payments per method and their sum."""
    rates = sorted({r["tax_rate"] for r in rows if r["position"] == 1})
    methods = sorted({r["method"] for r in rows if r["position"] == 2})
    named = {rate: f"{labels.number(rate.normalize())} %" for rate in rates}
    parts = ("base", "vat", "total")
    columns = {(part, rate): labels("receipts", part, rate=named[rate])
               for rate in rates for part in parts}
    paid = {method: labels("receipts", "paid_method", method=method) for method in methods}
    turnover, paid_all = labels("receipts", "turnover"), labels("receipts", "paid")
    money = [*columns.values(), turnover, *paid.values(), paid_all]
    table = Table("receipts_book", MetaData(), Column("day", Date),
                  *(Column(name, Numeric(15, 2)) for name in money))
    report = reports.Report(table, labels.get("about", "receipts_book",
                                              reports.get("receipts_book").summary), ("day",))
    days: dict[dt.date, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(money, ZERO))
    for r in rows:
        day = days[r["day"]]
        day["day"] = r["day"]
        if r["position"] == 1:
            for part, name in zip(parts, ("base", "vat", "amount"), strict=True):
                day[columns[part, r["tax_rate"]]] += r[name]
            day[turnover] += r["amount"]
        else:
            day[paid[r["method"]]] += r["amount"]
            day[paid_all] += r["amount"]
    return report, [days[day] for day in sorted(days)]


@dataclass(frozen=True)
class Sheet:
    name: str
    extract: writers.Extract
    lines: Sequence[tuple[str, str]]
    emphasise: int = 0
    after: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class Pack:
    license: str
    period: Period
    problems: int
    labels: Labels
    sheets: tuple[Sheet, ...]


def audit_verdict(result: dict[str, Any], labels: Labels) -> tuple[str, str]:
    """The audit's result for the period in one sentence a person cannot miss."""
    problems = result["problems"]
    if not problems:
        return labels("summary", "audit"), labels("summary", "audit_clean")
    return labels("summary", "audit"), labels("summary", "audit_problems", count=problems)


def audit_problems(result: dict[str, Any], labels: Labels, tz: ZoneInfo, limit: int = 40
                   ) -> list[tuple[str, str]]:
    """The audit's problems, one line each (at most `limit`), as `syncer audit` words them."""
    found = [line.strip().removeprefix("problem: ") for line in audit.describe(result, tz)
             if line.strip().startswith("problem: ")]
    title = labels("summary", "audit_list")
    lines = [(title if n == 0 else "", line) for n, line in enumerate(found[:limit])]
    if len(found) > limit:
        lines.append(("", labels("summary", "audit_more", count=len(found) - limit)))
    return lines


def build(engine: Engine, config: Config, *, license: str, period: Period, now: dt.datetime,
          labels: Labels) -> Pack:
    """The pack's sheets, read from the views, in the words of `labels`."""
    tz = config.api.tz
    words = functools.partial(labels, "summary")

    def view(name: str) -> tuple[reports.Report, list[dict[str, Any]]]:
        report = reports.get(name)
        return report, reports.fetch(engine, report, since=period.since, until=period.until,
                                     license=license)

    synced = reports.header(engine, [], license=license, since=period.since, until=period.until,
                            now=now).orders_synced_at[license]
    block = [
        (words("licenses"), license),
        (words("period"), words("period_text", period=period.name, since=labels.date(period.since),
                                until=labels.date(period.until))),
        (words("made_at"), labels.moment(now, tz)),
        (words("fresh"), words("fresh_synced", license=license, moment=labels.moment(synced, tz))
                         if synced else words("fresh_never", license=license)),
    ]

    def sheet(key: str, report: reports.Report, rows: list[dict[str, Any]]) -> Sheet:
        name = labels("sheets", key)
        about = labels.get("about", report.name.removeprefix("report_"), report.summary)
        return Sheet(name, writers.Extract(report, rows, tz), [(name, about), *block])

    vat_report, vat_rows = view(f"vat_{period.grain}")
    tickets = view("tickets")
    documents = view("documents")
    turnover_documents = sum(1 for d in documents[1] if d["counted_as"] == "turnover")
    result = audit.run(engine, config, license=license, since=period.since, until=period.until,
                       now=now)
    summary_lines = [
        (words("pack"), words("pack_text", license=license, period=period.name)),
        *block[1:],
        audit_verdict(result, labels),
        (words("vat_return"), words("vat_return_text")),
        (words("not_in_pos"), words("not_in_pos_text")),
        (words("documents"), words("documents_text")),
    ]
    summary = totals(vat_rows, len(tickets[1]), turnover_documents, labels)
    sheets = [
        Sheet(labels("sheets", "summary"), writers.Extract(TOTALS_REPORT, summary, tz),
              summary_lines, emphasise=3, after=audit_problems(result, labels, tz)),
        sheet("receipts_book", *receipts_book(view("receipts_book")[1], labels)),
        sheet("vat", vat_report, vat_rows),
        sheet("payments", *view("payments")),
        sheet("register_days", *view("register_day")),
        sheet("documents", *documents),
        sheet("tickets", *tickets),
    ]
    return Pack(license, period, int(result["problems"]), labels, tuple(sheets))


def write(pack: Pack, out: BinaryIO) -> None:
    with writers.xlsx_book(out) as book:
        for sheet in pack.sheets:
            book.sheet(sheet.extract, sheet.name, sheet.lines, emphasise=sheet.emphasise,
                       after=sheet.after, headings=pack.labels.heading)
