"""reports that reconcile with the till: tickets, per-ticket VAT, a business day, a Z report

Revision ID: 0006_reconciled_reports
Revises: 0005_secnr_hash_key
Create Date: 2026-12-01 09:00:00

Replaces the order views of 0002 (report_liabilities stays as it was). The rules
(README "Reporting"):

- one definition of a sale: `report_tickets`, one row per order that is not a
  labour record. Every other sales view is built on it (or on `report_ticket_vat`,
  which is built on it), so they count the same tickets;
- revenue is what was charged: the sum of the tickets' `total_price`;
- VAT is computed per ticket and rate, as a fiscal receipt shows it: the ticket's
  lines (and supplements) at that rate summed exactly and rounded to the cent, the
  base `round(gross / (1 + rate/100))`, VAT the rest; views add these up;
- where a ticket's lines (rounded per rate) do not add up to its total, the
  `difference` column says by how much (total - lines), instead of spreading it;
- the business day: a ticket counts for the local day on which the business day
  began, `[reports] day_starts_at` (stored in `report_settings`, read by the views
  when they are queried, so a change rewrites no row and fetches nothing). A ticket
  whose local time is before it counts for the day before.

Amounts are handled in whole cents with integer arithmetic (SQLite computes on
NUMERIC in floating point), with the building blocks of 0002. On SQLite, drop the
views before a batch operation that rebuilds `orders`.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql, postgresql

revision = "0006_reconciled_reports"
down_revision = "0005_secnr_hash_key"
branch_labels = None
depends_on = None

# MariaDB/MySQL: DATETIME(6), microseconds kept (naive UTC, syncer.dialects.types).
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _revision_0002() -> ModuleType:
    """The 0002 migration module: its SQL building blocks, and its views for downgrade."""
    path = Path(__file__).with_name("0002_report_views.py")
    spec = importlib.util.spec_from_file_location("syncer_migration_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R2 = _revision_0002()
cast, cents, money, quantity, base_cents = R2.cast, R2.cents, R2.money, R2.quantity, R2.base_cents

# Views of 0002 that read orders, dropped here and re-created on downgrade.
OLD_VIEWS = ("report_daily_sales", "report_vat", "report_payments", "report_product_sales",
             "report_hourly", "report_labor")
# Dependents first: a view is dropped before the views it reads.
NEW_VIEWS = ("report_register_day", "report_daily_sales", "report_vat", "report_payments",
             "report_product_sales", "report_hourly", "report_labor", "report_ticket_payments",
             "report_ticket_vat", "report_tickets")

LABOUR = "(o.clock_in IS NOT NULL OR o.clock_out IS NOT NULL)"
# The minute of the local day at which a business day begins (0 without a setting).
DAY_START = "(SELECT COALESCE(MAX(day_start_minute), 0) FROM report_settings)"


def _before_day_start(alias: str) -> str:
    return f"({alias}.local_hour * 60 + COALESCE({alias}.local_minute, 0) < {DAY_START})"


def business_day(alias: str) -> str:
    """The business day of an order: its local date, or the day before when its local
    time is before the day's start."""
    name = op.get_bind().dialect.name
    if name == "sqlite":
        previous = f"date({alias}.business_date, '-1 day')"
    elif name in ("mysql", "mariadb"):
        previous = f"({alias}.business_date - INTERVAL 1 DAY)"
    else:
        previous = f"CAST({alias}.business_date - 1 AS DATE)"
    return (f"CASE WHEN {_before_day_start(alias)} THEN {previous} "
            f"ELSE {alias}.business_date END")


def business_weekday(alias: str) -> str:
    """The ISO weekday (1 = Monday) of the business day."""
    return (f"CASE WHEN {_before_day_start(alias)} THEN ({alias}.local_weekday + 5) % 7 + 1 "
            f"ELSE {alias}.local_weekday END")


# Per ticket and rate, what its lines and supplements charge (VAT included): the exact
# sum rounded to the cent, and the base of that in cents. A supplement's price is per
# unit of its line, at the supplement's own rate.
def ticket_rates() -> str:
    """CTEs `items`, `rates`, `ticket_rates` (built when migrating: its SQL depends on the
    database)."""
    return f"""
items AS (
    SELECT l.license, l.order_id, l.tax_rate, l.quantity * l.price AS gross
    FROM order_lines l
    UNION ALL
    SELECT l.license, l.order_id, x.tax_rate, l.quantity * x.price
    FROM order_lines l
    JOIN order_line_subproducts x
      ON x.license = l.license AND x.order_id = l.order_id AND x.line_no = l.line_no
),
rates AS (
    SELECT license, order_id, tax_rate, {cents('SUM(gross)')} AS gross_cents
    FROM items
    GROUP BY license, order_id, tax_rate
),
ticket_rates AS (
    SELECT license, order_id, tax_rate, gross_cents,
           {base_cents('gross_cents', 'tax_rate')} AS base_cents
    FROM rates
)"""  # noqa: S608 - constant SQL, no input

# The one definition of a sale: an order that is not a labour record, with a local day.
SALES = f"FROM orders o WHERE NOT {LABOUR} AND o.business_date IS NOT NULL"

# Why unions and windows rather than joins: a ticket's parts (rates, payments, lines)
# are brought together by one GROUP BY or one window over a UNION ALL. Right after a
# load, before Postgres has statistics, the planner estimates `clock_in IS NULL AND
# clock_out IS NULL` at a row or two and would join aggregates in nested loops, which
# took minutes on 13,500 tickets; a union has no join order to get wrong.


def of_tickets(detail: str, columns: Sequence[str]) -> str:
    """CTE `detailed`: the rows of `detail` (license, order_id, *columns) that belong to a
    ticket, each with the ticket's day and register."""
    nulls = ", ".join(f"NULL AS {c}" for c in columns)
    listed = ", ".join(columns)
    return f"""
marked AS (
    SELECT o.license, o.id AS order_id, 1 AS is_ticket, {business_day('o')} AS day,
           o.register_id, {nulls}
    {SALES}
    UNION ALL
    SELECT d.license, d.order_id, 0, NULL, NULL, {", ".join(f"d.{c}" for c in columns)}
    FROM ({detail}) d
),
detailed AS (
    SELECT license, order_id, is_ticket, {listed},
           MAX(day) OVER ticket AS day, MAX(register_id) OVER ticket AS register_id,
           MAX(is_ticket) OVER ticket AS of_a_ticket
    FROM marked
    WINDOW ticket AS (PARTITION BY license, order_id)
)"""  # noqa: S608 - constant SQL, no input


def tickets() -> str:
    # Typed NULLs: Postgres matches the types of a union two branches at a time.
    # "lines" is quoted: a reserved word of MariaDB/MySQL.
    parts = {"total_cents": "BIGINT", "gross_cents": "BIGINT", "base_cents": "BIGINT",
             "paid_cents": "BIGINT", '"lines"': "BIGINT", "items_sold": "NUMERIC"}

    def branch(values: dict[str, str]) -> str:
        return ", ".join(f"{values.get(c, cast('NULL', kind))} AS {c}"
                         for c, kind in parts.items())

    return f"""
CREATE VIEW report_tickets AS
WITH {ticket_rates()},
parts AS (
    SELECT o.license, o.id AS order_id, 1 AS is_ticket, {business_day('o')} AS day,
           {business_weekday('o')} AS weekday, o.local_hour AS hour, o.register_id,
           o.user_id, o.ordered_at,
           {branch({"total_cents": cents('COALESCE(o.total_price, 0)')})}
    {SALES}
    UNION ALL
    SELECT license, order_id, 0, NULL, NULL, NULL, NULL, NULL, NULL,
           {branch({"gross_cents": "gross_cents", "base_cents": "base_cents"})}
    FROM ticket_rates
    UNION ALL
    SELECT license, order_id, 0, NULL, NULL, NULL, NULL, NULL, NULL,
           {branch({"paid_cents": cents('SUM(amount)')})}
    FROM order_payments
    GROUP BY license, order_id
    UNION ALL
    SELECT license, order_id, 0, NULL, NULL, NULL, NULL, NULL, NULL,
           {branch({'"lines"': "COUNT(*)", "items_sold": "SUM(quantity)"})}
    FROM order_lines
    GROUP BY license, order_id
),
ticket AS (
    SELECT license, order_id, MAX(day) AS day, MAX(weekday) AS weekday, MAX(hour) AS hour,
           MAX(register_id) AS register_id, MAX(user_id) AS user_id,
           MAX(ordered_at) AS ordered_at, SUM(total_cents) AS total_cents,
           COALESCE(SUM(gross_cents), 0) AS gross_cents,
           COALESCE(SUM(base_cents), 0) AS base_cents,
           COALESCE(SUM(paid_cents), 0) AS paid_cents,
           COALESCE(SUM("lines"), 0) AS "lines", COALESCE(SUM(items_sold), 0) AS items_sold
    FROM parts
    GROUP BY license, order_id
    HAVING MAX(is_ticket) = 1
)
SELECT license, day, order_id, register_id, user_id, ordered_at, weekday, hour, "lines",
       {quantity('items_sold')} AS items_sold,
       {money('total_cents')} AS total,
       {money('gross_cents')} AS lines_total,
       {money('base_cents')} AS base,
       {money('gross_cents - base_cents')} AS vat,
       {money('total_cents - gross_cents')} AS difference,
       {money('paid_cents')} AS paid,
       {money('total_cents - paid_cents')} AS payment_difference
FROM ticket
"""  # noqa: S608 - constant SQL, no input


def ticket_vat() -> str:
    detail = "SELECT license, order_id, tax_rate, gross_cents, base_cents FROM ticket_rates"
    return f"""
CREATE VIEW report_ticket_vat AS
WITH {ticket_rates()},
{of_tickets(detail, ("tax_rate", "gross_cents", "base_cents"))}
SELECT license, day, order_id, register_id, tax_rate,
       {money('base_cents')} AS base,
       {money('gross_cents - base_cents')} AS vat,
       {money('gross_cents')} AS total
FROM detailed
WHERE is_ticket = 0 AND of_a_ticket = 1
"""  # noqa: S608 - constant SQL, no input


def ticket_payments() -> str:
    detail = "SELECT license, order_id, method, amount FROM order_payments"
    return f"""
CREATE VIEW report_ticket_payments AS
WITH {of_tickets(detail, ("method", "amount"))}
SELECT license, day, order_id, register_id, method, {money(cents('amount'))} AS amount
FROM detailed
WHERE is_ticket = 0 AND of_a_ticket = 1
"""  # noqa: S608 - constant SQL, no input


def _sum(column: str) -> str:
    """The sum of a money column of the views, exact: each value in cents, then added."""
    return money(f"SUM({cents(column)})")


def daily_sales() -> str:
    return f"""
CREATE VIEW report_daily_sales AS
SELECT license, day, register_id, COUNT(*) AS orders,
       {quantity('SUM(items_sold)')} AS items_sold,
       {_sum('total')} AS revenue_incl_vat,
       {_sum('vat')} AS vat,
       {_sum('base')} AS revenue_excl_vat,
       {_sum('difference')} AS difference,
       {_sum('paid')} AS paid
FROM report_tickets
GROUP BY license, day, register_id
"""  # noqa: S608 - constant SQL, no input


def vat() -> str:
    return f"""
CREATE VIEW report_vat AS
SELECT license, day, tax_rate, {_sum('base')} AS base, {_sum('vat')} AS vat,
       {_sum('total')} AS total
FROM report_ticket_vat
GROUP BY license, day, tax_rate
"""  # noqa: S608 - constant SQL, no input


def payments() -> str:
    return f"""
CREATE VIEW report_payments AS
SELECT license, day, method, COUNT(*) AS payments, {_sum('amount')} AS amount
FROM report_ticket_payments
GROUP BY license, day, method
"""  # noqa: S608 - constant SQL, no input


def product_sales() -> str:
    # A line gives its product's quantity and price; each supplement on it, the line
    # quantity times the supplement's price, to the line's product.
    detail = """
        SELECT license, order_id, product_id, quantity, quantity * price AS product_gross,
               0 AS supplement_gross
        FROM order_lines
        UNION ALL
        SELECT l.license, l.order_id, l.product_id, 0, 0, l.quantity * x.price
        FROM order_lines l
        JOIN order_line_subproducts x
          ON x.license = l.license AND x.order_id = l.order_id AND x.line_no = l.line_no"""
    # 0002's naming and rows (names joined without deleted_at) on the new `sold`.
    rows = R2.product_sales()
    rows = rows[rows.index("SELECT t.license, t.business_date AS day"):]
    return f"""
CREATE VIEW report_product_sales AS
WITH {of_tickets(detail, ("product_id", "quantity", "product_gross", "supplement_gross"))},
sold AS (
    SELECT license, day AS business_date, product_id, SUM(quantity) AS quantity,
           {cents('SUM(product_gross)')} AS product_cents,
           {cents('SUM(supplement_gross)')} AS supplement_cents
    FROM detailed
    WHERE is_ticket = 0 AND of_a_ticket = 1
    GROUP BY license, day, product_id
)
{rows}"""  # noqa: S608 - constant SQL, no input


def hourly() -> str:
    return f"""
CREATE VIEW report_hourly AS
WITH t AS (
    SELECT license, day, weekday, hour, total FROM report_tickets
),
hours AS (
    SELECT license, weekday, hour, COUNT(*) AS orders, {_sum('total')} AS revenue
    FROM t
    GROUP BY license, weekday, hour
),
open_days AS (
    SELECT license, weekday, COUNT(DISTINCT day) AS days_open
    FROM t
    GROUP BY license, weekday
)
SELECT h.license, h.weekday, h.hour, d.days_open, h.orders, h.revenue
FROM hours h
JOIN open_days d ON d.license = h.license AND d.weekday = h.weekday
"""  # noqa: S608 - constant SQL, no input


def labor() -> str:
    """0002's pairing of clock-ins and clock-outs, on the business day a shift began."""
    old_source = """WITH labour AS (
    SELECT license, id, user_id, business_date, clock_in, clock_out
    FROM orders
    WHERE clock_in IS NOT NULL OR clock_out IS NOT NULL
),"""
    new_source = f"""WITH labour AS (
    SELECT o.license, o.id, o.user_id, {business_day('o')} AS business_date,
           o.clock_in, o.clock_out
    FROM orders o
    WHERE {LABOUR}
),"""  # noqa: S608 - constant SQL, no input
    sql: str = R2.labor()
    assert old_source in sql, "0002's report_labor changed: adapt this revision"
    return sql.replace(old_source, new_source)


def register_day() -> str:
    # One row per line of a register's day, as the till's Z report lists them:
    # position 1 the tickets, 2 each VAT rate, 3 each payment method, 4 and 5 the
    # differences (0.00 when the tickets reconcile).
    return f"""
CREATE VIEW report_register_day AS
WITH tickets AS (  -- read once (a CTE used three times is materialized on both databases)
    SELECT license, day, register_id, ordered_at, base, vat, total, difference,
           payment_difference
    FROM report_tickets
)
SELECT license, day, register_id, 1 AS position, 'tickets' AS section, NULL AS tax_rate,
       NULL AS method, COUNT(*) AS count, MIN(ordered_at) AS first_ticket_at,
       MAX(ordered_at) AS last_ticket_at, {_sum('base')} AS base, {_sum('vat')} AS vat,
       {_sum('total')} AS amount
FROM tickets
GROUP BY license, day, register_id
UNION ALL
SELECT license, day, register_id, 2, 'vat', tax_rate, NULL, COUNT(*), NULL, NULL,
       {_sum('base')}, {_sum('vat')}, {_sum('total')}
FROM report_ticket_vat
GROUP BY license, day, register_id, tax_rate
UNION ALL
SELECT license, day, register_id, 3, 'payment', NULL, method, COUNT(*), NULL, NULL,
       NULL, NULL, {_sum('amount')}
FROM report_ticket_payments
GROUP BY license, day, register_id, method
UNION ALL
SELECT license, day, register_id, 4, 'lines_difference', NULL, NULL,
       SUM(CASE WHEN difference <> 0 THEN 1 ELSE 0 END), NULL, NULL, NULL, NULL,
       {_sum('difference')}
FROM tickets
GROUP BY license, day, register_id
UNION ALL
SELECT license, day, register_id, 5, 'payments_difference', NULL, NULL,
       SUM(CASE WHEN payment_difference <> 0 THEN 1 ELSE 0 END), NULL, NULL, NULL, NULL,
       {_sum('payment_difference')}
FROM tickets
GROUP BY license, day, register_id
"""  # noqa: S608 - constant SQL, no input


# --- the local minute of orders already stored ----------------------------------------


def fill_local_minute() -> None:
    """local_minute for stored orders, by the parser's own rule (syncer.parse.local_reading)."""
    from syncer.parse import local_reading  # noqa: PLC0415

    zone = ZoneInfo(context.config.attributes.get("timezone") or "Europe/Brussels")
    orders = sa.table(
        "orders", sa.column("license", sa.String), sa.column("id", sa.BigInteger),
        sa.column("ordered_at", _TIME),
        sa.column("clock_in", _TIME),
        sa.column("clock_out", _TIME),
        sa.column("business_date", sa.Date), sa.column("local_minute", sa.SmallInteger),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(orders.c.license, orders.c.id, orders.c.ordered_at, orders.c.clock_in,
                  orders.c.clock_out)
        .where(orders.c.business_date.is_not(None), orders.c.local_minute.is_(None))
    ).all()
    updates = []
    for license, order_id, *times in rows:
        ordered_at, clock_in, clock_out = (_utc(t) for t in times)
        reading = local_reading({"ordered_at": ordered_at, "clock_in": clock_in,
                                 "clock_out": clock_out}, zone)
        if reading["local_minute"] is not None:
            updates.append({"k_license": license, "k_id": order_id,
                            "local_minute": reading["local_minute"]})
    statement = (
        orders.update()
        .where(orders.c.license == sa.bindparam("k_license"), orders.c.id == sa.bindparam("k_id"))
        .values(local_minute=sa.bindparam("local_minute"))
    )
    for start in range(0, len(updates), 5000):
        bind.execute(statement, updates[start:start + 5000])


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    result: dt.datetime | None = R2._utc(value)
    return result


def upgrade() -> None:
    for name in OLD_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("local_minute", sa.SmallInteger(), nullable=True))
    fill_local_minute()
    settings = op.create_table(
        "report_settings",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("day_starts_at", sa.String(length=5), nullable=False),
        sa.Column("day_start_minute", sa.SmallInteger(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_settings")),
    )
    op.bulk_insert(settings, [{"id": 1, "day_starts_at": "00:00", "day_start_minute": 0}])
    op.create_table(
        "audit_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("license", sa.String(length=100), nullable=False),
        sa.Column("ran_at", _TIME, nullable=False),
        sa.Column("problems", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()),
                                                   "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_runs")),
    )
    op.create_index(op.f("ix_audit_runs_license_ran_at"), "audit_runs", ["license", "ran_at"],
                    unique=False)
    for create in (tickets, ticket_vat, ticket_payments, daily_sales, vat, payments, product_sales,
                   hourly, labor, register_day):
        op.execute(create())


def downgrade() -> None:
    for name in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index(op.f("ix_audit_runs_license_ran_at"), table_name="audit_runs")
    op.drop_table("audit_runs")
    op.drop_table("report_settings")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("local_minute")
    for create in (R2.daily_sales, R2.vat, R2.payments, R2.product_sales, R2.hourly, R2.labor):
        op.execute(create())
