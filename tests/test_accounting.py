"""The accountant's views (migration 0011): sales documents, VAT per month and quarter, the
daily receipts book, on hand-made rows whose figures are computed by hand, on SQLite and
on Postgres."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from syncer import reports
from syncer import tables as t
from tests.test_reports import NOW, put_order

D = Decimal
NOV = dt.date(2026, 11, 3)
INVOICE, QUOTE, CREDIT_NOTE = 1, 2, 3


def put_document(conn: Any, doc_id: int, day: dt.date, doc_type: int, total: str,
                 lines: list[tuple[str, str, str]], *, from_vat_ticket: bool = False) -> None:
    """A sales document with lines (quantity, price incl. VAT, rate)."""
    conn.execute(insert(t.invoices).values(
        license="shop", id=doc_id, invoice_date=day, number=f"D{doc_id}", doc_type=doc_type,
        total_price=D(total), from_vat_ticket=from_vat_ticket, content_hash="0" * 32,
        synced_at=NOW))
    for line_no, (quantity, price, rate) in enumerate(lines, start=1):
        conn.execute(insert(t.invoice_lines).values(
            license="shop", invoice_id=doc_id, line_no=line_no, quantity=D(quantity),
            product_name=f"p{line_no}", price=D(price), tax_rate=D(rate), synced_at=NOW))


@pytest.fixture
def books(engine: Engine) -> Engine:
    """One ticket, and a document of each kind, with figures worked out by hand below."""
    with engine.begin() as conn:
        # The ticket of a sale at the till, 4.50 at 21 %, paid cash ...
        put_order(conn, 1, NOV, lines=[("1", "4.50", "21", [])], total_price=D("4.50"))
        conn.execute(insert(t.order_payments).values(license="shop", order_id=1, method="cash",
                                                     amount=D("4.50"), synced_at=NOW))
        # ... and the invoice the customer asked for afterwards, made from that VAT ticket.
        put_document(conn, 5, NOV, INVOICE, "4.50", [("1", "4.50", "21")], from_vat_ticket=True)
        # An invoice: 2 x 10.00 at 21 % (20.00: base 16.53, VAT 3.47) and 5.30 at 6 %
        # (base 5.00, VAT 0.30).
        put_document(conn, 1, NOV, INVOICE, "25.30", [("2", "10.00", "21"), ("1", "5.30", "6")])
        # Credit notes, as the API gives them (negative quantities) and with positive amounts:
        # both count negative. 10.00 at 21 %: base 8.26, VAT 1.74.
        put_document(conn, 2, NOV, CREDIT_NOTE, "-10.00", [("-1", "10.00", "21")])
        put_document(conn, 3, NOV, CREDIT_NOTE, "5.30", [("1", "5.30", "6")])
        # A quote is not a sale.
        put_document(conn, 4, NOV, QUOTE, "36.00", [("3", "12.00", "12")])
        # Invoices in December and in September (another month, another quarter).
        put_document(conn, 6, dt.date(2026, 12, 31), INVOICE, "1.06", [("1", "1.06", "6")])
        put_document(conn, 7, dt.date(2026, 9, 30), INVOICE, "1.12", [("1", "1.12", "12")])
    return engine


def rows(engine: Engine, name: str, *columns: str) -> list[tuple[Any, ...]]:
    return [tuple(row[c] for c in columns) for row in reports.fetch(engine, reports.get(name))]


def test_documents_say_which_count_and_a_credit_note_counts_negative(books: Engine) -> None:
    assert rows(books, "documents", "day", "document_id", "kind", "counted_as", "lines", "total",
                "base", "vat", "difference") == [
        (dt.date(2026, 9, 30), 7, "invoice", "turnover", 1, D("1.12"), D("1.00"), D("0.12"), D("0.00")),
        (NOV, 1, "invoice", "turnover", 2, D("25.30"), D("21.53"), D("3.77"), D("0.00")),
        (NOV, 2, "credit_note", "turnover", 1, D("-10.00"), D("-8.26"), D("-1.74"), D("0.00")),
        (NOV, 3, "credit_note", "turnover", 1, D("-5.30"), D("-5.00"), D("-0.30"), D("0.00")),
        (NOV, 4, "quote", "not_a_sale", 1, D("36.00"), D("32.14"), D("3.86"), D("0.00")),
        (NOV, 5, "invoice", "in_tickets", 1, D("4.50"), D("3.72"), D("0.78"), D("0.00")),
        (dt.date(2026, 12, 31), 6, "invoice", "turnover", 1, D("1.06"), D("1.00"), D("0.06"), D("0.00")),
    ]


def test_tickets_plus_documents_count_every_sale_once(books: Engine) -> None:
    """Turnover of 3 November: the ticket (4.50; its invoice 5 is not added again), the
    invoice (25.30) less the credit notes (10.00 and 5.30); the quote (36.00) is none."""
    tickets = sum(r["total"] for r in reports.fetch(books, reports.get("vat"), since=NOV, until=NOV))
    documents = reports.fetch(books, reports.get("document_vat"), since=NOV, until=NOV)
    assert [(r["document_id"], r["tax_rate"], r["base"], r["vat"], r["total"]) for r in documents] == [
        (1, D(6), D("5.00"), D("0.30"), D("5.30")),
        (1, D(21), D("16.53"), D("3.47"), D("20.00")),
        (2, D(21), D("-8.26"), D("-1.74"), D("-10.00")),
        (3, D(6), D("-5.00"), D("-0.30"), D("-5.30")),
    ]
    assert tickets + sum(r["total"] for r in documents) == D("14.50")


def test_vat_per_month_and_quarter_names_the_boxes_it_feeds(books: Engine) -> None:
    columns = ("period", "period_start", "source", "tax_rate", "base_grid", "vat_grid", "items",
               "base", "vat", "total")
    november = [
        ("credit_notes", D(6), "49", "64", 1, D("-5.00"), D("-0.30"), D("-5.30")),
        ("credit_notes", D(21), "49", "64", 1, D("-8.26"), D("-1.74"), D("-10.00")),
        ("invoices", D(6), "01", "54", 1, D("5.00"), D("0.30"), D("5.30")),
        ("invoices", D(21), "03", "54", 1, D("16.53"), D("3.47"), D("20.00")),
        ("tickets", D(21), "03", "54", 1, D("3.72"), D("0.78"), D("4.50")),
    ]
    assert rows(books, "vat_month", *columns) == [
        ("2026-09", dt.date(2026, 9, 1), "invoices", D(12), "02", "54", 1, D("1.00"), D("0.12"), D("1.12")),
        *(("2026-11", dt.date(2026, 11, 1), *row) for row in november),
        ("2026-12", dt.date(2026, 12, 1), "invoices", D(6), "01", "54", 1, D("1.00"), D("0.06"), D("1.06")),
    ]
    q4 = [row if row[:2] != ("invoices", D(6)) else
          ("invoices", D(6), "01", "54", 2, D("6.00"), D("0.36"), D("6.36")) for row in november]
    assert rows(books, "vat_quarter", *columns) == [
        ("2026-Q3", dt.date(2026, 7, 1), "invoices", D(12), "02", "54", 1, D("1.00"), D("0.12"), D("1.12")),
        *(("2026-Q4", dt.date(2026, 10, 1), *row) for row in q4),
    ]


def test_a_rate_without_an_unambiguous_box_has_none(engine: Engine) -> None:
    with engine.begin() as conn:
        put_order(conn, 1, NOV, lines=[("1", "1.00", "0", []), ("1", "1.055", "5.5", [])],
                  total_price=D("2.06"))
    assert rows(engine, "vat_month", "tax_rate", "base_grid", "vat_grid", "total") == [
        (D(0), None, None, D("1.00")), (D("5.5"), None, None, D("1.06"))]


def test_the_receipts_book_is_turnover_per_rate_and_payments_per_method(books: Engine) -> None:
    assert rows(books, "receipts_book", "day", "position", "tax_rate", "method", "tickets", "base",
                "vat", "amount") == [
        (NOV, 1, D(21), None, 1, D("3.72"), D("0.78"), D("4.50")),
        (NOV, 2, None, "cash", 1, None, None, D("4.50")),
    ]
