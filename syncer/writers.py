"""Output writers: a report's rows written as a table, CSV or JSON, to a stream or a file.

`reports` says what a view holds (its columns, typed); this module says how each
format writes them. A format is a `Writer` in `WRITERS`, found by name (`get`) or by
a file's suffix (`for_path`); `write` sends one to standard output or, through a
temporary file renamed at the end, to a file (a failed write leaves no half file).
Every writer writes bytes: the format owns its encoding and line ends.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table as RichTable
from sqlalchemy import Column, Date, Integer, Numeric

from syncer.dialects.types import UtcDateTime
from syncer.reports import Report

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
    return Console(file=text, width=None if out.isatty() else PLAIN_WIDTH), text


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


def write_csv(extract: Extract, out: BinaryIO) -> None:
    """RFC 4180 quoting, `.` decimals, ISO dates and times with their offset, one header
    line; lines end in LF, as scripts and Unix tools expect."""
    kinds = [kind_of(c) for c in extract.columns]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([c.name for c in extract.columns])
    for row in extract.rows:
        writer.writerow([text_of(row[c.name], kind, extract.tz)
                         for c, kind in zip(extract.columns, kinds, strict=True)])
    out.write(text.getvalue().encode("utf-8"))


def write_json(extract: Extract, out: BinaryIO) -> None:
    """A JSON list of objects; Decimals as strings, dates and times ISO, integers as numbers."""
    kinds = {c.name: kind_of(c) for c in extract.columns}

    def value(name: str, v: Any) -> Any:
        if v is None or isinstance(v, int | str):
            return v
        return text_of(v, kinds[name], extract.tz)

    rows = [{k: value(k, v) for k, v in row.items()} for row in extract.rows]
    out.write(json.dumps(rows, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")


@dataclass(frozen=True)
class Writer:
    """One output format: its name, the suffix of its files, how it writes."""

    name: str
    suffix: str
    write: Callable[[Extract, BinaryIO], None]
    summary: str


WRITERS: dict[str, Writer] = {w.name: w for w in (
    Writer("table", ".txt", write_table, "a table for people"),
    Writer("csv", ".csv", write_csv, "CSV for scripts"),
    Writer("json", ".json", write_json, "JSON for scripts"),
)}


def get(name: str) -> Writer:
    """The writer of format `name`; KeyError if none."""
    return WRITERS[name]


def for_path(path: Path) -> Writer | None:
    """The writer whose files end like `path` (`.csv`, `.json`), if one does."""
    return next((w for w in WRITERS.values() if path.suffix.lower() == w.suffix), None)


def write(writer: Writer, extract: Extract, path: Path | None = None) -> None:
    """Write `extract` to `path`, or to standard output without one.

    A file is written beside itself and renamed when complete, so a reader never sees
    half a report and a failed write leaves the old file (or none)."""
    if path is None:
        sys.stdout.flush()
        writer.write(extract, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as out:
            writer.write(extract, out)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
