"""The reporting views (migrations 0002 and 0006): what they hold, their settings, reading them.

The views live in the database so any SQL or BI tool can read them; this module
only describes their columns (so values come back typed: Decimal, date, aware
datetime, on SQLite as on Postgres) and reads them. How rows are written (a table,
CSV, JSON) is `syncer.writers`.
The view descriptions live in their own MetaData: they are not tables, and
alembic's autogenerate must not try to create them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    Engine,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from syncer import tables as t
from syncer.config import ReportsConfig
from syncer.dialects.types import UtcDateTime

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


def _count(name: str) -> Column[int]:
    return Column(name, Integer)


REPORTS: tuple[Report, ...] = (
    Report(
        Table("report_daily_sales", views, _license(), _day(), Column("register_id", BigInteger),
              _count("orders"), _quantity("items_sold"), _money("revenue_incl_vat"),
              _money("vat"), _money("revenue_excl_vat"), _money("difference"), _money("paid")),
        "tickets, items sold, revenue (the tickets' totals), VAT and payments per business day "
        "and register",
        ("license", "day", "register_id"),
    ),
    Report(
        Table("report_register_day", views, _license(), _day(), Column("register_id", BigInteger),
              Column("position", SmallInteger), Column("section", String(20)),
              Column("tax_rate", Numeric(7, 4)), Column("method", String(20)), _count("count"),
              Column("first_ticket_at", UtcDateTime()), Column("last_ticket_at", UtcDateTime()),
              _money("base"), _money("vat"), _money("amount")),
        "the Z report per business day and register: tickets, each VAT rate, each payment "
        "method, and the differences",
        ("license", "day", "register_id", "position", "tax_rate", "method"),
    ),
    Report(
        Table("report_vat", views, _license(), _day(), Column("tax_rate", Numeric(7, 4)),
              _money("base"), _money("vat"), _money("total")),
        "VAT base, VAT and total per business day and rate, computed per ticket",
        ("license", "day", "tax_rate"),
    ),
    Report(
        Table("report_payments", views, _license(), _day(), Column("method", String(20)),
              _count("payments"), _money("amount")),
        "payments and amount per business day and payment method",
        ("license", "day", "method"),
    ),
    Report(
        Table("report_tickets", views, _license(), _day(), Column("order_id", BigInteger),
              Column("register_id", BigInteger), Column("user_id", BigInteger),
              Column("ordered_at", UtcDateTime()), Column("weekday", SmallInteger),
              Column("hour", SmallInteger), _count("lines"), _quantity("items_sold"),
              _money("total"), _money("lines_total"), _money("base"), _money("vat"),
              _money("difference"), _money("paid"), _money("payment_difference")),
        "every ticket (a sale: an order that is not a labour record) with its total, lines, "
        "VAT, payments and differences",
        ("license", "day", "order_id"),
    ),
    Report(
        Table("report_ticket_vat", views, _license(), _day(), Column("order_id", BigInteger),
              Column("register_id", BigInteger), Column("tax_rate", Numeric(7, 4)),
              _money("base"), _money("vat"), _money("total")),
        "VAT per ticket and rate, rounded to the cent as the receipt shows it",
        ("license", "day", "order_id", "tax_rate"),
    ),
    Report(
        Table("report_ticket_payments", views, _license(), _day(), Column("order_id", BigInteger),
              Column("register_id", BigInteger), Column("method", String(20)), _money("amount")),
        "payments per ticket and method",
        ("license", "day", "order_id", "method"),
    ),
    Report(
        Table("report_product_sales", views, _license(), _day(), Column("product_id", BigInteger),
              Column("product_name", Text), Column("category_id", BigInteger),
              Column("category_name", Text), _quantity("quantity"), _money("product_revenue"),
              _money("supplement_revenue"), _money("revenue")),
        "quantity and revenue per business day and product, supplements apart",
        ("license", "day", "product_id"),
    ),
    Report(
        Table("report_hourly", views, _license(), Column("weekday", SmallInteger),
              Column("hour", SmallInteger), _count("days_open"), _count("orders"),
              _money("revenue")),
        "tickets and revenue per weekday of the business day (1 = Monday) and hour, over all "
        "history",
        ("license", "weekday", "hour"),
        day_column=None,
    ),
    Report(
        Table("report_labor", views, _license(), _day(), Column("user_id", BigInteger),
              Column("username", Text), Column("clock_in", UtcDateTime()),
              Column("clock_out", UtcDateTime()), Column("hours_worked", Numeric(7, 2))),
        "clock-in/clock-out pairs and hours worked per user and business day",
        ("license", "day", "user_id", "clock_in", "clock_out"),
    ),
    Report(
        Table("report_documents", views, _license(), _day(), Column("document_id", BigInteger),
              Column("number", Text), Column("kind", String(20)), Column("counted_as", String(20)),
              Column("customer_id", BigInteger), _count("lines"), _money("total"),
              _money("lines_total"), _money("base"), _money("vat"), _money("difference")),
        "every sales document (invoice, quote, credit note) on its date, a credit note "
        "negative; counted_as says whether it is turnover (not a quote, not made from a VAT "
        "ticket the tickets already count)",
        ("license", "day", "document_id"),
    ),
    Report(
        Table("report_document_vat", views, _license(), _day(), Column("document_id", BigInteger),
              Column("number", Text), Column("kind", String(20)), Column("tax_rate", Numeric(7, 4)),
              _money("base"), _money("vat"), _money("total")),
        "VAT per document and rate of the invoices and credit notes that are turnover, rounded "
        "per document",
        ("license", "day", "document_id", "tax_rate"),
    ),
    Report(
        Table("report_receipts_book", views, _license(), _day(), Column("position", SmallInteger),
              Column("tax_rate", Numeric(7, 4)), Column("method", String(20)), _count("tickets"),
              _money("base"), _money("vat"), _money("amount")),
        "the daily receipts book: per business day the tickets' turnover per VAT rate "
        "(position 1) and their payments per method (position 2)",
        ("license", "day", "position", "tax_rate", "method"),
    ),
    *(Report(
        Table(f"report_vat_{period}", views, _license(), Column("period", String(7)),
              Column("period_start", Date), Column("source", String(20)),
              Column("tax_rate", Numeric(7, 4)), Column("base_grid", String(2)),
              Column("vat_grid", String(2)), _count("items"), _money("base"), _money("vat"),
              _money("total")),
        f"VAT base, VAT and total per {period} and rate, tickets, invoices and credit notes "
        "apart, with the box of the Belgian periodic VAT return each feeds where unambiguous "
        "(not a filed return)",
        ("license", "period_start", "source", "tax_rate"),
        day_column="period_start",
    ) for period in ("month", "quarter")),
    Report(
        Table("report_liabilities", views, _license(), Column("kind", String(20)),
              Column("customer_id", BigInteger), Column("customer_name", Text),
              _count("items"), _money("amount")),
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


# --- the business day -------------------------------------------------------------------


def business_day(moment: dt.datetime, tz: ZoneInfo, day_start_minute: int) -> dt.date:
    """The business day `moment` counts for: its local date, or the day before when its
    local time is before the day's start (the views' rule, migration 0006)."""
    local = moment.astimezone(tz)
    if local.hour * 60 + local.minute < day_start_minute:
        return local.date() - dt.timedelta(days=1)
    return local.date()


def apply_settings(engine: Engine, settings: ReportsConfig) -> bool:
    """Store `[reports]` where the views read it (report_settings); True if it changed.

    Nothing stored is rewritten and nothing is fetched: the views compute the
    business day when they are read. Written only when it differs, so a command on a
    database it may only read writes nothing.
    """
    row = {"day_starts_at": settings.day_starts_at, "day_start_minute": settings.day_start_minute}
    with engine.connect() as conn:
        stored = conn.execute(select(t.report_settings.c.day_starts_at, t.report_settings.c.day_start_minute)
                              .where(t.report_settings.c.id == 1)).one_or_none()
    if stored is not None and tuple(stored) == (row["day_starts_at"], row["day_start_minute"]):
        return False
    with engine.begin() as conn:
        values = {**row, "updated_at": dt.datetime.now(dt.UTC)}
        if stored is None:
            conn.execute(insert(t.report_settings).values(id=1, **values))
        else:
            conn.execute(update(t.report_settings).where(t.report_settings.c.id == 1).values(**values))
    return True


def day_start_minute(conn: Connection) -> int:
    """The business day's start the views use now (minutes after local midnight)."""
    stored = conn.execute(select(t.report_settings.c.day_start_minute)
                          .where(t.report_settings.c.id == 1)).scalar()
    return int(stored or 0)


# --- what a written report says about itself ------------------------------------------------


@dataclass(frozen=True)
class Header:
    """A file's header block: whose data, which days, when it was made, and how fresh the
    data behind it is (each license's last successful orders sync)."""

    licenses: tuple[str, ...]
    since: dt.date | None
    until: dt.date | None
    made_at: dt.datetime
    orders_synced_at: dict[str, dt.datetime | None]


def header(engine: Engine, rows: Sequence[Mapping[str, Any]], *, license: str | None,
           since: dt.date | None, until: dt.date | None, now: dt.datetime) -> Header:
    """The header block of `rows`: the license asked for, else the licenses in the rows
    (else every license the database holds)."""
    state = t.sync_state
    with engine.connect() as conn:
        synced = dict(conn.execute(select(state.c.license, state.c.last_success_at)
                                   .where(state.c.resource == "orders")).tuples().all())
        held = set(conn.execute(select(state.c.license).distinct()).scalars())
    names = ((license,) if license is not None
             else tuple(sorted({row["license"] for row in rows} or held)))
    return Header(names, since, until, now, {name: synced.get(name) for name in names})
