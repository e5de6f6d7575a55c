"""an accountant's views: sales documents, VAT per month and quarter, the daily receipts book

Revision ID: 0011_accounting_views
Revises: 0010_daemon_truth
Create Date: 2026-12-06 20:00:00

The rules (docs/reporting.md, "For the accountant"):

- a sales document (`invoices`: doc_type 1 invoice, 2 quote, 3 credit note) counts as
  turnover when it is an invoice or a credit note that was not made from a VAT ticket.
  A quote is not a sale. A document made from a VAT ticket (`from_vat_ticket`) repeats a
  sale the till already counted as a ticket: it is listed, never added again. A document
  of an unknown type is listed and not counted;
- a credit note counts negative, whichever sign the API gives it: when its total (or,
  without a total, its lines) is positive, every amount of it is negated;
- VAT per document and rate as per ticket (0006): the lines at that rate summed exactly
  and rounded to the cent, the base `round(gross / (1 + rate/100))`, VAT the rest;
- a document counts on its own date (`invoice_date`); a ticket on its business day;
- the periods (month, quarter) are calendar periods of those days. Where the mapping is
  unambiguous, a row names the box of the Belgian periodic VAT return (form 625) it feeds:
  bases at 6, 12 and 21 % of tickets and invoices in grids 01, 02 and 03, their VAT in
  grid 54; credit notes issued in grid 49 and their VAT in grid 64. Any other rate: none.

Amounts in whole cents with integer arithmetic, with the building blocks of 0002.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0011_accounting_views"
down_revision = "0010_daemon_truth"
branch_labels = None
depends_on = None


def _revision(name: str) -> ModuleType:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"syncer_migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R2 = _revision("0002_report_views")
R6 = _revision("0006_reconciled_reports")
cents, money, base_cents, _sum = R2.cents, R2.money, R2.base_cents, R6._sum

# Dependents first: a view is dropped before the views it reads.
VIEWS = ("report_vat_quarter", "report_vat_month", "report_receipts_book",
         "report_document_vat", "report_documents")

INVOICE, QUOTE, CREDIT_NOTE = 1, 2, 3


def _dialect() -> str:
    return str(op.get_bind().dialect.name)


def month_start(day: str) -> str:
    """The first day of `day`'s month, as a date."""
    name = _dialect()
    if name == "sqlite":
        return f"date({day}, 'start of month')"
    if name in ("mysql", "mariadb"):
        return f"({day} - INTERVAL (DAYOFMONTH({day}) - 1) DAY)"
    return f"CAST(date_trunc('month', {day}) AS DATE)"


def quarter_start(day: str) -> str:
    """The first day of `day`'s calendar quarter, as a date."""
    name = _dialect()
    if name == "sqlite":
        return (f"date({day}, 'start of month', '-' || "
                f"((CAST(strftime('%m', {day}) AS INTEGER) - 1) % 3) || ' months')")
    if name in ("mysql", "mariadb"):
        return f"(MAKEDATE(YEAR({day}), 1) + INTERVAL (QUARTER({day}) - 1) QUARTER)"
    return f"CAST(date_trunc('quarter', {day}) AS DATE)"


def month_label(start: str) -> str:
    """'2026-11' of a month's first day."""
    name = _dialect()
    if name == "sqlite":
        return f"strftime('%Y-%m', {start})"
    if name in ("mysql", "mariadb"):
        return f"DATE_FORMAT({start}, '%Y-%m')"
    return f"to_char({start}, 'YYYY-MM')"


def quarter_label(start: str) -> str:
    """'2026-Q4' of a quarter's first day."""
    name = _dialect()
    if name == "sqlite":
        return (f"(strftime('%Y', {start}) || '-Q' || "
                f"((CAST(strftime('%m', {start}) AS INTEGER) + 2) / 3))")
    if name in ("mysql", "mariadb"):
        return f"CONCAT(YEAR({start}), '-Q', QUARTER({start}))"
    return f"to_char({start}, 'YYYY-\"Q\"Q')"


def _documents() -> str:
    """CTEs `doc_rates` (per document and rate, its lines' gross in cents) and `docs` (per
    document: its kind, whether it counts, the sign it counts with, its cents)."""
    return f"""
doc_rates AS (
    SELECT license, invoice_id, tax_rate, COUNT(*) AS n,
           {cents('SUM(quantity * price)')} AS gross_cents
    FROM invoice_lines
    GROUP BY license, invoice_id, tax_rate
),
doc_lines AS (
    SELECT license, invoice_id, SUM(n) AS n, SUM(gross_cents) AS gross_cents,
           SUM({base_cents('gross_cents', 'tax_rate')}) AS base_cents
    FROM doc_rates
    GROUP BY license, invoice_id
),
docs AS (
    SELECT i.license, i.id, i.invoice_date, i.number, i.customer_id,
           CASE i.doc_type WHEN {INVOICE} THEN 'invoice' WHEN {QUOTE} THEN 'quote'
                WHEN {CREDIT_NOTE} THEN 'credit_note' ELSE 'unknown' END AS kind,
           CASE WHEN i.doc_type = {QUOTE} THEN 'not_a_sale'
                WHEN i.doc_type IS NULL OR i.doc_type NOT IN ({INVOICE}, {CREDIT_NOTE})
                     THEN 'unknown_type'
                WHEN i.from_vat_ticket THEN 'in_tickets'
                ELSE 'turnover' END AS counted_as,
           CASE WHEN i.doc_type = {CREDIT_NOTE}
                     AND COALESCE({cents('i.total_price')}, l.gross_cents, 0) > 0
                THEN -1 ELSE 1 END AS sign,
           {cents('i.total_price')} AS total_cents,
           COALESCE(l.n, 0) AS n, COALESCE(l.gross_cents, 0) AS gross_cents,
           COALESCE(l.base_cents, 0) AS base_cents
    FROM invoices i
    LEFT JOIN doc_lines l ON l.license = i.license AND l.invoice_id = i.id
)"""  # noqa: S608 - constant SQL, no input


def documents() -> str:
    # "lines" is quoted: a reserved word of MariaDB/MySQL.
    return f"""
CREATE VIEW report_documents AS
WITH {_documents()}
SELECT license, invoice_date AS day, id AS document_id, number, kind, counted_as,
       customer_id, n AS "lines",
       {money('sign * total_cents')} AS total,
       {money('sign * gross_cents')} AS lines_total,
       {money('sign * base_cents')} AS base,
       {money('sign * (gross_cents - base_cents)')} AS vat,
       {money('sign * (total_cents - gross_cents)')} AS difference
FROM docs
"""  # noqa: S608 - constant SQL, no input


def document_vat() -> str:
    return f"""
CREATE VIEW report_document_vat AS
WITH {_documents()},
signed AS (
    SELECT d.license, d.invoice_date AS day, d.id AS document_id, d.number, d.kind,
           r.tax_rate, d.sign * r.gross_cents AS gross_cents
    FROM docs d
    JOIN doc_rates r ON r.license = d.license AND r.invoice_id = d.id
    WHERE d.counted_as = 'turnover'
)
SELECT license, day, document_id, number, kind, tax_rate,
       {money(base_cents('gross_cents', 'tax_rate'))} AS base,
       {money(f"gross_cents - {base_cents('gross_cents', 'tax_rate')}")} AS vat,
       {money('gross_cents')} AS total
FROM signed
"""  # noqa: S608 - constant SQL, no input


def receipts_book() -> str:
    # Per business day, as the daily receipts book lists it: position 1 the turnover per
    # VAT rate, 2 the payments per method, of the tickets.
    return f"""
CREATE VIEW report_receipts_book AS
SELECT license, day, 1 AS position, tax_rate, NULL AS method, COUNT(DISTINCT order_id) AS tickets,
       {_sum('base')} AS base, {_sum('vat')} AS vat, {_sum('total')} AS amount
FROM report_ticket_vat
GROUP BY license, day, tax_rate
UNION ALL
SELECT license, day, 2, NULL, method, COUNT(DISTINCT order_id), NULL, NULL, {_sum('amount')}
FROM report_ticket_payments
GROUP BY license, day, method
"""  # noqa: S608 - constant SQL, no input


def _grid(source: str, rate: str, tickets_and_invoices: tuple[str, str, str], notes: str) -> str:
    """The box of the periodic VAT return a row feeds; NULL where no box is unambiguous."""
    six, twelve, twenty_one = tickets_and_invoices
    return (f"CASE WHEN {rate} NOT IN (6, 12, 21) THEN NULL "
            f"WHEN {source} = 'credit_notes' THEN {notes} "
            f"WHEN {rate} = 6 THEN {six} WHEN {rate} = 12 THEN {twelve} ELSE {twenty_one} END")


def vat_period(name: str, start: Callable[[str], str], label: Callable[[str], str]) -> str:
    """VAT per rate per period (its first day from `start`, its name from `label`), tickets,
    invoices and credit notes apart."""
    return f"""
CREATE VIEW {name} AS
WITH rows_ AS (
    SELECT license, day, 'tickets' AS source, order_id AS item, tax_rate, base, vat, total
    FROM report_ticket_vat
    UNION ALL
    SELECT license, day, CASE WHEN kind = 'credit_note' THEN 'credit_notes' ELSE 'invoices' END,
           document_id, tax_rate, base, vat, total
    FROM report_document_vat
),
periods AS (
    SELECT license, {start('day')} AS period_start, source, item, tax_rate, base, vat, total
    FROM rows_
)
SELECT license, {label('period_start')} AS period, period_start, source, tax_rate,
       {_grid("source", "tax_rate", ("'01'", "'02'", "'03'"), "'49'")} AS base_grid,
       {_grid("source", "tax_rate", ("'54'", "'54'", "'54'"), "'64'")} AS vat_grid,
       COUNT(DISTINCT item) AS items, {_sum('base')} AS base, {_sum('vat')} AS vat,
       {_sum('total')} AS total
FROM periods
GROUP BY license, period_start, source, tax_rate
"""  # noqa: S608 - constant SQL, no input


def upgrade() -> None:
    op.execute(documents())
    op.execute(document_vat())
    op.execute(receipts_book())
    op.execute(vat_period("report_vat_month", month_start, month_label))
    op.execute(vat_period("report_vat_quarter", quarter_start, quarter_label))


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
