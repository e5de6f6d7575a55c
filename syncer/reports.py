"""The reporting views (created by migration 0002): what they hold, and reading them.

The views live in the database so any SQL or BI tool can read them; this module
only describes their columns (so values come back typed: Decimal, date, aware
datetime, on SQLite as on Postgres) and renders rows for `syncer report`.
The view descriptions live in their own MetaData: they are not tables, and
alembic's autogenerate must not try to create them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from rich.table import Table as RichTable
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Engine,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    select,
)

from syncer.tables import UtcDateTime

views = MetaData()


def _money(name: str) -> Column[Decimal]:
    return Column(name, Numeric(15, 2))


def _quantity(name: str) -> Column[Decimal]:
    return Column(name, Numeric(15, 4))


def _license() -> Column[str]:
    return Column("license", String(100))


def _day() -> Column[dt.date]:
    return Column("day", Date)


@dataclass(frozen=True)
class Report:
    """One view: its columns, the column `--from/--to` filter on, its natural order."""

    view: Table
    summary: str
    order_by: tuple[str, ...]
    day_column: str | None = "day"

    @property
    def name(self) -> str:
        return self.view.name


REPORTS: tuple[Report, ...] = (
    Report(
        Table("report_daily_sales", views, _license(), _day(), Column("register_id", BigInteger),
              Column("orders", Integer), _quantity("items_sold"), _money("revenue_incl_vat"),
              _money("vat"), _money("revenue_excl_vat")),
        "orders, items sold and revenue per local day and register",
        ("license", "day", "register_id"),
    ),
    Report(
        Table("report_vat", views, _license(), _day(), Column("tax_rate", Numeric(7, 4)),
              _money("base"), _money("vat"), _money("total")),
        "VAT base, VAT and total per day and rate (check against the Z report)",
        ("license", "day", "tax_rate"),
    ),
    Report(
        Table("report_payments", views, _license(), _day(), Column("method", String(20)),
              Column("payments", Integer), _money("amount")),
        "payments and amount per day and payment method",
        ("license", "day", "method"),
    ),
    Report(
        Table("report_product_sales", views, _license(), _day(), Column("product_id", BigInteger),
              Column("product_name", Text), Column("category_id", BigInteger),
              Column("category_name", Text), _quantity("quantity"), _money("product_revenue"),
              _money("supplement_revenue"), _money("revenue")),
        "quantity and revenue per day and product, supplements apart",
        ("license", "day", "product_id"),
    ),
    Report(
        Table("report_hourly", views, _license(), Column("weekday", SmallInteger),
              Column("hour", SmallInteger), Column("days_open", Integer), Column("orders", Integer),
              _money("revenue")),
        "orders and revenue per weekday (1 = Monday) and hour, over all history",
        ("license", "weekday", "hour"),
        day_column=None,
    ),
    Report(
        Table("report_labor", views, _license(), _day(), Column("user_id", BigInteger),
              Column("username", Text), Column("clock_in", UtcDateTime()),
              Column("clock_out", UtcDateTime()), Column("hours_worked", Numeric(7, 2))),
        "clock-in/clock-out pairs and hours worked per user and day",
        ("license", "day", "user_id", "clock_in", "clock_out"),
    ),
    Report(
        Table("report_liabilities", views, _license(), Column("kind", String(20)),
              Column("customer_id", BigInteger), Column("customer_name", Text),
              Column("items", Integer), _money("amount")),
        "outstanding gift vouchers and customer credit balances, as of today",
        ("license", "kind", "customer_id"),
        day_column=None,
    ),
)

NAMES = tuple(r.name for r in REPORTS)


def get(name: str) -> Report:
    """The report called `name` (the `report_` prefix may be left out); KeyError if none."""
    for report in REPORTS:
        if name in (report.name, report.name.removeprefix("report_")):
            return report
    raise KeyError(name)


def fetch(
    engine: Engine,
    report: Report,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    license: str | None = None,
) -> list[dict[str, Any]]:
    """The view's rows (days `since`..`until` inclusive), in its natural order, typed.

    Decimals come back with the column's scale on both databases (SQLite hands
    back floats, which the column type turns into Decimal; Postgres keeps its own scale).
    """
    view = report.view
    query = select(view)
    if since is not None or until is not None:
        if report.day_column is None:
            raise ValueError(f"{report.name} has no day column to filter on")
        day = view.c[report.day_column]
        if since is not None:
            query = query.where(day >= since)
        if until is not None:
            query = query.where(day <= until)
    if license is not None:
        query = query.where(view.c.license == license)
    query = query.order_by(*(view.c[name] for name in report.order_by))
    scales = {c.name: c.type.scale for c in view.columns
              if isinstance(c.type, Numeric) and c.type.scale is not None}
    rows = []
    with engine.connect() as conn:
        for row in conn.execute(query).mappings():
            rows.append({
                name: value.quantize(Decimal(1).scaleb(-scales[name]))
                if isinstance(value, Decimal) and name in scales else value
                for name, value in row.items()
            })
    return rows


# --- rendering ------------------------------------------------------------------------


def text_of(value: Any, tz: ZoneInfo, *, scale: int | None = None, for_table: bool = False) -> str:
    """A cell as text: money with its cents, other numbers without trailing zeros,
    dates ISO, times in the API's zone (ISO with offset, or minutes and the zone's
    abbreviation for a table: every time a person reads says its zone)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        if scale == 2:
            return f"{value:.2f}"
        text = f"{value.normalize():f}"
        return "0" if text == "-0" else text
    if isinstance(value, dt.datetime):
        local = value.astimezone(tz)
        return local.strftime("%Y-%m-%d %H:%M %Z") if for_table else local.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _scales(report: Report) -> dict[str, int | None]:
    return {c.name: c.type.scale if isinstance(c.type, Numeric) else None for c in report.view.columns}


def to_json(report: Report, rows: Sequence[dict[str, Any]], tz: ZoneInfo) -> str:
    """A JSON list of objects; Decimals as strings, dates and times ISO, integers as numbers."""
    scales = _scales(report)

    def value(name: str, v: Any) -> Any:
        if v is None or isinstance(v, int | str):
            return v
        return text_of(v, tz, scale=scales[name])

    return json.dumps([{k: value(k, v) for k, v in row.items()} for row in rows],
                      indent=2, ensure_ascii=False)


def to_csv(report: Report, rows: Sequence[dict[str, Any]], tz: ZoneInfo) -> str:
    scales = _scales(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.name for c in report.view.columns])
    for row in rows:
        writer.writerow([text_of(v, tz, scale=scales[k]) for k, v in row.items()])
    return out.getvalue()


def to_table(report: Report, rows: Sequence[dict[str, Any]], tz: ZoneInfo,
             title: str | None = None) -> RichTable:
    """A table for a terminal; the license goes to the title when all rows share one."""
    scales = _scales(report)
    title = title or report.name
    columns = [c for c in report.view.columns]
    licenses = {row["license"] for row in rows}
    if len(licenses) == 1:
        title += f", license {licenses.pop()}"
        columns = [c for c in columns if c.name != "license"]
    table = RichTable(title=title, caption=report.summary)
    for column in columns:
        numeric = isinstance(column.type, Numeric | Integer) and not column.name.endswith("_id")
        # Spaces let a narrow terminal wrap the header instead of cutting it.
        table.add_column(column.name.replace("_", " "), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(text_of(row[c.name], tz, scale=scales[c.name], for_table=True)
                        for c in columns))
    return table
