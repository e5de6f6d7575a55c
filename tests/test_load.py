"""The loader on its own, on every database: what is written, what is left alone, what is counted."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select, text

from syncer import tables as t
from syncer.db import make_engine, migrate
from syncer.dialects import postgres as pg_dialect
from syncer.load import Counts, Rejected, load, quarantine
from syncer.parse import Rows
from syncer.resources import ORDERS, PRODUCTS

LICENSE = "shop"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)
T2 = T0 + dt.timedelta(hours=2)


@pytest.fixture(autouse=True, params=["inline", "staged"])
def postgres_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice on Postgres' two ways in: rows inline in the upsert, and COPY
    into a staging table (SQLite has one way: it runs both times the same)."""
    monkeypatch.setattr(pg_dialect, "INLINE_ROWS", 10**9 if request.param == "inline" else -1)
    return str(request.param)


def order(order_id: int, total: str = "10.00", lines: int = 2, extra: Any = None) -> Rows:
    parent = {
        "id": order_id, "customer_id": None, "register_id": 1, "user_id": 2,
        "total_price": Decimal(total), "ordered_at": T0, "clock_in": None, "clock_out": None,
        "business_date": dt.date(2026, 3, 1), "local_hour": 13, "local_weekday": 7,
        "local_minute": 0,
        "content_hash": f"{order_id}-{total}-{lines}", "extra": extra,
    }
    order_lines = [{"order_id": order_id, "line_no": n, "quantity": Decimal(1), "product_id": 7,
                    "price": Decimal("5.00"), "tax_rate": Decimal(21), "extra": None}
                   for n in range(1, lines + 1)]
    slots = [{"order_id": order_id, "line_no": 1, "slot": 1, "subproduct_id": 3,
              "price": Decimal("0.50"), "tax_rate": Decimal(21)}]
    payments = [{"order_id": order_id, "method": "cash", "amount": Decimal(total)}]
    return Rows(parent, {"order_lines": order_lines, "order_line_subproducts": slots,
                         "order_payments": payments})


def product(product_id: int, name: str = "Spaghetti") -> Rows:
    return Rows({"id": product_id, "name": name, "category_id": 1, "price": Decimal("12.50"),
                 "quantity": None, "has_popup": False, "has_menu_popup": False,
                 "has_open_price": False, "modified_at": T0, "extra": None})


def load_orders(engine: Engine, records: list[Rows], now: dt.datetime) -> Counts:
    with engine.begin() as conn:
        return load(conn, ORDERS.table, ORDERS.children, LICENSE, records, now, full_list=False)


def load_products(engine: Engine, records: list[Rows], now: dt.datetime) -> Counts:
    with engine.begin() as conn:
        return load(conn, PRODUCTS.table, (), LICENSE, records, now, full_list=True)


def synced(engine: Engine, table: Any, *key: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(*key, table.c.synced_at).order_by(*key))]


def t_keys(table: Any) -> list[Any]:
    return [c for c in table.primary_key.columns if c.name != "license"]


def test_first_load_inserts_parents_and_children_and_counts_them(engine: Engine) -> None:
    counts = load_orders(engine, [order(1), order(2, lines=3)], T0)

    assert counts == Counts(inserted=2)
    with engine.connect() as conn:
        assert conn.execute(select(t.orders.c.id, t.orders.c.total_price).order_by(t.orders.c.id)).all() \
            == [(1, Decimal("10.00")), (2, Decimal("10.00"))]
        assert len(conn.execute(select(t.order_lines)).all()) == 5
        assert len(conn.execute(select(t.order_line_subproducts)).all()) == 2
        assert len(conn.execute(select(t.order_payments)).all()) == 2


def test_unchanged_reload_writes_nothing(engine: Engine) -> None:
    records = [order(1, extra={"b": "2", "a": [1, "x"]}), order(2)]
    load_orders(engine, records, T0)
    before = {tbl.name: synced(engine, tbl, *t_keys(tbl)) for tbl in ORDERS.tables}

    # Same content; the JSON keys in another order are the same JSON.
    again = [order(1, extra={"a": [1, "x"], "b": "2"}), order(2)]
    counts = load_orders(engine, again, T1)

    assert counts == Counts(unchanged=2)
    assert {tbl.name: synced(engine, tbl, *t_keys(tbl)) for tbl in ORDERS.tables} == before


def test_changed_order_is_updated_and_only_its_children_replaced(engine: Engine) -> None:
    load_orders(engine, [order(1, lines=3), order(2, lines=3)], T0)

    counts = load_orders(engine, [order(1, total="12.00", lines=1), order(2, lines=3)], T1)

    assert counts == Counts(inserted=0, updated=1, unchanged=1)
    lines = synced(engine, t.order_lines, t.order_lines.c.order_id, t.order_lines.c.line_no)
    assert lines == [(1, 1, T1), (2, 1, T0), (2, 2, T0), (2, 3, T0)]
    payments = synced(engine, t.order_payments, t.order_payments.c.order_id)
    assert payments == [(1, T1), (2, T0)]


def test_new_and_changed_orders_in_one_window_are_counted_apart(engine: Engine) -> None:
    load_orders(engine, [order(1)], T0)

    counts = load_orders(engine, [order(1, total="11.00"), order(2), order(3)], T1)

    assert counts == Counts(inserted=2, updated=1)


def test_a_key_sent_twice_in_one_load_keeps_the_last(engine: Engine) -> None:
    counts = load_orders(engine, [order(1, total="5.00"), order(1, total="7.00", lines=1)], T0)

    assert counts.inserted == 1
    with engine.connect() as conn:
        assert conn.execute(select(t.orders.c.total_price)).scalar_one() == Decimal("7.00")
        assert len(conn.execute(select(t.order_lines)).all()) == 1


def test_full_list_marks_the_missing_deleted_and_clears_the_mark_when_they_return(engine: Engine) -> None:
    assert load_products(engine, [product(1), product(2)], T0) == Counts(inserted=2)

    assert load_products(engine, [product(1)], T1) == Counts(unchanged=1, deleted=1)
    with engine.connect() as conn:
        rows = conn.execute(select(t.products.c.id, t.products.c.deleted_at, t.products.c.synced_at)
                            .order_by(t.products.c.id)).all()
    assert [tuple(r) for r in rows] == [(1, None, T0), (2, T1, T1)]

    assert load_products(engine, [product(1), product(2)], T2) == Counts(updated=1, unchanged=1)
    with engine.connect() as conn:
        rows = conn.execute(select(t.products.c.id, t.products.c.deleted_at, t.products.c.synced_at)
                            .order_by(t.products.c.id)).all()
    assert [tuple(r) for r in rows] == [(1, None, T0), (2, None, T2)]


def test_an_empty_full_list_marks_everything_deleted_once(engine: Engine) -> None:
    load_products(engine, [product(1), product(2)], T0)

    assert load_products(engine, [], T1) == Counts(deleted=2)
    assert load_products(engine, [], T2) == Counts()


def test_two_loads_in_one_transaction(engine: Engine) -> None:
    with engine.begin() as conn:
        first = load(conn, ORDERS.table, ORDERS.children, LICENSE, [order(1)], T0, full_list=False)
        second = load(conn, ORDERS.table, ORDERS.children, LICENSE, [order(1, total="3.00"), order(2)],
                      T0, full_list=False)

    assert first == Counts(inserted=1)
    assert second == Counts(inserted=1, updated=1)


def test_a_failed_transaction_leaves_nothing_behind(engine: Engine) -> None:
    try:
        with engine.begin() as conn:
            load(conn, ORDERS.table, ORDERS.children, LICENSE, [order(1)], T0, full_list=False)
            raise RuntimeError("crash after the load, before the commit")
    except RuntimeError:
        pass

    assert load_orders(engine, [order(1)], T1) == Counts(inserted=1)


def test_two_jobs_loading_one_new_order_at_once_end_with_the_later_ones_children(
    server_url: str,
) -> None:
    """The orders job and the day re-check may load the same new order at once (replicas
    too). The second's read finds the order new while the first has not committed; its
    write waits for the first and must then replace the first's children, not collide
    with them."""
    engine = make_engine(server_url)
    migrate(engine)
    errors: list[BaseException] = []
    try:
        first = engine.connect()
        first.begin()
        load(first, ORDERS.table, ORDERS.children, LICENSE, [order(1, lines=2)], T0, full_list=False)

        def second() -> None:
            try:
                load_orders(engine, [order(1, total="12.00", lines=3)], T1)
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        worker = threading.Thread(target=second)
        worker.start()
        time.sleep(1.0)  # the second has read and now waits on the first's row
        first.commit()
        first.close()
        worker.join(timeout=30)
        assert not worker.is_alive() and errors == []
        with engine.connect() as conn:
            lines = conn.execute(select(t.order_lines.c.line_no).order_by("line_no")).scalars().all()
            total = conn.execute(select(t.orders.c.total_price)).scalar_one()
        assert (lines, total) == ([1, 2, 3], Decimal("12.00"))
    finally:
        engine.dispose()


def test_rows_stored_by_a_plain_insert_are_not_rewritten(engine: Engine) -> None:
    """Rows an earlier version stored row by row (JSON 'null' for no extra) count as unchanged."""
    record = order(1)
    with engine.begin() as conn:
        conn.execute(t.orders.insert(), {**record.parent, "license": LICENSE, "synced_at": T0})

    assert load_orders(engine, [record], T1) == Counts(unchanged=1)
    assert synced(engine, t.orders, t.orders.c.id) == [(1, T0)]


def test_a_full_list_keeps_the_rows_of_listed_records_that_failed_to_parse(engine: Engine) -> None:
    load_products(engine, [product(1), product(2), product(3)], T0)
    assert load_products(engine, [product(1), product(3)], T1) == Counts(unchanged=2, deleted=1)

    # 2 and 3 are listed again but failed to parse: 3 keeps its row, 2 stays deleted as it was.
    with engine.begin() as conn:
        counts = load(conn, PRODUCTS.table, (), LICENSE, [product(1)], T2, full_list=True,
                      unparsed={(2,), (3,)})

    assert counts == Counts(unchanged=1)
    with engine.connect() as conn:
        rows = conn.execute(select(t.products.c.id, t.products.c.synced_at, t.products.c.deleted_at)
                            .order_by(t.products.c.id)).all()
    assert [tuple(r) for r in rows] == [(1, T0, None), (2, T1, T1), (3, T0, None)]


def test_the_quarantine_keeps_numbers_as_the_api_sent_them(engine: Engine) -> None:
    """The client reads JSON numbers with a fraction as exact Decimals; the quarantine
    writes them back as the same numbers, not as strings, trailing zeros and all."""
    sent = '{"id": 7, "price": 12.50, "quantity": "1,5", "rate": 1E+1, "tiny": 0.000001}'
    record = json.loads(sent, parse_float=Decimal)
    with engine.begin() as conn:
        quarantine(conn, LICENSE, "products", [Rejected(record, "quantity: not a number", "7")], T0)
    with engine.connect() as conn:
        raw = conn.execute(select(t.quarantine.c.raw)).scalar_one()
        if engine.dialect.name == "postgresql":
            assert conn.execute(text("SELECT count(raw::jsonb) FROM quarantine")).scalar_one() == 1
    assert raw == '{"id": 7, "price": 12.50, "quantity": "1,5", "rate": 1E+1, "tiny": 0.000001}'
    assert json.loads(raw, parse_float=Decimal) == record


def test_an_extra_nested_deeper_than_every_json_column_stores_is_quarantined(engine: Engine) -> None:
    """MariaDB's JSON columns refuse a document nested deeper than 32 levels (its whole
    page's transaction with it): such a record is a bad record on every database."""
    from syncer.parse import MAX_EXTRA_DEPTH, ParseContext, ParseError
    from syncer.resources import ORDERS as orders

    deep: Any = "bottom"
    for _ in range(MAX_EXTRA_DEPTH + 2):  # with `extra` itself, 32 levels
        deep = [deep]
    record = {"id": 1, "date": "2026-03-01 13:00:00", "lines": [], "payments": [], "odd": deep}
    ctx = ParseContext(tz=ZoneInfo("Europe/Brussels"), secnr_key=b"k", store_national_number=False)
    with pytest.raises(ParseError, match=f"odd.*nested deeper than {MAX_EXTRA_DEPTH} levels"):
        orders.parse(record, ctx)
    # One level less (31 in all) is stored, on MariaDB too.
    stored = orders.parse({**record, "odd": deep[0]}, ctx)
    with engine.begin() as conn:
        assert load(conn, orders.table, orders.children, LICENSE, [stored], T0,
                    full_list=False).inserted == 1
    with engine.begin() as conn:
        assert quarantine(conn, LICENSE, "orders", [Rejected(record, "too deep", "1")], T0) == 1
    with engine.connect() as conn:
        assert json.loads(conn.execute(select(t.quarantine.c.raw)).scalar_one()) == record


def test_the_quarantine_keeps_records_with_a_nul_or_a_lone_surrogate_losslessly(engine: Engine) -> None:
    records: list[Any] = [
        {"id": "1", "name": "\ud800"},
        {"id": "2", "no\x00te": "x"},
        {"id": "3", "\udfff": ["a\x00b", {"deep": "\udbff"}]},
        "\ud800",
        {"id": "4", "name": "\\u0000 and \\ud800 as plain text"},  # storable: kept as it is
    ]
    with engine.begin() as conn:
        quarantine(conn, LICENSE, "products",
                   [Rejected(r, f"name: odd \ud800\x00 {i}", str(i)) for i, r in enumerate(records)], T0)

    with engine.connect() as conn:
        stored = {r.record_key: r for r in conn.execute(select(t.quarantine))}
        if engine.dialect.name == "postgresql":  # every raw is valid JSONB too
            assert conn.execute(text("SELECT count(raw::jsonb) FROM quarantine")).scalar_one() == 5
    assert len(stored) == len(records)
    for i, record in enumerate(records):
        raw = json.loads(stored[str(i)].raw)
        if i == 4:
            assert raw == record
        else:
            assert set(raw) == {"unstorable_json"}
            assert json.loads(raw["unstorable_json"]) == record
        assert stored[str(i)].reason == f"name: odd \\ud800\\u0000 {i}"


def test_rows_written_one_way_are_unchanged_the_other_way(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backfill's big windows go staged, a daemon's small answers inline: the same rows
    must compare equal either way (no extra fields is NULL both ways, never JSON 'null')."""
    monkeypatch.setattr(pg_dialect, "INLINE_ROWS", 3)
    orders = [order(i) for i in range(1, 11)]
    products = [product(i) for i in range(1, 11)]
    assert load_orders(engine, orders, T0) == Counts(inserted=10)  # staged
    assert load_products(engine, products, T0) == Counts(inserted=10)

    assert load_orders(engine, orders[:2], T1) == Counts(unchanged=2)  # inline
    assert load_orders(engine, [order(3, total="9.00")], T1) == Counts(updated=1)
    assert load_orders(engine, orders, T2) == Counts(unchanged=9, updated=1)  # staged again
    assert load_products(engine, products[:3], T1) == Counts(unchanged=3, deleted=7)
    assert load_products(engine, products, T2) == Counts(unchanged=3, updated=7)
    with engine.connect() as conn:
        stored = conn.execute(select(t.orders.c.id, t.orders.c.total_price, t.orders.c.extra)
                              .order_by(t.orders.c.id)).all()
        lines = conn.execute(select(text("count(*)")).select_from(t.order_lines)).scalar_one()
    assert [(r.id, r.total_price) for r in stored][:4] == [
        (1, Decimal("10.00")), (2, Decimal("10.00")), (3, Decimal("10.00")), (4, Decimal("10.00"))]
    assert {r.extra for r in stored} == {None}
    assert lines == 20
