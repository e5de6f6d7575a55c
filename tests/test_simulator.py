"""The bundled CloudPOS simulator, exercised over real HTTP with httpx."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from syncer.simulator import Dataset, Simulator, generate
from syncer.simulator.data import PAYMENT_METHODS, RESOURCES, render
from syncer.simulator.server import FUNCTIONS, LIST_FUNCTIONS
from tests.helpers import FakeClock

TZ = ZoneInfo("Europe/Brussels")
UTC = dt.UTC
ANCHOR = dt.date(2026, 10, 27)  # two days after the autumn DST change
AUTH = {"licname": "demo", "token": "demo-token"}


@pytest.fixture(scope="module")
def small() -> Dataset:
    """Read-only data set shared by tests that do not mutate it."""
    return generate(seed=1, orders=600, anchor=ANCHOR)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(dt.datetime(2026, 10, 27, 14, 0, tzinfo=TZ))


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    simulator = Simulator(generate(seed=1, orders=600, anchor=ANCHOR), clock=clock,
                          licenses={"demo": "demo-token", "other": "other-token"})
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=5) as http:
        yield http


def call(client: httpx.Client, function: str, auth: dict[str, str] = AUTH, **filters: str) -> Any:
    response = client.get("", params={**auth, function: "", **filters})
    assert response.status_code == 200, response.text
    return response.json()


def records_of(body: Any, function: str, style: str) -> list[dict[str, Any]]:
    """The records of a list response in any envelope style."""
    if style == "list":
        assert isinstance(body, list)
        return body
    assert body["success"] == 1
    if style == "keyed":
        return [value for key, value in body.items() if key != "success"]
    records: list[dict[str, Any]] = body["data" if style == "data" else function.removeprefix("get-")]
    return records


# --- a reference reading of the rendered records (docs/api-reading.md) ----------------


def num(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value).replace(",", "."))


def ref(value: Any) -> int | None:
    return None if value in ("", None, 0, "0") else int(value)


def text(value: Any) -> str | None:
    return None if value in ("", None) else str(value)


def flag(value: Any) -> bool:
    return bool(int(value))


def local(value: str) -> dt.datetime | None:
    if value in ("", "0000-00-00 00:00:00"):
        return None
    return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TZ)  # fold=0


def day(value: str) -> dt.date | None:
    if value == "" or value.startswith("0000-00-00"):
        return None
    return dt.date.fromisoformat(value[:10])


def instant(value: dt.datetime | None) -> float | None:
    # Compare instants: `==` across zones is False in a DST fold or gap (PEP 495).
    return None if value is None else value.timestamp()


def extra(raw: dict[str, Any], known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in known}


SLOT_KEYS = {f"subproduct{n}{part}" for n in range(1, 11) for part in ("id", "price", "tax")}


def read(resource: str, raw: dict[str, Any]) -> dict[str, Any]:
    """What a correct parser makes of one rendered record, as canonical field values."""
    if resource == "categories":
        return {"id": int(raw["id"]), "name": raw["name"], "extra": extra(raw, {"id", "name"})}
    if resource == "products":
        keys = {"id", "name", "categorylink", "price", "quantity", "popup", "menupopup",
                "openprice", "modtime"}
        return {"id": int(raw["id"]), "name": raw["name"], "category_id": ref(raw["categorylink"]),
                "price": num(raw["price"]), "quantity": num(raw["quantity"]),
                "has_popup": flag(raw["popup"]), "has_menu_popup": flag(raw["menupopup"]),
                "has_open_price": flag(raw["openprice"]), "modtime": int(raw["modtime"]),
                "extra": extra(raw, keys)}
    if resource == "subproducts":
        return {"id": int(raw["id"]), "name": raw["name"], "price": num(raw["price"]),
                "quantity": num(raw["quantity"]),
                "product_ids": tuple(int(p) for p in raw["productlink"]),
                "modtime": int(raw["modtime"]),
                "extra": extra(raw, {"id", "name", "price", "quantity", "productlink", "modtime"})}
    if resource == "customers":
        names = {"name": "name", "fistname": "first_name", "companyname": "company_name",
                 "street_number": "street_number", "phone": "phone", "zipcode": "zipcode",
                 "town": "town", "vatnumber": "vat_number", "email": "email", "tagid": "tag_id",
                 "tagtype": "tag_type"}
        row: dict[str, Any] = {field: text(raw[key]) for key, field in names.items()}
        return {**row, "id": int(raw["id"]), "tag_family_id": ref(raw["tagfamid"]),
                "modtime": int(raw["modtime"]),
                "extra": extra(raw, {*names, "id", "tagfamid", "modtime"})}
    if resource == "users":
        return {"id": int(raw["id"]), "username": raw["username"], "is_admin": flag(raw["admin"]),
                "secnr": text(raw["secnr"]), "extra": extra(raw, {"id", "username", "admin", "secnr"})}
    if resource == "pos_tables":
        return {"id": int(raw["id"]), "table_number": raw["table"], "status": int(raw["status"]),
                "extra": extra(raw, {"id", "table", "status"})}
    if resource == "payment_methods":
        return {"id": int(raw["id"]), "name": raw["payment"], "extra": extra(raw, {"id", "payment"})}
    if resource == "printers":
        return {"id": int(raw["id"]), "name": raw["printername"],
                "extra": extra(raw, {"id", "printername"})}
    if resource == "gift_vouchers":
        return {"id": int(raw["id"]), "barcode": raw["barcode"], "value": num(raw["value"]),
                "valid_from": day(raw["validfrom"]), "valid_until": day(raw["validuntil"]),
                "modtime": int(raw["modtime"]),
                "extra": extra(raw, {"id", "barcode", "value", "validfrom", "validuntil", "modtime"})}
    if resource == "coupons":
        return {"id": int(raw["id"]), "barcode": raw["barcode"], "value": num(raw["value"]),
                "value_type": int(raw["valuetype"]), "valid_from": day(raw["validfrom"]),
                "valid_until": day(raw["validuntil"]), "is_used": flag(raw["used"]),
                "extra": extra(raw, {"id", "barcode", "value", "valuetype", "validfrom",
                                     "validuntil", "used"})}
    if resource == "customer_credits":
        return {"customer_id": int(raw["customerid"]), "tag_id": raw["tagid"],
                "value": num(raw["value"]), "tag_type": text(raw["tagtype"]),
                "extra": extra(raw, {"customerid", "tagid", "value", "tagtype"})}
    if resource == "orders":
        lines = []
        for line in raw["orderdetail"]:
            subs = []
            for n in range(1, 11):
                sub_id = ref(line.get(f"subproduct{n}id"))
                if sub_id is not None:
                    subs.append((n, sub_id, num(line[f"subproduct{n}price"]),
                                 num(line[f"subproduct{n}tax"])))
            lines.append({"quantity": num(line["quantity"]), "product_id": int(line["productid"]),
                          "price": num(line["productprice"]), "tax_rate": num(line["producttax"]),
                          "subproducts": subs,
                          "extra": extra(line, {"quantity", "productid", "productprice",
                                                "producttax", *SLOT_KEYS})})
        payments = {m: num(raw[f"{m}payment"]) for m in PAYMENT_METHODS}
        keys = {"id", "customerid", "kassaid", "totalprice", "user", "ordertime", "clockin",
                "clockout", "orderdetail", *(f"{m}payment" for m in PAYMENT_METHODS)}
        return {"id": int(raw["id"]), "customer_id": ref(raw["customerid"]),
                "register_id": ref(raw["kassaid"]), "user_id": ref(raw["user"]),
                "total_price": num(raw["totalprice"]), "ordered_at": instant(local(raw["ordertime"])),
                "clock_in": instant(local(raw["clockin"])),
                "clock_out": instant(local(raw["clockout"])), "lines": lines,
                "payments": {m: a for m, a in payments.items() if a},
                "extra": extra(raw, keys)}
    assert resource == "invoices"
    keys = {"id", "customerid", "totalprice", "date", "expirationdate", "number", "doctype",
            "note", "invoicedetail", "docfromvatticket"}
    return {"id": int(raw["id"]), "customer_id": ref(raw["customerid"]),
            "total_price": num(raw["totalprice"]), "invoice_date": day(raw["date"]),
            "due_date": day(raw["expirationdate"]), "number": raw["number"],
            "doc_type": int(raw["doctype"]), "note": text(raw["note"]),
            "from_vat_ticket": flag(raw["docfromvatticket"]),
            "lines": [(num(ln["quantity"]), ln["productname"], num(ln["productprice"]),
                       num(ln["producttax"])) for ln in raw["invoicedetail"]],
            "extra": extra(raw, keys)}


def canonical(resource: str, record: Any) -> dict[str, Any]:
    """The canonical record in the shape `read` gives."""
    fields = {name: getattr(record, name) for name in record.__dataclass_fields__}
    if resource == "orders":
        fields["ordered_at"] = instant(record.ordered_at)
        fields["clock_in"] = instant(record.clock_in)
        fields["clock_out"] = instant(record.clock_out)
        fields["lines"] = [
            {"quantity": ln.quantity, "product_id": ln.product_id, "price": ln.price,
             "tax_rate": ln.tax_rate, "extra": ln.extra,
             "subproducts": [(s.slot, s.subproduct_id, s.price, s.tax_rate) for s in ln.subproducts]}
            for ln in record.lines
        ]
    if resource == "invoices":
        fields["lines"] = [(ln.quantity, ln.product_name, ln.price, ln.tax_rate) for ln in record.lines]
    return fields


# --- generation --------------------------------------------------------------------


def test_generation_is_deterministic() -> None:
    first = generate(seed=7, orders=400, anchor=ANCHOR)
    again = generate(seed=7, orders=400, anchor=ANCHOR)
    other = generate(seed=8, orders=400, anchor=ANCHOR)
    assert first == again
    assert [render("orders", o) for o in first.orders] == [render("orders", o) for o in again.orders]
    assert first.records("orders") != other.records("orders")


def test_seed_1_holds_a_whole_shop(small: Dataset) -> None:
    counts = generate(seed=1, orders=2000, anchor=ANCHOR).counts()
    assert counts["orders"] == 2000
    assert counts["categories"] == 15
    assert counts["products"] == 300
    assert counts["subproducts"] == 60
    assert counts["customers"] == 400
    assert counts["users"] == 12
    assert counts["pos_tables"] == 30
    assert counts["payment_methods"] == 9
    assert counts["printers"] == 4
    assert counts["gift_vouchers"] == 40
    assert counts["coupons"] == 100
    assert 50 <= counts["customer_credits"] <= 70
    assert 60 <= counts["invoices"] <= 100
    assert any(p.extra.get("color") for p in small.products.values())
    assert any(ln.extra for o in small.orders for ln in o.lines)
    assert any(u.secnr for u in small.users.values())
    assert any(c.tag_id == "" for c in small.customer_credits.values())


def test_orders_add_up(small: Dataset) -> None:
    orders = small.records("orders")
    ids = [o.id for o in orders]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[-1] - ids[0] + 1 > len(ids)  # voided orders leave gaps
    assert [o.ordered_at for o in orders] == sorted(o.ordered_at for o in orders)
    labour = [o for o in orders if o.is_labour]
    assert labour
    for order in labour:
        assert not order.lines and order.total_price == 0 and not order.payments
        assert order.clock_in is not None and order.clock_out is not None
    for order in orders:
        if order.is_labour:
            continue
        assert 1 <= len(order.lines) <= 6
        expected = sum((ln.quantity * (ln.price + sum((s.price for s in ln.subproducts), Decimal(0)))
                        for ln in order.lines), Decimal(0))
        assert order.total_price == expected
        assert sum(order.payments.values(), Decimal(0)) == order.total_price
        assert all(amount > 0 for amount in order.payments.values())
        assert set(order.payments) <= set(PAYMENT_METHODS)
    lines = [ln for o in orders for ln in o.lines]
    assert any(ln.quantity == Decimal("0.5") for ln in lines)
    assert any(s.tax_rate != ln.tax_rate for ln in lines for s in ln.subproducts)
    assert {ln.tax_rate for ln in lines} <= {Decimal(0), Decimal(6), Decimal(12), Decimal(21)}


def test_dst_days_hold_the_0230_edge_cases() -> None:
    autumn = generate(seed=1, orders=700, anchor=ANCHOR)
    first = autumn.orders.on_day(dt.date(2026, 10, 25))[0]
    assert render("orders", first)["ordertime"] == "2026-10-25 02:30:00"
    assert first.ordered_at.astimezone(UTC) == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # fold=0

    spring = generate(seed=1, orders=700, anchor=dt.date(2026, 3, 30))
    first = spring.orders.on_day(dt.date(2026, 3, 29))[0]
    assert render("orders", first)["ordertime"] == "2026-03-29 02:30:00"
    assert first.ordered_at.astimezone(UTC) == dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_rendered_records_read_back_as_the_canonical_ones(small: Dataset) -> None:
    for resource in RESOURCES:
        records = small.records(resource)
        assert records, resource
        for record in records:
            raw = json.loads(json.dumps(render(resource, record)))
            assert read(resource, raw) == canonical(resource, record), (resource, raw)


def test_renderings_vary_the_way_the_api_does(small: Dataset) -> None:
    values = [render("orders", o)["totalprice"] for o in small.orders]
    assert any(isinstance(v, str) and "," in v for v in values)
    assert any(isinstance(v, str) and "." in v for v in values)
    assert any(isinstance(v, float | int) for v in values)
    flags = [render("products", p)["popup"] for p in small.products.values()]
    assert {0, 1, "0", "1"} <= set(flags)
    clocks = {render("orders", o)["clockin"] for o in small.orders if not o.is_labour}
    assert clocks == {"", "0000-00-00 00:00:00"}


# --- functions and envelopes -----------------------------------------------------------


@pytest.mark.parametrize("style", ["list", "data", "named", "keyed"])
def test_every_list_function_answers_in_each_envelope(
    sim: Simulator, client: httpx.Client, style: str
) -> None:
    sim.set_envelope(style)
    for function, resource in LIST_FUNCTIONS.items():
        body = call(client, function)
        records = records_of(body, function, style)
        expected = [render(resource, r) for r in sim.dataset.records(resource)]
        assert records == expected, function
        if style == "keyed" and function == "get-customercredits":
            assert f"{records[0]['customerid']}-{records[0]['tagid']}" in body
        elif style == "keyed":
            assert set(body) - {"success"} == {str(r["id"]) for r in records}


def test_id_windows_are_inclusive(sim: Simulator, client: httpx.Client) -> None:
    ids = [o.id for o in sim.dataset.orders]
    start, end = ids[10], ids[60]
    got = [int(o["id"]) for o in call(client, "get-orders", start=str(start), end=str(end))["data"]]
    assert got == ids[10:61]
    coupons = call(client, "get-coupon", start="3", end="5")["data"]
    assert [int(c["id"]) for c in coupons] == [3, 4, 5]
    invoice_ids = [i.id for i in sim.dataset.invoices]
    got = call(client, "get-invoices", start=str(invoice_ids[1]), end=str(invoice_ids[2]))["data"]
    assert [int(i["id"]) for i in got] == invoice_ids[1:3]


def test_date_and_labour_filters(sim: Simulator, client: httpx.Client) -> None:
    day = dt.date(2026, 10, 26)
    expected = [o.id for o in sim.dataset.orders if o.ordered_at.date() == day]
    got = call(client, "get-orders", date=day.isoformat())["data"]
    assert [int(o["id"]) for o in got] == expected
    assert all(o["ordertime"].startswith("2026-10-26 ") for o in got)
    window = call(client, "get-orders", date=day.isoformat(), start=str(expected[5]),
                  end=str(expected[9]))["data"]
    assert [int(o["id"]) for o in window] == expected[5:10]
    labour = call(client, "get-orders", clockinclockout="")["data"]
    assert labour and all(o["orderdetail"] == [] and o["clockin"] for o in labour)
    assert {int(o["id"]) for o in labour} == {o.id for o in sim.dataset.orders if o.is_labour}
    invoices = call(client, "get-invoices", date=sim.dataset.invoices.days()[0].isoformat())["data"]
    assert invoices


def test_an_empty_result_is_2000(client: httpx.Client) -> None:
    body = call(client, "get-orders", start="900000", end="900500")
    assert body == {"success": 0, "errorcode": 2000, "message": "No orders found"}
    assert call(client, "get-orders", date="2001-01-01")["errorcode"] == 2000
    assert call(client, "get-coupon", start="5000")["message"] == "No coupons found"


def test_a_window_of_5000_orders_is_served() -> None:
    with Simulator(generate(seed=2, orders=12_000, anchor=ANCHOR)) as sim:
        body = httpx.get(sim.base_url, params={**AUTH, "get-orders": "", "start": "1", "end": "5000"},
                         timeout=30).json()
        assert len(body["data"]) == len(sim.dataset.orders.window(1, 5000)) > 4500


def test_customer_credit_details(sim: Simulator, client: httpx.Client) -> None:
    credit = next(iter(sim.dataset.customer_credits.values()))
    rows = call(client, "get-customercredits", customerid=str(credit.customer_id))["data"]
    assert rows and all(int(r["customerid"]) == credit.customer_id for r in rows)
    assert {"id", "productid", "categoryid"} <= set(rows[0])
    total = sum((num(r["value"]) or Decimal(0) for r in rows), Decimal(0))
    assert total == sum((c.value for c in sim.dataset.customer_credits.values()
                         if c.customer_id == credit.customer_id), Decimal(0))
    assert call(client, "get-customercredits", customerid="99999")["errorcode"] == 2000


def test_input_functions(sim: Simulator, client: httpx.Client) -> None:
    assert call(client, "get-confirmedweborder")["errorcode"] == 2002
    assert call(client, "get-confirmedweborder", weborderid="77")["errorcode"] == 2003
    assert call(client, "get-confirmedweborder", weborderid="503")["errorcode"] == 2001
    assert call(client, "get-confirmedweborder", weborderid="501") == {
        "success": 1, "webordertime": "2026-10-27 18:30:00"}

    unsigned = next(i for i in sim.dataset.invoices if i.doc_type == 1 and not i.from_vat_ticket)
    signed = next(i for i in sim.dataset.invoices if i.doc_type == 1 and i.from_vat_ticket)
    assert call(client, "get-invoicesigned", documentnr="")["errorcode"] == 2001
    assert call(client, "get-invoicesigned", documentnr="F1999-00001")["errorcode"] == 2000
    assert call(client, "get-creditnotesigned", documentnr=unsigned.number)["errorcode"] == 2000
    assert call(client, "get-invoicesigned", documentnr=signed.number)["errorcode"] == 2002
    first = call(client, "get-invoicesigned", documentnr=unsigned.number)
    assert first["success"] == 1 and first["vatticket"]
    assert call(client, "get-invoicesigned", documentnr=unsigned.number)["errorcode"] == 2002
    assert call(client, "get-offersigned", documentnr="")["errorcode"] == 2001

    assert call(client, "get-reservationpersons")["errorcode"] == 2001
    persons = call(client, "get-reservationpersons", date="2026-10-31")
    assert persons["success"] == 1 and persons["persons"][0] == 1
    assert call(client, "get-reservationpersons", date="2026-11-02")["errorcode"] == 2000  # Monday
    assert call(client, "get-reservationhours", persons="2")["errorcode"] == 2001
    assert call(client, "get-reservationhours", date="2026-10-31")["errorcode"] == 2002
    hours = call(client, "get-reservationhours", date="2026-10-31", persons="2")
    assert hours["success"] == 1 and "18:00" in hours["hours"]


def test_unknown_or_missing_function_is_http_400(client: httpx.Client) -> None:
    for params in ({**AUTH, "get-nothing": ""}, AUTH):
        response = client.get("", params=params)
        assert response.status_code == 400
        assert response.json() == {"error": "unknown function"}
    assert set(FUNCTIONS) >= set(LIST_FUNCTIONS)


def test_api_answers_on_every_path(sim: Simulator) -> None:
    root = sim.base_url.removesuffix("api/")
    for url in (sim.base_url, root + "api", root):
        assert httpx.get(url, params={**AUTH, "get-printers": ""}).json()["success"] == 1


# --- auth and limits ---------------------------------------------------------------------


def test_empty_and_wrong_credentials(client: httpx.Client) -> None:
    assert call(client, "get-users", auth={"licname": "demo", "token": ""})["errorcode"] == 1001
    assert call(client, "get-users", auth={})["errorcode"] == 1001
    wrong = call(client, "get-users", auth={"licname": "demo", "token": "nope"})
    assert wrong == {"success": 0, "errorcode": 1002, "message": "Token or name not valid"}
    assert call(client, "get-users", auth={"licname": "ghost", "token": "demo-token"})["errorcode"] == 1002


def test_five_bad_logins_block_the_ip_for_30_minutes(
    sim: Simulator, client: httpx.Client, clock: FakeClock
) -> None:
    bad = {"licname": "demo", "token": "wrong"}
    for _ in range(5):
        assert call(client, "get-users", auth=bad)["errorcode"] == 1002
    blocked = call(client, "get-users")
    assert blocked["errorcode"] == 1004
    assert blocked["message"] == ("5 bad logins reached, your ip adress is blocked till "
                                  "'2026-10-27 14:30:00'")
    clock.now += dt.timedelta(minutes=29)
    assert call(client, "get-users")["errorcode"] == 1004
    clock.now += dt.timedelta(minutes=1)
    assert call(client, "get-users")["success"] == 1
    # The count starts again after the block.
    assert call(client, "get-users", auth=bad)["errorcode"] == 1002
    assert call(client, "get-users")["success"] == 1
    assert sim.stats()["bad_logins"] == {"127.0.0.1": 6}


def test_daily_limit_per_license_and_local_day(
    sim: Simulator, client: httpx.Client, clock: FakeClock
) -> None:
    sim.set_daily_limit(3)
    for _ in range(3):
        assert call(client, "get-printers")["success"] == 1
    assert call(client, "get-printers") == {
        "success": 0, "errorcode": 1003,
        "message": "Limit of '3' requests per day reached, next request possible '2026-10-28 00:00:00'"}
    other = {"licname": "other", "token": "other-token"}
    assert call(client, "get-printers", auth=other)["success"] == 1
    assert sim.used_today("demo") == 3
    clock.now = dt.datetime(2026, 10, 27, 23, 30, tzinfo=UTC)  # 00:30 on the 28th in Brussels
    assert call(client, "get-printers")["success"] == 1


def test_unlicensed_module_is_1005(sim: Simulator, client: httpx.Client) -> None:
    sim.unlicense("get-orders", "demo")
    assert call(client, "get-orders") == {"success": 0, "errorcode": 1005,
                                          "message": "No license for this module"}
    assert call(client, "get-orders", auth={"licname": "other", "token": "other-token"})["success"] == 1
    assert call(client, "get-products")["success"] == 1
    sim.unlicense("get-products")
    assert call(client, "get-products", auth={"licname": "other", "token": "other-token"})[
        "errorcode"] == 1005
    sim.relicense("get-products")
    assert call(client, "get-products")["success"] == 1


# --- faults ---------------------------------------------------------------------------------


def test_5xx_html_and_truncated_faults(sim: Simulator, client: httpx.Client) -> None:
    params = {**AUTH, "get-products": ""}
    sim.inject_fault("5xx", count=2)
    assert client.get("", params=params).status_code == 503
    assert client.get("", params=params).status_code == 503
    sim.inject_fault("html")
    page = client.get("", params=params)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.lstrip().startswith("<!DOCTYPE html>")
    sim.inject_fault("truncated")
    cut = client.get("", params=params)
    assert cut.headers["content-type"] == "application/json"
    assert int(cut.headers["content-length"]) == len(cut.content)
    with pytest.raises(ValueError):
        cut.json()
    full = client.get("", params=params)
    assert full.json()["success"] == 1
    assert len(full.content) // 2 == len(cut.content)
    assert sim.stats()["faults_served"] == 4


def test_slow_fault_answers_after_the_delay(sim: Simulator, client: httpx.Client) -> None:
    sim.inject_fault("slow", delay=0.2)
    response = client.get("", params={**AUTH, "get-printers": ""})
    assert response.json()["success"] == 1
    assert response.elapsed >= dt.timedelta(seconds=0.2)


def test_hang_fault_times_out_and_does_not_block_stop(clock: FakeClock) -> None:
    sim = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), clock=clock)
    sim.start()
    sim.inject_fault("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(sim.base_url, params={**AUTH, "get-printers": ""}, timeout=0.3)
    assert httpx.get(sim.base_url, params={**AUTH, "get-printers": ""}).json()["success"] == 1
    sim.inject_fault("hang")
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as http, pytest.raises(httpx.ReadTimeout):
        http.get(sim.base_url, params={**AUTH, "get-printers": ""})
    sim.stop()


def test_reset_fault_drops_the_connection(sim: Simulator, client: httpx.Client) -> None:
    sim.inject_fault("reset")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get("", params={**AUTH, "get-printers": ""})
    assert client.get("", params={**AUTH, "get-printers": ""}).json()["success"] == 1


# --- changes ------------------------------------------------------------------------------


def test_touch_changes_visible_fields(sim: Simulator, client: httpx.Client) -> None:
    before = {p["id"]: p for p in records_of(call(client, "get-products"), "get-products", "data")}
    product = sim.dataset.products[5]
    sim.touch("products", [5])
    after = {int(p["id"]): p for p in call(client, "get-products")["data"]}
    assert num(after[5]["price"]) == product.price + Decimal("0.10")
    assert int(after[5]["modtime"]) > product.modtime
    assert len(after) == len(before)

    table = sim.dataset.pos_tables[3]
    sim.touch("pos_tables", [3])
    tables = {int(t["id"]): t for t in call(client, "get-tables")["data"]}
    assert int(tables[3]["status"]) == (table.status + 1) % 3

    sim.touch("categories", [2])
    assert call(client, "get-categories")["data"][1]["name"].endswith(" (2)")

    order = next(o for o in sim.dataset.orders if not o.is_labour)
    sim.touch("orders", [order.id])
    raw = call(client, "get-orders", start=str(order.id), end=str(order.id))["data"][0]
    got = read("orders", raw)
    assert got["lines"][0]["quantity"] == order.lines[0].quantity + 1
    assert got["total_price"] > order.total_price
    assert sum(got["payments"].values(), Decimal(0)) == got["total_price"]


def test_delete_add_orders_and_use_coupons(
    sim: Simulator, client: httpx.Client, clock: FakeClock
) -> None:
    sim.delete("customers", [1, 2])
    ids = [int(c["id"]) for c in call(client, "get-customers")["data"]]
    assert 1 not in ids and 2 not in ids and 3 in ids

    highest = sim.dataset.orders.max_id
    sim.delete("orders", [highest])
    new = sim.add_orders(3)
    assert new == [highest + 1, highest + 2, highest + 3]  # a voided id is not reused
    got = call(client, "get-orders", start=str(highest))["data"]
    assert [int(o["id"]) for o in got] == new
    assert {o["ordertime"] for o in got} == {"2026-10-27 14:00:00"}
    today = [int(o["id"]) for o in call(client, "get-orders", date="2026-10-27")["data"]]
    assert today[-3:] == new

    at = dt.datetime(2026, 10, 27, 20, 15, 7, tzinfo=TZ)
    later = sim.add_orders(1, at=at)
    assert call(client, "get-orders", start=str(later[0]))["data"][0]["ordertime"] == (
        "2026-10-27 20:15:07")

    unused = next(c for c in sim.dataset.coupons if not c.is_used)
    sim.use_coupons([unused.id])
    coupon = call(client, "get-coupon", start=str(unused.id), end=str(unused.id))["data"][0]
    assert flag(coupon["used"])

    with pytest.raises(KeyError):
        sim.touch("orders", [10**9])
    with pytest.raises(KeyError):
        sim.delete("nothing", [1])


# --- control over HTTP and stats ----------------------------------------------------------------


def test_control_endpoints(sim: Simulator, client: httpx.Client) -> None:
    root = sim.base_url.removesuffix("api/")

    def control(action: str, **body: Any) -> Any:
        response = client.post(f"{root}_control/{action}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    control("envelope", style="named")
    assert "products" in call(client, "get-products")
    control("touch", resource="printers", ids=[1])
    assert call(client, "get-printers")["printers"][0]["printername"].endswith(" (2)")
    control("delete", resource="printers", ids=[4])
    assert len(call(client, "get-printers")["printers"]) == 3
    new_ids = control("add_orders", count=2, at="2026-10-27T15:00:00+01:00")["ids"]
    assert [int(o["id"]) for o in call(client, "get-orders", start=str(new_ids[0]))["orders"]] == new_ids
    coupon = next(c for c in sim.dataset.coupons if not c.is_used)
    control("use_coupons", ids=[coupon.id])
    assert sim.dataset.coupons.get(coupon.id).is_used  # type: ignore[union-attr]
    control("fault", kind="5xx", count=1)
    assert client.get("", params={**AUTH, "get-printers": ""}).status_code == 503
    control("unlicense", function="get-users", license="demo")
    assert call(client, "get-users")["errorcode"] == 1005
    control("daily_limit", limit=0)
    assert call(client, "get-printers")["errorcode"] == 1003
    control("daily_limit", limit=500)
    control("clock", now="2026-10-30T10:00:00+01:00")
    late = control("add_orders", count=1)["ids"]
    assert call(client, "get-orders", start=str(late[0]))["orders"][0]["ordertime"] == (
        "2026-10-30 10:00:00")
    assert client.post(f"{root}_control/envelope", json={"style": "xml"}).status_code == 400
    assert client.post(f"{root}_control/nothing", json={}).status_code == 404

    stats = client.get(f"{root}_control/stats").json()
    assert stats["requests"] == 8  # control requests are not counted
    assert stats["by_function"]["get-printers"] == 4
    assert stats["by_license"] == {"demo": 8}
    assert stats["errors"] == {"1005": 1, "1003": 1}
    assert stats["faults_served"] == 1
    control("reset_stats")
    assert sim.stats()["requests"] == 0 and sim.request_log == []


def test_request_log_and_output_never_show_the_token(
    sim: Simulator, client: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    call(client, "get-orders", start="1", end="20")
    call(client, "get-users", auth={"licname": "demo", "token": "wrong-token"})
    assert sim.request_log[0] == ("get-orders", {"start": "1", "end": "20"}, "demo", None)
    assert sim.request_log[1].errorcode == 1002
    assert "token" not in repr(sim.request_log)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    stats = sim.stats()
    assert stats["requests"] == 2 and stats["errors"] == {1002: 1}


def test_keep_alive_responses_carry_a_content_length(client: httpx.Client) -> None:
    response = client.get("", params={**AUTH, "get-payment": ""})
    assert response.http_version == "HTTP/1.1"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers.get("connection", "").lower() != "close"
