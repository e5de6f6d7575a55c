"""local day columns on orders and the report views

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 13:10:00

The views are plain SQL that runs unchanged on SQLite and Postgres, with one
exception: the seconds between two timestamps (report_labor), for which the two
databases share no function. Rules they keep (README "Reporting"):

- days and hours are the local ones (api.timezone), from orders.business_date,
  local_hour and local_weekday, which the parser fills: SQLite cannot convert
  time zones in SQL;
- money is summed exactly, rounded to the cent (half away from zero), and the
  split of a VAT-inclusive amount into base and VAT is done in whole cents with
  integer arithmetic, per group, so that SQLite (whose arithmetic on NUMERIC
  columns is floating point) and Postgres (exact NUMERIC) give the same cents;
- catalog rows are joined without looking at deleted_at: history keeps its names.

A later change to a view is a new revision that drops and re-creates it. On
SQLite, drop the views before a batch operation that rebuilds `orders`.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# MariaDB/MySQL: DATETIME(6), microseconds kept (naive UTC, syncer.dialects.types).
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

VIEWS = (
    "report_daily_sales",
    "report_vat",
    "report_payments",
    "report_product_sales",
    "report_hourly",
    "report_labor",
    "report_liabilities",
)


# --- SQL building blocks -------------------------------------------------------------


def _mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def cast(expr: str, kind: str) -> str:
    """CAST to a SQL type by its standard name; MariaDB/MySQL call BIGINT `SIGNED` and
    NUMERIC `DECIMAL` in a CAST."""
    if _mysql():
        kind = kind.replace("BIGINT", "SIGNED").replace("NUMERIC", "DECIMAL")
    return f"CAST({expr} AS {kind})"


def int_div(numerator: str, divisor: str) -> str:
    """Integer division, truncated (MariaDB/MySQL's `/` gives a decimal)."""
    return f"({numerator}) {'DIV' if _mysql() else '/'} ({divisor})"


def cents(amount: str) -> str:
    """An exact amount in euro, rounded to whole cents (half away from zero), as an integer."""
    return cast(f"ROUND(({amount}) * 100)", "BIGINT")


def money(cents_expr: str) -> str:
    """Whole cents as NUMERIC(15, 2) euro."""
    return cast(f"({cents_expr}) / 100.0", "NUMERIC(15, 2)")


def quantity(amount: str) -> str:
    return cast(f"ROUND({amount}, 4)", "NUMERIC(15, 4)")


def rounded_quotient(numerator: str, divisor: str) -> str:
    """numerator / divisor rounded half away from zero, in integer arithmetic (divisor > 0)."""
    return (f"(CASE WHEN ({numerator}) < 0 "
            f"THEN -({int_div(f'2 * -({numerator}) + ({divisor})', f'2 * ({divisor})')}) "
            f"ELSE {int_div(f'2 * ({numerator}) + ({divisor})', f'2 * ({divisor})')} END)")


def base_cents(gross_cents: str, rate: str) -> str:
    """The VAT base in whole cents of a VAT-inclusive amount: gross / (1 + rate/100), rounded.

    The rate is taken in ten-thousandths of a percent (NUMERIC(7, 4) is exact there),
    so base = gross * 1,000,000 / (1,000,000 + rate * 10,000), all in integers.
    """
    rate_units = cast(f"ROUND({rate} * 10000)", "BIGINT")
    return (f"(CASE WHEN {rate} > -100 THEN "
            f"{rounded_quotient(f'{gross_cents} * 1000000', f'1000000 + {rate_units}')} END)")


def seconds_between(start: str, end: str) -> str:
    """Whole seconds from `start` to `end` (stored UTC timestamps), rounded."""
    if op.get_bind().dialect.name == "sqlite":
        return f"CAST(ROUND((julianday({end}) - julianday({start})) * 86400) AS BIGINT)"
    if _mysql():
        return cast(f"ROUND(TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1000000)", "BIGINT")
    return f"CAST(ROUND(EXTRACT(EPOCH FROM ({end} - {start}))) AS BIGINT)"


# Sales: orders that are not labour records and have a local day.
SALES = """
sales AS (
    SELECT license, id, business_date, local_hour, local_weekday, register_id
    FROM orders
    WHERE clock_in IS NULL AND clock_out IS NULL AND business_date IS NOT NULL
)"""

# What was sold: one row per order line and one per subproduct slot, VAT-inclusive.
# A subproduct's price is per unit of its line: gross = line quantity * slot price.
ITEMS = """
items AS (
    SELECT s.license, s.id AS order_id, s.business_date, s.local_hour, s.local_weekday,
           s.register_id, l.product_id, l.tax_rate, l.quantity * l.price AS gross
    FROM sales s
    JOIN order_lines l ON l.license = s.license AND l.order_id = s.id
    UNION ALL
    SELECT s.license, s.id, s.business_date, s.local_hour, s.local_weekday,
           s.register_id, l.product_id, x.tax_rate, l.quantity * x.price
    FROM sales s
    JOIN order_lines l ON l.license = s.license AND l.order_id = s.id
    JOIN order_line_subproducts x
      ON x.license = l.license AND x.order_id = l.order_id AND x.line_no = l.line_no
)"""


def daily_sales() -> str:
    return f"""
CREATE VIEW report_daily_sales AS
WITH {SALES},
{ITEMS},
by_rate AS (
    SELECT license, business_date, register_id, tax_rate, {cents('SUM(gross)')} AS gross_cents
    FROM items
    GROUP BY license, business_date, register_id, tax_rate
),
by_register AS (
    SELECT license, business_date, register_id, SUM(gross_cents) AS gross_cents,
           SUM(gross_cents - {base_cents('gross_cents', 'tax_rate')}) AS vat_cents
    FROM by_rate
    GROUP BY license, business_date, register_id
),
counts AS (
    SELECT s.license, s.business_date, s.register_id, COUNT(*) AS orders,
           SUM(q.quantity) AS items_sold
    FROM sales s
    LEFT JOIN (SELECT license, order_id, SUM(quantity) AS quantity
               FROM order_lines GROUP BY license, order_id) q
      ON q.license = s.license AND q.order_id = s.id
    GROUP BY s.license, s.business_date, s.register_id
)
SELECT c.license, c.business_date AS day, c.register_id, c.orders,
       {quantity('COALESCE(c.items_sold, 0)')} AS items_sold,
       {money('COALESCE(r.gross_cents, 0)')} AS revenue_incl_vat,
       {money('COALESCE(r.vat_cents, 0)')} AS vat,
       {money('COALESCE(r.gross_cents, 0) - COALESCE(r.vat_cents, 0)')} AS revenue_excl_vat
FROM counts c
LEFT JOIN by_register r
  ON r.license = c.license AND r.business_date = c.business_date
 AND (r.register_id = c.register_id OR (r.register_id IS NULL AND c.register_id IS NULL))
"""  # noqa: S608 - constant SQL, no input


def vat() -> str:
    return f"""
CREATE VIEW report_vat AS
WITH {SALES},
{ITEMS},
by_rate AS (
    SELECT license, business_date, tax_rate, {cents('SUM(gross)')} AS gross_cents
    FROM items
    GROUP BY license, business_date, tax_rate
),
split AS (
    SELECT license, business_date, tax_rate, gross_cents,
           {base_cents('gross_cents', 'tax_rate')} AS base_cents
    FROM by_rate
)
SELECT license, business_date AS day, tax_rate,
       {money('base_cents')} AS base,
       {money('gross_cents - base_cents')} AS vat,
       {money('gross_cents')} AS total
FROM split
"""  # noqa: S608 - constant SQL, no input


def payments() -> str:
    return f"""
CREATE VIEW report_payments AS
SELECT o.license, o.business_date AS day, p.method, COUNT(*) AS payments,
       {money(cents('SUM(p.amount)'))} AS amount
FROM orders o
JOIN order_payments p ON p.license = o.license AND p.order_id = o.id
WHERE o.business_date IS NOT NULL
GROUP BY o.license, o.business_date, p.method
"""  # noqa: S608 - constant SQL, no input


def product_sales() -> str:
    return f"""
CREATE VIEW report_product_sales AS
WITH {SALES},
supplements AS (
    SELECT license, order_id, line_no, SUM(price) AS unit_price
    FROM order_line_subproducts
    GROUP BY license, order_id, line_no
),
sold AS (
    SELECT s.license, s.business_date, l.product_id, SUM(l.quantity) AS quantity,
           {cents('SUM(l.quantity * l.price)')} AS product_cents,
           {cents('SUM(l.quantity * x.unit_price)')} AS supplement_cents
    FROM sales s
    JOIN order_lines l ON l.license = s.license AND l.order_id = s.id
    LEFT JOIN supplements x
      ON x.license = l.license AND x.order_id = l.order_id AND x.line_no = l.line_no
    GROUP BY s.license, s.business_date, l.product_id
)
SELECT t.license, t.business_date AS day, t.product_id, p.name AS product_name,
       p.category_id, c.name AS category_name,
       {quantity('COALESCE(t.quantity, 0)')} AS quantity,
       {money('COALESCE(t.product_cents, 0)')} AS product_revenue,
       {money('COALESCE(t.supplement_cents, 0)')} AS supplement_revenue,
       {money('COALESCE(t.product_cents, 0) + COALESCE(t.supplement_cents, 0)')} AS revenue
FROM sold t
LEFT JOIN products p ON p.license = t.license AND p.id = t.product_id
LEFT JOIN categories c ON c.license = p.license AND c.id = p.category_id
"""  # noqa: S608 - constant SQL, no input


def hourly() -> str:
    return f"""
CREATE VIEW report_hourly AS
WITH {SALES},
{ITEMS},
counts AS (
    SELECT license, local_weekday, local_hour, COUNT(*) AS orders
    FROM sales
    GROUP BY license, local_weekday, local_hour
),
revenue AS (
    SELECT license, local_weekday, local_hour, {cents('SUM(gross)')} AS gross_cents
    FROM items
    GROUP BY license, local_weekday, local_hour
),
open_days AS (
    SELECT license, local_weekday, COUNT(DISTINCT business_date) AS days_open
    FROM sales
    GROUP BY license, local_weekday
)
SELECT c.license, c.local_weekday AS weekday, c.local_hour AS hour, d.days_open, c.orders,
       {money('COALESCE(r.gross_cents, 0)')} AS revenue
FROM counts c
JOIN open_days d ON d.license = c.license AND d.local_weekday = c.local_weekday
LEFT JOIN revenue r
  ON r.license = c.license AND r.local_weekday = c.local_weekday AND r.local_hour = c.local_hour
"""  # noqa: S608 - constant SQL, no input


def labor() -> str:
    # A labour record with both times is a pair. Where the POS writes the clock-in and
    # the clock-out as separate records, a clock-in pairs with the user's next record
    # if that is a clock-out; an unpaired half is listed with the other time empty.
    halves_order = ("OVER (PARTITION BY license, user_id "
                    "ORDER BY COALESCE(clock_in, clock_out), id)")
    seconds = seconds_between("p.clock_in", "p.clock_out")
    return f"""
CREATE VIEW report_labor AS
WITH labour AS (
    SELECT license, id, user_id, business_date, clock_in, clock_out
    FROM orders
    WHERE clock_in IS NOT NULL OR clock_out IS NOT NULL
),
halves AS (
    SELECT license, id, user_id, business_date, clock_in, clock_out,
           LEAD(clock_in) {halves_order} AS next_in,
           LEAD(clock_out) {halves_order} AS next_out,
           LAG(clock_in) {halves_order} AS previous_in
    FROM labour
    WHERE clock_in IS NULL OR clock_out IS NULL
),
pairs AS (
    SELECT license, user_id, business_date, clock_in, clock_out
    FROM labour
    WHERE clock_in IS NOT NULL AND clock_out IS NOT NULL
    UNION ALL
    SELECT license, user_id, business_date, clock_in,
           CASE WHEN next_in IS NULL THEN next_out END
    FROM halves
    WHERE clock_in IS NOT NULL
    UNION ALL
    SELECT license, user_id, business_date, NULL, clock_out
    FROM halves
    WHERE clock_in IS NULL AND previous_in IS NULL
),
timed AS (
    SELECT p.license, p.user_id, p.business_date, p.clock_in, p.clock_out,
           {seconds} AS seconds
    FROM pairs p
)
SELECT t.license, t.business_date AS day, t.user_id, u.username, t.clock_in, t.clock_out,
       {cast(f"{rounded_quotient('t.seconds * 100', '3600')} / 100.0", 'NUMERIC(7, 2)')} AS hours_worked
FROM timed t
LEFT JOIN users u ON u.license = t.license AND u.id = t.user_id
"""  # noqa: S608 - constant SQL, no input


def liabilities() -> str:
    # CURRENT_DATE is the database's date: UTC on SQLite, the session's time zone on Postgres.
    return f"""
CREATE VIEW report_liabilities AS
SELECT license, 'gift_voucher' AS kind, NULL AS customer_id, NULL AS customer_name,
       COUNT(*) AS items, {money(cents('SUM(value)'))} AS amount
FROM gift_vouchers
WHERE deleted_at IS NULL AND (valid_until IS NULL OR valid_until >= CURRENT_DATE)
GROUP BY license
UNION ALL
SELECT cc.license, 'customer_credit', cc.customer_id,
       NULLIF(TRIM(COALESCE(cu.first_name, '') || ' ' || COALESCE(cu.name, '')), ''),
       COUNT(*), {money(cents('SUM(cc.value)'))}
FROM customer_credits cc
LEFT JOIN customers cu ON cu.license = cc.license AND cu.id = cc.customer_id
WHERE cc.deleted_at IS NULL
GROUP BY cc.license, cc.customer_id, cu.first_name, cu.name
HAVING SUM(cc.value) <> 0
"""  # noqa: S608 - constant SQL, no input


# --- the local reading of existing orders --------------------------------------------


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    # SQLite hands back the stored UTC time without its zone.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def fill_local_readings() -> None:
    """business_date, local_hour and local_weekday for orders stored before this revision.

    The same rule as syncer.parse (as of this revision): the local wall clock of
    ordered_at, or for a labour record of its clock-in (else ordered_at, else clock-out).
    """
    zone = ZoneInfo(context.config.attributes.get("timezone") or "Europe/Brussels")
    orders = sa.table(
        "orders", sa.column("license", sa.String), sa.column("id", sa.BigInteger),
        sa.column("ordered_at", _TIME),
        sa.column("clock_in", _TIME),
        sa.column("clock_out", _TIME),
        sa.column("business_date", sa.Date), sa.column("local_hour", sa.SmallInteger),
        sa.column("local_weekday", sa.SmallInteger),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(orders.c.license, orders.c.id, orders.c.ordered_at, orders.c.clock_in,
                  orders.c.clock_out)
        .where(orders.c.business_date.is_(None))
        .where(sa.or_(orders.c.ordered_at.is_not(None), orders.c.clock_in.is_not(None),
                      orders.c.clock_out.is_not(None)))
    ).all()
    updates = []
    for license, order_id, *times in rows:
        ordered_at, clock_in, clock_out = (_utc(t) for t in times)
        labour = clock_in is not None or clock_out is not None
        moments = (clock_in, ordered_at, clock_out) if labour else (ordered_at,)
        moment = next((m for m in moments if m is not None), None)
        if moment is None:
            continue
        local = moment.astimezone(zone)
        updates.append({"k_license": license, "k_id": order_id, "business_date": local.date(),
                        "local_hour": local.hour, "local_weekday": local.isoweekday()})
    statement = (
        orders.update()
        .where(orders.c.license == sa.bindparam("k_license"), orders.c.id == sa.bindparam("k_id"))
        .values(business_date=sa.bindparam("business_date"),
                local_hour=sa.bindparam("local_hour"),
                local_weekday=sa.bindparam("local_weekday"))
    )
    for start in range(0, len(updates), 5000):
        bind.execute(statement, updates[start:start + 5000])


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('business_date', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('local_hour', sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column('local_weekday', sa.SmallInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_orders_license_business_date'),
                              ['license', 'business_date'], unique=False)
    fill_local_readings()
    for create in (daily_sales, vat, payments, product_sales, hourly, labor, liabilities):
        op.execute(create())


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_license_business_date'))
        batch_op.drop_column('local_weekday')
        batch_op.drop_column('local_hour')
        batch_op.drop_column('business_date')
