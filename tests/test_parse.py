"""Parsing recorded-looking API records into whole rows, ugly cases included."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, BigInteger, Boolean, Date, Integer, Numeric, SmallInteger, String, Table

from syncer import tables
from syncer.dialects.types import UtcDateTime
from syncer.parse import (
    ParseContext,
    ParseError,
    Rows,
    _decimal,
    _decimal_checked,
    parse_category,
    parse_coupon,
    parse_customer,
    parse_customer_credit,
    parse_gift_voucher,
    parse_invoice,
    parse_order,
    parse_payment_method,
    parse_pos_table,
    parse_printer,
    parse_product,
    parse_subproduct,
    parse_user,
)
from syncer.resources import RESOURCES, Resource

FIXTURES = Path(__file__).parent / "fixtures" / "parse"
CTX = ParseContext(tz=ZoneInfo("Europe/Brussels"), secnr_key=b"test-hash-key")
D = Decimal
MODTIME = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)  # modtime 1764325800
BOOKKEEPING = {"license", "synced_at", "deleted_at"}


def raw(resource: str, case: str) -> dict[str, Any]:
    """One recorded record from tests/fixtures/parse/{resource}.json."""
    records: dict[str, dict[str, Any]] = json.loads((FIXTURES / f"{resource}.json").read_text())
    return records[case]


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


class _Md5Hex:
    """Equal to any md5 hex digest; the exact value is pinned by its own test."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"[0-9a-f]{32}", other) is not None

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<md5 hex>"


MD5 = _Md5Hex()


# --- simple resources -------------------------------------------------------------


def test_categories_take_ids_as_strings_or_numbers_and_keep_unknown_fields() -> None:
    assert parse_category(raw("categories", "strings"), CTX) == Rows(
        {"id": 3, "name": "Dranken", "extra": None}
    )
    # `success` leaks in from the envelope: known, ignored, not extra.
    assert parse_category(raw("categories", "numbers_and_unknown_fields"), CTX) == Rows(
        {"id": 4, "name": "Warme gerechten", "extra": {"color": "#ff0000", "sort": 2}}
    )
    assert parse_category(raw("categories", "empty_name"), CTX) == Rows(
        {"id": 5, "name": None, "extra": None}
    )


def test_products_read_strings_decimal_commas_and_numbers_alike() -> None:
    assert parse_product(raw("products", "strings"), CTX) == Rows({
        "id": 101, "name": "Cola 33cl", "category_id": 3, "price": D("2.80"),
        "quantity": D(24), "has_popup": False, "has_menu_popup": True,
        "has_open_price": False, "modified_at": MODTIME, "extra": None,
    })
    assert parse_product(raw("products", "numbers"), CTX) == Rows({
        "id": 102, "name": "Spaghetti bolognese", "category_id": None, "price": D("14.5"),
        "quantity": D(-2), "has_popup": True, "has_menu_popup": False,
        "has_open_price": True, "modified_at": MODTIME, "extra": None,
    })


_NUMBER_TEXT = st.from_regex(r"-?[0-9]{1,13}(\.[0-9]{0,6})?", fullmatch=True)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_NUMBER_TEXT, _NUMBER_TEXT.map(Decimal), st.integers(-(10**13), 10**13),
                 st.decimals(allow_nan=False, allow_infinity=False, places=5)),
       st.sampled_from([(tables.MONEY_PRECISION, tables.MONEY_SCALE),
                        (tables.RATE_PRECISION, tables.RATE_SCALE)]))
def test_the_fast_number_path_agrees_with_the_checked_one(value: Any, numeric: tuple[int, int]) -> None:
    """Same Decimal, same digits (or the same refusal) on both paths; equal numbers
    written differently ("12.50", "12.5", 12.5) must never look like a change."""
    precision, scale = numeric

    def outcome(read: Any) -> Any:
        try:
            number = read(value, "x", precision, scale)
        except ParseError as exc:
            return str(exc)
        return None if number is None else number.as_tuple()

    assert outcome(_decimal) == outcome(_decimal_checked)


def test_empty_strings_are_null_and_unknown_fields_go_to_extra() -> None:
    assert parse_product(raw("products", "empty_values_and_unknown_field"), CTX) == Rows({
        "id": 103, "name": None, "category_id": None, "price": None, "quantity": None,
        "has_popup": None, "has_menu_popup": None, "has_open_price": None,
        "modified_at": None, "extra": {"barcode": "5449000000996"},
    })


def links(subproduct_id: int, *product_ids: int) -> dict[str, list[dict[str, Any]]]:
    return {"product_subproducts": [
        {"product_id": product_id, "subproduct_id": subproduct_id} for product_id in product_ids
    ]}


def test_subproduct_links_come_as_array_string_json_or_keyed_object() -> None:
    assert parse_subproduct(raw("subproducts", "array_with_duplicates"), CTX) == Rows(
        {"id": 201, "name": "Extra kaas", "price": D(1), "quantity": None,
         "modified_at": MODTIME, "extra": None},
        links(201, 101, 102),
    )
    assert parse_subproduct(raw("subproducts", "comma_string"), CTX) == Rows(
        {"id": 202, "name": "Saus", "price": D("0.5"), "quantity": D(10),
         "modified_at": MODTIME, "extra": None},
        links(202, 101, 102),
    )
    assert parse_subproduct(raw("subproducts", "json_string"), CTX) == Rows(
        {"id": 203, "name": "Bacon", "price": D("1.5"), "quantity": D(0),
         "modified_at": MODTIME, "extra": None},
        links(203, 101, 102),
    )
    assert parse_subproduct(raw("subproducts", "keyed_array"), CTX) == Rows(
        {"id": 204, "name": "Ui", "price": D(0), "quantity": None,
         "modified_at": MODTIME, "extra": None},
        links(204, 101, 102),
    )


def test_unlinked_subproduct_still_has_its_child_table_empty() -> None:
    # The loader replaces children per parent: an empty list removes old links.
    assert parse_subproduct(raw("subproducts", "unlinked"), CTX) == Rows(
        {"id": 205, "name": "Los", "price": None, "quantity": None,
         "modified_at": None, "extra": None},
        {"product_subproducts": []},
    )


def test_customer_text_fields_keep_leading_zeros_and_numbers_become_text() -> None:
    assert parse_customer(raw("customers", "full"), CTX) == Rows({
        "id": 42, "name": "Peeters", "first_name": "An", "company_name": "Peeters BV",
        "street_number": "Veldstraat 1", "phone": "0471234567", "zipcode": "9000",
        "town": "Gent", "vat_number": "BE0123456789", "email": "an@example.be",
        "tag_id": "04AB12", "tag_type": "rfid", "tag_family_id": 3,
        "modified_at": MODTIME, "extra": {"birthday": "1980-02-29"},
    })
    assert parse_customer(raw("customers", "sparse_with_firstname_spelling"), CTX) == Rows({
        "id": 43, "name": "Janssens", "first_name": "Jan", "company_name": None,
        "street_number": None, "phone": "471234567", "zipcode": "0", "town": None,
        "vat_number": None, "email": None, "tag_id": "1234", "tag_type": None,
        "tag_family_id": None, "modified_at": None, "extra": None,
    })


def test_national_number_is_hashed_and_stored_only_when_the_config_asks() -> None:
    record = raw("users", "with_national_number")
    digest = hmac.new(b"test-hash-key", b"85073003361", hashlib.sha256).hexdigest()
    assert parse_user(record, CTX) == Rows({
        "id": 1, "username": "Kassa 1", "is_admin": True,
        "secnr_hash": digest, "national_number": None, "extra": None,
    })
    storing = ParseContext(tz=CTX.tz, secnr_key=CTX.secnr_key, store_national_number=True)
    assert parse_user(record, storing) == Rows({
        "id": 1, "username": "Kassa 1", "is_admin": True,
        "secnr_hash": digest, "national_number": "85.07.30-033.61", "extra": None,
    })
    # Only the digits count: the same number written without dots hashes the same.
    assert parse_user({**record, "secnr": "85073003361"}, CTX).parent["secnr_hash"] == digest
    assert parse_user(raw("users", "without"), storing) == Rows({
        "id": 2, "username": "Jan", "is_admin": False,
        "secnr_hash": None, "national_number": None, "extra": None,
    })


def test_tables_payment_methods_and_printers() -> None:
    assert parse_pos_table(raw("pos_tables", "strings"), CTX) == Rows(
        {"id": 7, "table_number": "12A", "status": 1, "extra": None}
    )
    assert parse_pos_table(raw("pos_tables", "numbers"), CTX) == Rows(
        {"id": 8, "table_number": "14", "status": 2, "extra": None}
    )
    assert parse_payment_method(raw("payment_methods", "cash"), CTX) == Rows(
        {"id": 1, "name": "Cash", "extra": None}
    )
    assert parse_printer(raw("printers", "kitchen"), CTX) == Rows(
        {"id": 1, "name": "Keuken", "extra": {"ip": "192.168.1.50"}}
    )


def test_gift_voucher_dates_drop_the_time_and_zero_dates_are_null() -> None:
    assert parse_gift_voucher(raw("gift_vouchers", "dated"), CTX) == Rows({
        "id": 9, "barcode": "2000000000091", "value": D(25),
        "valid_from": dt.date(2026, 1, 1), "valid_until": dt.date(2026, 12, 31),
        "modified_at": MODTIME, "extra": None,
    })
    assert parse_gift_voucher(raw("gift_vouchers", "zero_dates"), CTX) == Rows({
        "id": 10, "barcode": "2000000000107", "value": D(50),
        "valid_from": None, "valid_until": None, "modified_at": MODTIME, "extra": None,
    })


def test_coupons() -> None:
    assert parse_coupon(raw("coupons", "percent_unused"), CTX) == Rows({
        "id": 11, "barcode": "COUPON11", "value": D(10), "value_type": 2,
        "valid_from": dt.date(2026, 1, 1), "valid_until": None, "is_used": False,
        "extra": None,
    })
    assert parse_coupon(raw("coupons", "money_used"), CTX) == Rows({
        "id": 12, "barcode": "COUPON12", "value": D("5.5"), "value_type": 1,
        "valid_from": None, "valid_until": dt.date(2026, 6, 30), "is_used": True,
        "extra": None,
    })


def test_customer_credit_without_tag_is_keyed_by_empty_tag() -> None:
    assert parse_customer_credit(raw("customer_credits", "without_tag"), CTX) == Rows(
        {"customer_id": 42, "tag_id": "", "value": D("15.5"), "tag_type": None, "extra": None}
    )
    assert parse_customer_credit(raw("customer_credits", "numeric_tag"), CTX) == Rows(
        {"customer_id": 43, "tag_id": "4321", "value": D(5), "tag_type": "barcode",
         "extra": None}
    )
    assert parse_customer_credit({"customerid": "44", "value": "1"}, CTX) == Rows(
        {"customer_id": 44, "tag_id": "", "value": D(1), "tag_type": None, "extra": None}
    )


def test_customer_credit_top_up_fields_go_to_extra() -> None:
    assert parse_customer_credit(raw("customer_credits", "top_up"), CTX) == Rows({
        "customer_id": 42, "tag_id": "04AB12", "value": D(10), "tag_type": "rfid",
        "extra": {"id": "7", "productid": "101", "categoryid": "3"},
    })


# --- orders -------------------------------------------------------------------------

SALE = Rows(
    {
        "id": 5001, "customer_id": None, "register_id": 2, "user_id": 5,
        "total_price": D("32.50"), "ordered_at": utc(2026, 6, 12, 17, 45, 10),
        "clock_in": None, "clock_out": None, "content_hash": MD5, "extra": {"tablenr": "12"},
        "business_date": dt.date(2026, 6, 12), "local_hour": 19, "local_weekday": 5,
        "local_minute": 45,
    },
    {
        "order_lines": [
            {"order_id": 5001, "line_no": 1, "quantity": D(2), "product_id": 102,
             "price": D("14.50"), "tax_rate": D(12), "extra": None},
            {"order_id": 5001, "line_no": 2, "quantity": D(1), "product_id": 101,
             "price": D("2.80"), "tax_rate": D(21), "extra": {"comment": "zonder ijs"}},
        ],
        "order_line_subproducts": [
            {"order_id": 5001, "line_no": 1, "slot": 1, "subproduct_id": 201,
             "price": D(1), "tax_rate": D(12)},
            {"order_id": 5001, "line_no": 1, "slot": 7, "subproduct_id": 203,
             "price": D("1.50"), "tax_rate": D(12)},
        ],
        "order_payments": [
            {"order_id": 5001, "method": "cash", "amount": D(20)},
            {"order_id": 5001, "method": "bancontact", "amount": D("12.50")},
        ],
    },
)


def test_order_with_subproduct_slots_1_and_7_and_zero_payments_left_out() -> None:
    assert parse_order(raw("orders", "sale"), CTX) == SALE


def test_order_sent_with_numbers_and_keyed_lines_gives_the_same_rows_and_hash() -> None:
    # Three payment columns, visa at 0; lines keyed "1", "0" are read in key order.
    as_strings = parse_order(raw("orders", "sale"), CTX)
    as_numbers = parse_order(raw("orders", "sale_as_numbers"), CTX)
    assert as_numbers == SALE
    assert as_numbers.parent["content_hash"] == as_strings.parent["content_hash"]


def test_labour_record_is_an_order_with_clock_times_and_no_children() -> None:
    assert parse_order(raw("orders", "labour_record"), CTX) == Rows(
        {
            "id": 5002, "customer_id": None, "register_id": 1, "user_id": 5,
            "total_price": D(0), "ordered_at": None,
            "clock_in": utc(2026, 6, 12, 6, 0), "clock_out": utc(2026, 6, 12, 14, 30),
            "content_hash": MD5, "extra": None,
            # A labour record counts on the local day (and hour) its shift began.
            "business_date": dt.date(2026, 6, 12), "local_hour": 8, "local_weekday": 5,
            "local_minute": 0,
        },
        {"order_lines": [], "order_line_subproducts": [], "order_payments": []},
    )


def test_local_time_in_the_spring_gap_is_shifted_forward() -> None:
    # 02:30 does not exist on 2026-03-29 in Brussels; fold=0 reads it as 03:30 CEST.
    assert parse_order(raw("orders", "in_spring_gap"), CTX) == Rows(
        {
            "id": 5003, "customer_id": None, "register_id": None, "user_id": None,
            "total_price": D(3), "ordered_at": utc(2026, 3, 29, 1, 30),
            "clock_in": None, "clock_out": None, "content_hash": MD5, "extra": None,
            "business_date": dt.date(2026, 3, 29), "local_hour": 3, "local_weekday": 7,
            "local_minute": 30,
        },
        {"order_lines": [], "order_line_subproducts": [],
         "order_payments": [{"order_id": 5003, "method": "voucher", "amount": D(3)}]},
    )


def test_ambiguous_autumn_local_time_takes_its_first_occurrence() -> None:
    # 02:30 happens twice on 2026-10-25; fold=0 is the first one, still CEST (+02:00).
    assert parse_order(raw("orders", "in_autumn_overlap"), CTX) == Rows(
        {
            "id": 5004, "customer_id": None, "register_id": None, "user_id": None,
            "total_price": D(-3), "ordered_at": utc(2026, 10, 25, 0, 30),
            "clock_in": None, "clock_out": None, "content_hash": MD5, "extra": None,
            "business_date": dt.date(2026, 10, 25), "local_hour": 2, "local_weekday": 7,
            "local_minute": 30,
        },
        {"order_lines": [], "order_line_subproducts": [],
         "order_payments": [{"order_id": 5004, "method": "cash", "amount": D(-3)}]},
    )


@pytest.mark.parametrize(
    ("record", "reading"),
    [
        # 00:30 local is still the previous day in UTC: the local day counts.
        ({"ordertime": "2026-06-13 00:30:00"}, (dt.date(2026, 6, 13), 0, 6, 30)),
        ({"ordertime": "2026-01-12 23:59:59"}, (dt.date(2026, 1, 12), 23, 1, 59)),
        # A night shift counts on the day it began, whatever its ordertime says.
        ({"ordertime": "2026-06-13 02:00:00", "clockin": "2026-06-12 22:00:00",
          "clockout": "2026-06-13 02:00:00"}, (dt.date(2026, 6, 12), 22, 5, 0)),
        ({"clockout": "2026-06-13 02:00:00"}, (dt.date(2026, 6, 13), 2, 6, 0)),
        ({"ordertime": ""}, (None, None, None, None)),
    ],
)
def test_local_day_hour_minute_and_weekday_of_an_order(
    record: dict[str, Any], reading: tuple[Any, ...]
) -> None:
    parent = parse_order({"id": "1", **record}, CTX).parent
    assert (parent["business_date"], parent["local_hour"], parent["local_weekday"],
            parent["local_minute"]) == reading


def test_local_reading_is_the_wall_clock_of_the_configured_zone() -> None:
    record = {"id": "1", "ordertime": "2026-06-12 23:30:00"}
    brussels = parse_order(record, CTX).parent
    tokyo = parse_order(record, ParseContext(tz=ZoneInfo("Asia/Tokyo"), secnr_key=b"k")).parent
    assert brussels["ordered_at"] != tokyo["ordered_at"]
    for parent in (brussels, tokyo):
        assert (parent["business_date"], parent["local_hour"], parent["local_weekday"]) == (
            dt.date(2026, 6, 12), 23, 5)


def test_content_hash_is_md5_of_the_canonical_parsed_record() -> None:
    rows = parse_invoice({"id": "1", "totalprice": "12,50", "date": "2026-06-12"}, CTX)
    canonical = (
        '{"children":{"invoice_lines":[]},"parent":{"customer_id":null,"doc_type":null,'
        '"due_date":null,"extra":null,"from_vat_ticket":null,"id":1,'
        '"invoice_date":"2026-06-12","note":null,"number":null,"total_price":"12.5"}}'
    )
    assert rows.parent["content_hash"] == hashlib.md5(canonical.encode()).hexdigest()


_LINE_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=12),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: {"n": [f]}))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["quantity", "productid", "productprice",
                                                 "note", "comment", "ünïcode", "del\x7f"]),
                                _LINE_VALUE, max_size=5), max_size=3),
       st.text(max_size=12), st.integers(1, 2**40))
def test_the_content_hash_is_the_json_dumps_one_however_it_is_written(
        lines: list[dict[str, Any]], note: str, order_id: int) -> None:
    """The fast canonical text (msgspec) is byte for byte json.dumps's, or json.dumps
    writes it: the hashes stored by earlier versions stay valid (no row rewritten)."""
    from syncer.parse import _canonical

    record = {"id": order_id, "ordertime": "2026-03-29 02:30:00", "totalprice": "12,50",
              "orderdetail": lines, "note": note, "modtime": 1764325800}
    try:
        rows = parse_order(record, CTX)
    except ParseError:
        return
    parent = {k: v for k, v in rows.parent.items()
              if k not in ("content_hash", "business_date", "local_hour", "local_weekday", "local_minute")}
    reference = json.dumps({"parent": parent, "children": rows.children}, sort_keys=True,
                           separators=(",", ":"), default=_canonical)
    assert rows.parent["content_hash"] == hashlib.md5(reference.encode()).hexdigest()


def _changed(record: dict[str, Any], change: str) -> dict[str, Any]:
    """A copy of the sale with one thing changed."""
    record = json.loads(json.dumps(record))
    lines = record["orderdetail"]
    match change:
        case "line quantity":
            lines[1]["quantity"] = "3"
        case "line tax":
            lines[1]["producttax"] = "6"
        case "slot price":
            lines[0]["subproduct7price"] = "1.60"
        case "slot moved":
            lines[0]["subproduct8id"], lines[0]["subproduct7id"] = "203", ""
        case "line extra":
            lines[1]["comment"] = "met ijs"
        case "line dropped":
            del lines[1]
        case "lines swapped":
            lines.reverse()
        case "payment added":
            record["visapayment"] = "0.01"
        case "payment moved":
            record["cashpayment"], record["voucherpayment"] = "0.00", "20.00"
        case "order time":
            record["ordertime"] = "2026-06-12 19:45:11"
        case "order extra":
            record["tablenr"] = "13"
    return record


HASH_CHANGES = [
    "line quantity", "line tax", "slot price", "slot moved", "line extra", "line dropped",
    "lines swapped", "payment added", "payment moved", "order time", "order extra",
]


def test_content_hash_changes_with_any_line_slot_or_payment() -> None:
    sale = raw("orders", "sale")
    original = parse_order(sale, CTX).parent["content_hash"]
    hashes = {change: parse_order(_changed(sale, change), CTX).parent["content_hash"]
              for change in HASH_CHANGES}
    assert original not in hashes.values()
    assert len(set(hashes.values())) == len(HASH_CHANGES)


def test_lines_keyed_by_position_are_read_in_numeric_order() -> None:
    keyed = {str(n): {"quantity": "1", "productid": str(100 + n)} for n in reversed(range(12))}
    rows = parse_order({"id": "1", "orderdetail": keyed}, CTX)
    assert [(line["line_no"], line["product_id"]) for line in rows.children["order_lines"]] == [
        (n + 1, 100 + n) for n in range(12)
    ]


def test_unused_subproduct_slot_is_ignored_whatever_its_price_says() -> None:
    # A slot exists only by its id; PHP leaves stale price/tax text in empty slots.
    record = {"id": "1", "orderdetail": [
        {"quantity": "1", "productid": "101", "subproduct2id": "0", "subproduct2price": "n/a",
         "subproduct2tax": "?", "subproduct3id": "", "subproduct3price": "1.00"},
    ]}
    assert parse_order(record, CTX) == Rows(
        {"id": 1, "customer_id": None, "register_id": None, "user_id": None,
         "total_price": None, "ordered_at": None, "clock_in": None, "clock_out": None,
         "content_hash": MD5, "extra": None,
         "business_date": None, "local_hour": None, "local_weekday": None,
         "local_minute": None},
        {"order_lines": [{"order_id": 1, "line_no": 1, "quantity": D(1), "product_id": 101,
                          "price": None, "tax_rate": None, "extra": None}],
         "order_line_subproducts": [], "order_payments": []},
    )


# --- invoices -----------------------------------------------------------------------


def test_invoice_with_lines() -> None:
    assert parse_invoice(raw("invoices", "invoice"), CTX) == Rows(
        {
            "id": 3001, "customer_id": 42, "total_price": D(121),
            "invoice_date": dt.date(2026, 6, 12), "due_date": dt.date(2026, 7, 12),
            "number": "F2026/0012", "doc_type": 1, "note": None, "from_vat_ticket": False,
            "content_hash": MD5, "extra": {"reference": "PO-77"},
        },
        {"invoice_lines": [
            {"invoice_id": 3001, "line_no": 1, "quantity": D(2),
             "product_name": "Spaghetti bolognese", "price": D(50), "tax_rate": D(21),
             "extra": None},
            {"invoice_id": 3001, "line_no": 2, "quantity": D(1), "product_name": "Cola",
             "price": D(21), "tax_rate": D(21), "extra": {"discount": "0"}},
        ]},
    )


def test_credit_note_without_lines_and_quote_with_keyed_lines() -> None:
    assert parse_invoice(raw("invoices", "credit_note_without_lines"), CTX) == Rows(
        {
            "id": 3002, "customer_id": None, "total_price": D(-21),
            "invoice_date": dt.date(2026, 6, 13), "due_date": None, "number": "12",
            "doc_type": 3, "note": "Retour", "from_vat_ticket": True,
            "content_hash": MD5, "extra": None,
        },
        {"invoice_lines": []},
    )
    assert parse_invoice(raw("invoices", "keyed_lines"), CTX) == Rows(
        {
            "id": 3003, "customer_id": None, "total_price": D(10),
            "invoice_date": dt.date(2026, 6, 14), "due_date": None, "number": "O2026/0001",
            "doc_type": 2, "note": None, "from_vat_ticket": None,
            "content_hash": MD5, "extra": None,
        },
        {"invoice_lines": [
            {"invoice_id": 3003, "line_no": 1, "quantity": D(1), "product_name": "Offerte",
             "price": D(10), "tax_rate": D(21), "extra": None},
        ]},
    )


# --- single values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "price"),
    [
        ("12,50", D("12.5")), (" 12.50 ", D("12.5")), ("-3.00", D(-3)), ("+4", D(4)),
        (12, D(12)), (12.5, D("12.5")), (0.1, D("0.1")), ("1E2", D(100)), (".5", D("0.5")),
        ("12.34560", D("12.3456")), ("99999999999.9999", D("99999999999.9999")),
        ("-0.00", D(0)), ("", None), ("   ", None), (None, None),
    ],
)
def test_money_as_sent(sent: Any, price: Decimal | None) -> None:
    assert parse_product({"id": "1", "price": sent}, CTX).parent["price"] == price


@pytest.mark.parametrize(
    ("sent", "flag"),
    [(0, False), (1, True), ("0", False), ("1", True), (True, True), (False, False),
     ("true", True), ("false", False), ("", None), (None, None)],
)
def test_flags_as_sent(sent: Any, flag: bool | None) -> None:
    assert parse_product({"id": "1", "popup": sent}, CTX).parent["has_popup"] is flag


@pytest.mark.parametrize(
    ("sent", "modified_at"),
    [("1764325800", MODTIME), (1764325800, MODTIME), ("1764325800.25", MODTIME.replace(
        microsecond=250000)), (0, None), ("0", None), ("", None), (None, None)],
)
def test_modtime_as_sent(sent: Any, modified_at: dt.datetime | None) -> None:
    assert parse_product({"id": "1", "modtime": sent}, CTX).parent["modified_at"] == modified_at


@pytest.mark.parametrize(
    ("sent", "ordered_at"),
    [
        ("2026-06-12 19:45:10", utc(2026, 6, 12, 17, 45, 10)),
        ("2026-06-12T19:45:10", utc(2026, 6, 12, 17, 45, 10)),
        ("2026-06-12 19:45", utc(2026, 6, 12, 17, 45)),
        ("2026-01-12 19:45:10", utc(2026, 1, 12, 18, 45, 10)),  # winter time, +01:00
        ("2026-03-29 02:30:00", utc(2026, 3, 29, 1, 30)),  # spring gap
        ("2026-10-25 02:30:00", utc(2026, 10, 25, 0, 30)),  # autumn overlap, first one
        ("0000-00-00 00:00:00", None), ("0000-00-00", None), ("", None), (None, None),
    ],
)
def test_local_times_as_sent(sent: Any, ordered_at: dt.datetime | None) -> None:
    assert parse_order({"id": "1", "ordertime": sent}, CTX).parent["ordered_at"] == ordered_at


# --- what cannot be parsed ------------------------------------------------------------

PRODUCT = {"id": "101", "name": "Cola", "price": "2.80"}
ORDER = {"id": "5001", "orderdetail": [{"quantity": "1", "productid": "101"}]}


def _line(**fields: Any) -> dict[str, Any]:
    return {**ORDER, "orderdetail": [{"quantity": "1", "productid": "101", **fields}]}


@pytest.mark.parametrize(
    ("parse", "record", "message"),
    [
        (parse_product, {**PRODUCT, "price": "abc"}, "price: not a number: 'abc'"),
        (parse_product, {**PRODUCT, "price": float("nan")}, "price: not a number: nan"),
        (parse_product, {**PRODUCT, "price": "NaN"}, "price: not a number: 'NaN'"),
        (parse_product, {**PRODUCT, "price": "Infinity"}, "price: not a number: 'Infinity'"),
        (parse_product, {**PRODUCT, "price": float("inf")}, "price: not a number: inf"),
        (parse_product, {**PRODUCT, "price": 1e30}, "price: does not fit NUMERIC(15, 4): 1e+30"),
        (parse_product, {**PRODUCT, "price": "1e30"}, "price: does not fit NUMERIC(15, 4)"),
        (parse_product, {**PRODUCT, "price": "1E999999999999"}, "does not fit NUMERIC(15, 4)"),
        (parse_product, {**PRODUCT, "price": "1e-5"}, "price: does not fit NUMERIC(15, 4)"),
        (parse_product, {**PRODUCT, "price": "12.34567"}, "price: does not fit NUMERIC(15, 4)"),
        (parse_product, {**PRODUCT, "price": 0.1 + 0.2}, "price: does not fit NUMERIC(15, 4)"),
        (parse_product, {**PRODUCT, "price": "123456789012"}, "does not fit NUMERIC(15, 4)"),
        (parse_product, {**PRODUCT, "quantity": 10**11}, "quantity: does not fit NUMERIC(15, 4)"),
        (parse_product, {**PRODUCT, "price": True}, "price: not a number: True"),
        (parse_product, {**PRODUCT, "price": [1]}, "price: not a number: [1]"),
        (parse_product, {**PRODUCT, "price": {"eur": 1}}, "price: not a number: {'eur': 1}"),
        (parse_product, {**PRODUCT, "price": "1.234,50"}, "price: not a number: '1.234,50'"),
        (parse_product, {**PRODUCT, "price": "1_000"}, "price: not a number: '1_000'"),
        (parse_product, {**PRODUCT, "id": 0}, "id: not a positive 63-bit id: 0"),
        (parse_product, {**PRODUCT, "id": "0"}, "id: not a positive 63-bit id: '0'"),
        (parse_product, {**PRODUCT, "id": -4}, "id: not a positive 63-bit id: -4"),
        (parse_product, {**PRODUCT, "id": 2**63}, "id: not a positive 63-bit id"),
        (parse_product, {**PRODUCT, "id": "abc"}, "id: not an integer: 'abc'"),
        (parse_product, {**PRODUCT, "id": 1.5}, "id: not an integer: 1.5"),
        (parse_product, {**PRODUCT, "id": True}, "id: not an integer: True"),
        (parse_product, {**PRODUCT, "id": ""}, "id: missing: ''"),
        (parse_product, {"name": "Cola"}, "id: missing: None"),
        # A keyed-by-id record the envelope reader did not unwrap has no id of its own.
        (parse_product, {"101": PRODUCT}, "id: missing: None"),
        (parse_product, {**PRODUCT, "categorylink": "abc"}, "categorylink: not an integer"),
        (parse_product, {**PRODUCT, "categorylink": -3}, "categorylink: not a positive"),
        (parse_product, {**PRODUCT, "popup": "yes"}, "popup: not a 0/1 flag: 'yes'"),
        (parse_product, {**PRODUCT, "popup": 2}, "popup: not a 0/1 flag: 2"),
        (parse_product, {**PRODUCT, "modtime": "yesterday"}, "modtime: not unix seconds"),
        (parse_product, {**PRODUCT, "modtime": -1}, "modtime: unix seconds out of range"),
        (parse_product, {**PRODUCT, "name": {"nl": "Cola"}}, "name: not text: {'nl': 'Cola'}"),
        (parse_product, {**PRODUCT, "name": ["Cola"]}, "name: not text"),
        (parse_product, {**PRODUCT, "name": "Co\x00la"}, "name: contains a NUL character"),
        (parse_product, {**PRODUCT, "ean": "\ud800"}, "ean: not valid Unicode"),
        (parse_product, {**PRODUCT, "weight": float("nan")}, "weight: not a finite number"),
        (parse_product, [PRODUCT], "record is not an object: [{"),
        (parse_product, "101", "record is not an object: '101'"),
        (parse_product, 101, "record is not an object: 101"),
        (parse_product, None, "record is not an object: None"),
        (parse_order, "x", "record is not an object: 'x'"),
        (parse_order, {**ORDER, "orderdetail": "x"}, "orderdetail is not a list: 'x'"),
        (parse_order, {**ORDER, "orderdetail": 3}, "orderdetail is not a list: 3"),
        (parse_order, {**ORDER, "orderdetail": {"a": {}}}, "orderdetail is not a list"),
        (parse_order, {**ORDER, "orderdetail": ["x"]}, "orderdetail[1]: line is not an object"),
        (parse_order, _line(productprice="abc"), "orderdetail[1].productprice: not a number"),
        (parse_order, _line(producttax="1000"), "orderdetail[1].producttax: does not fit NUMERIC(7, 4)"),
        (parse_order, _line(subproduct3id="abc"), "orderdetail[1].subproduct3id: not an integer"),
        (parse_order, _line(subproduct3id=5, subproduct3price="x"), "subproduct3price: not a"),
        (parse_order, {**ORDER, "cashpayment": "abc"}, "cashpayment: not a number: 'abc'"),
        (parse_order, {**ORDER, "ordertime": "yesterday"}, "ordertime: not a local date and time"),
        (parse_order, {**ORDER, "ordertime": "2026-02-30 10:00:00"}, "ordertime: not a valid"),
        (parse_order, {**ORDER, "clockin": 1764325800}, "clockin: not a local date and time"),
        (parse_order, {**ORDER, "user": "jan"}, "user: not an integer: 'jan'"),
        (parse_invoice, {"id": "1", "invoicedetail": "x"}, "invoicedetail is not a list: 'x'"),
        (parse_invoice, {"id": "1", "date": "12/06/2026"}, "date: not a date: '12/06/2026'"),
        (parse_invoice, {"id": "1", "expirationdate": "2026-13-01"}, "expirationdate: not a valid"),
        (parse_invoice, {"id": "1", "doctype": 40000}, "doctype: integer out of range: 40000"),
        (parse_subproduct, {"id": "1", "productlink": "1,x"}, "productlink: not an integer: 'x'"),
        (parse_subproduct, {"id": "1", "productlink": "[1,"}, "productlink: not a list of product"),
        (parse_subproduct, {"id": "1", "productlink": True}, "productlink is not a list: True"),
        (parse_customer_credit, {"customerid": "", "value": "1"}, "customerid: missing: ''"),
        (parse_customer_credit, {"customerid": "0"}, "customerid: not a positive 63-bit id"),
        (parse_customer_credit, {"customerid": "1", "tagid": "x" * 101}, "tagid: longer than 100"),
        (parse_user, {"id": "1", "secnr": ["85"]}, "secnr: not text: ['85']"),
        (parse_pos_table, {"id": "1", "status": "busy"}, "status: not an integer: 'busy'"),
    ],
)
def test_records_that_cannot_become_rows_are_refused_with_a_reason(
    parse: Any, record: Any, message: str
) -> None:
    with pytest.raises(ParseError, match=re.escape(message)):
        parse(record, CTX)


def test_error_message_cuts_long_values() -> None:
    with pytest.raises(ParseError) as refused:
        parse_product({**PRODUCT, "price": "x" * 500}, CTX)
    assert str(refused.value) == "price: not a number: '" + "x" * 56 + "..."


# --- every row fits its table ---------------------------------------------------------


def _fits(value: Decimal, precision: int | None, scale: int | None) -> bool:
    assert precision is not None and scale is not None
    _, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)
    return -exponent <= scale and len(digits) + exponent <= precision - scale


def check_row(table: Table, row: dict[str, Any]) -> None:
    """`row` has exactly the table's data columns, each value of the column's type and size."""
    assert set(row) == {c.name for c in table.columns} - BOOKKEEPING, table.name
    for name, value in row.items():
        column = table.c[name]
        kind = column.type
        if value is None:
            assert column.nullable and not column.primary_key, (table.name, name)
        elif isinstance(kind, Numeric):
            assert isinstance(value, Decimal), (name, value)
            assert value.is_finite() and _fits(value, kind.precision, kind.scale), (name, value)
        elif isinstance(kind, Integer):
            bits = 64 if isinstance(kind, BigInteger) else 16 if isinstance(kind, SmallInteger) else 32
            assert isinstance(value, int) and not isinstance(value, bool), (name, value)
            assert -(2 ** (bits - 1)) <= value < 2 ** (bits - 1), (name, value)
        elif isinstance(kind, Boolean):
            assert isinstance(value, bool), (name, value)
        elif isinstance(kind, UtcDateTime):
            assert isinstance(value, dt.datetime) and value.utcoffset() == dt.timedelta(0)
        elif isinstance(kind, Date):
            assert isinstance(value, dt.date) and not isinstance(value, dt.datetime)
        elif isinstance(kind, String):
            assert isinstance(value, str) and "\x00" not in value, (name, value)
            assert kind.length is None or len(value) <= kind.length, (name, value)
            value.encode("utf-8")
        elif isinstance(kind, JSON):
            assert isinstance(value, dict) and value, (name, value)
            json.dumps(value, allow_nan=False).encode("utf-8")
        else:
            raise AssertionError(f"no check for {table.name}.{name} ({kind!r})")


def check_rows(resource: Resource, rows: Rows) -> None:
    check_row(resource.table, rows.parent)
    assert set(rows.children) == {child.name for child in resource.children}
    for child in resource.children:
        for row in rows.children[child.name]:
            check_row(child, row)
    if "content_hash" in rows.parent:
        assert rows.parent["content_hash"] == MD5


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)
def test_every_recorded_record_becomes_rows_that_fit_the_tables(resource: Resource) -> None:
    records = json.loads((FIXTURES / f"{resource.name}.json").read_text())
    for record in records.values():
        check_rows(resource, resource.parse(record, CTX))


# --- properties -----------------------------------------------------------------------

# Anything JSON can carry, plus strings that look almost right.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.decimals().map(str),  # NaN, sNaN, Infinity, exponents
    st.decimals(),  # what the client makes of JSON numbers with a fraction
    st.from_regex(r"\s?-?[0-9]{0,13}([.,][0-9]{0,6})?\s?", fullmatch=True),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?",
                  fullmatch=True),
    st.sampled_from(["", "0", "1", "true", "0000-00-00", "0000-00-00 00:00:00", "nan", "1e30",
                     "12,50", "2026-03-29 02:30:00", "2026-10-25 02:30:00", "[1, 2]", "1,2,3"]),
)
ANYTHING = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6,
)


def _amounts(limit: int) -> st.SearchStrategy[Any]:
    """Amounts as the API sends them, mostly fitting, sometimes a digit too many."""
    amounts = st.one_of(*(st.decimals(min_value=-limit, max_value=limit, places=places)
                          for places in (0, 2, 4, 5)))
    return st.one_of(
        amounts.map(str), amounts.map(lambda d: str(d).replace(".", ",")), amounts,
        st.integers(-limit, limit), st.floats(-limit, limit), st.just(""),
    )


def _either(kind: st.SearchStrategy[Any], weight: int = 3) -> st.SearchStrategy[Any]:
    """Mostly (`weight` to 1) a value of the field's kind, sometimes anything at all."""
    # Not one_of(kind, kind, ..., ANYTHING): hypothesis merges equal branches.
    return st.integers(0, weight).flatmap(lambda n: ANYTHING if n == weight else kind)


NUMBERS = st.integers(0, 10**7)
MONEY = _either(_amounts(10**11))
RATE = _either(_amounts(1000))
ID = _either(st.one_of(NUMBERS, NUMBERS.map(str), st.just("")))
CODE = _either(st.one_of(st.integers(-3, 3), st.integers(0, 3).map(str), st.just("")))
FLAG = _either(st.sampled_from([0, 1, "0", "1", True, False, "true", "false", ""]))
TEXT = _either(st.one_of(st.text(max_size=20), st.integers(), st.just("")))
LOCAL_TIME = _either(st.one_of(
    st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1)).map(str).map(lambda s: s[:19]),
    st.sampled_from(["0000-00-00 00:00:00", "2026-03-29 02:30:00", "2026-10-25 02:30", ""]),
))
DATE = _either(st.one_of(st.dates().map(str), st.sampled_from(["0000-00-00", ""])))
UNIX = _either(st.one_of(st.integers(0, 4 * 10**9), st.integers(0, 4 * 10**9).map(str),
                         st.floats(0, 4e9), st.just("")))
LINKS = _either(st.one_of(st.lists(st.one_of(NUMBERS, NUMBERS.map(str)), max_size=4),
                          st.lists(NUMBERS, max_size=4).map(lambda ids: ",".join(map(str, ids))),
                          st.lists(NUMBERS, max_size=4).map(json.dumps)))

PAYMENTS = {f"{method}payment": MONEY for method in tables.PAYMENT_METHODS}
SLOTS = {f"subproduct{n}{part}": kind for n in range(1, 11)
         for part, kind in (("id", ID), ("price", MONEY), ("tax", RATE))}
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "categories": {"name": TEXT},
    "products": {"name": TEXT, "categorylink": ID, "price": MONEY, "quantity": MONEY,
                 "popup": FLAG, "menupopup": FLAG, "openprice": FLAG, "modtime": UNIX},
    "subproducts": {"name": TEXT, "price": MONEY, "quantity": MONEY, "productlink": LINKS,
                    "modtime": UNIX},
    "customers": {"name": TEXT, "fistname": TEXT, "firstname": TEXT, "companyname": TEXT,
                  "street_number": TEXT, "phone": TEXT, "zipcode": TEXT, "town": TEXT,
                  "vatnumber": TEXT, "email": TEXT, "tagid": TEXT, "tagtype": TEXT,
                  "tagfamid": ID, "modtime": UNIX},
    "users": {"username": TEXT, "admin": FLAG, "secnr": TEXT},
    "pos_tables": {"table": TEXT, "status": CODE},
    "payment_methods": {"payment": TEXT},
    "printers": {"printername": TEXT},
    "gift_vouchers": {"barcode": TEXT, "value": MONEY, "validfrom": DATE, "validuntil": DATE,
                      "modtime": UNIX},
    "coupons": {"barcode": TEXT, "value": MONEY, "valuetype": CODE, "validfrom": DATE,
                "validuntil": DATE, "used": FLAG},
    "customer_credits": {"customerid": ID, "value": MONEY, "tagid": TEXT, "tagtype": TEXT,
                         "productid": ID, "categoryid": ID},
    "orders": {"customerid": ID, "kassaid": ID, "totalprice": MONEY, "user": ID,
               "ordertime": LOCAL_TIME, "clockin": LOCAL_TIME, "clockout": LOCAL_TIME,
               **PAYMENTS},
    "invoices": {"customerid": ID, "totalprice": MONEY, "date": DATE, "expirationdate": DATE,
                 "number": TEXT, "doctype": CODE, "note": TEXT, "docfromvatticket": FLAG},
}
LINES: dict[str, tuple[str, dict[str, st.SearchStrategy[Any]]]] = {
    "orders": ("orderdetail", {"quantity": MONEY, "productid": ID, "productprice": MONEY,
                               "producttax": RATE, **SLOTS}),
    "invoices": ("invoicedetail", {"quantity": MONEY, "productname": TEXT,
                                   "productprice": MONEY, "producttax": RATE}),
}


def records(name: str) -> st.SearchStrategy[Any]:
    """Records with the resource's fields (and unknown ones), each holding almost anything."""
    fields = dict(FIELDS[name])
    if name in LINES:
        detail, line_fields = LINES[name]
        line = st.fixed_dictionaries({}, optional=line_fields)
        lines = st.lists(_either(line), max_size=3)
        fields[detail] = _either(st.one_of(lines, lines.map(lambda ls: dict(enumerate(ls)))))
    key = "customerid" if name == "customer_credits" else "id"
    fields.pop(key, None)
    ids = st.integers(1, 10**7)
    record = st.fixed_dictionaries({key: _either(ids | ids.map(str), 8)}, optional=fields)
    unknown = st.dictionaries(st.text(max_size=6), ANYTHING, max_size=2)
    return _either(st.builds(lambda extra, known: {**extra, **known}, unknown, record), 8)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_json_becomes_rows_that_fit_or_a_parse_error(
    resource: Resource, data: st.DataObject
) -> None:
    record = data.draw(records(resource.name))
    try:
        rows = resource.parse(record, CTX)
    except ParseError:
        return
    check_rows(resource, rows)
    assert resource.parse(record, CTX) == rows  # and deterministic, hash included


@settings(max_examples=300)
@given(amount=st.decimals(min_value=-(10**11) + 1, max_value=10**11 - 1, places=4))
def test_any_amount_that_fits_reads_the_same_with_dot_comma_or_as_a_number(amount: Decimal) -> None:
    for sent in (str(amount), str(amount).replace(".", ","), f" {amount} ", amount):
        assert parse_product({"id": 1, "price": sent}, CTX).parent["price"] == amount
    if amount == amount.to_integral_value():
        assert parse_product({"id": 1, "price": int(amount)}, CTX).parent["price"] == amount


def test_parsing_a_page_pauses_the_garbage_collector_and_gives_it_back() -> None:
    import gc

    from syncer.resources import ORDERS
    from syncer.sync import parse_records

    seen: list[bool] = []
    original = ORDERS.parse

    def parse(raw: Any, ctx: ParseContext) -> Rows:
        seen.append(gc.isenabled())
        return original(raw, ctx)

    resource = ORDERS.__class__(**{**ORDERS.__dict__, "parse": parse})
    assert gc.isenabled()
    parsed = parse_records(resource, [{"id": "1"}, {"id": "x"}], CTX)
    assert (len(parsed.rows), len(parsed.rejected), seen) == (1, 1, [False, False])
    assert gc.isenabled()
    gc.disable()
    try:
        parse_records(resource, [{"id": "2"}], CTX)
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
