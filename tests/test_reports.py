"""The report views, checked against figures computed here in Python from the simulator's
canonical data (Decimal, the documented rounding rule), on SQLite and on Postgres."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, insert

from syncer import reports
from syncer import tables as t
from syncer.db import make_engine, migrate
from syncer.ledger import api_day, utcnow
from syncer.simulator import Dataset, Simulator, generate
from syncer.simulator.data import Order
from tests.conftest import ANCHOR, LICENSE, SUITE_DATABASES, TOKEN, database
from tests.helpers import backfill, cli_env, ledger_count, run_cli

OTHER = "other"  # a second shop in the same database
BRUSSELS = ZoneInfo("Europe/Brussels")
CENT = Decimal("0.01")
DST_DAY = dt.date(2026, 10, 25)  # Brussels: 25 hours, 02:00-03:00 twice
Key = tuple[Any, ...]


# --- the documented rules, in Python ----------------------------------------------------


def cents(amount: Decimal) -> Decimal:
    """Round to the cent, half away from zero."""
    return amount.quantize(CENT, ROUND_HALF_UP)


def split_vat(gross: Decimal, rate: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(base, VAT, total) of a group's VAT-inclusive amount: total and base rounded to the cent."""
    total = cents(gross)
    base = cents(total * 100 / (100 + rate))
    return base, total - base, total


def local(moment: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    # Through UTC: a wall time in the spring gap reads as the hour after it.
    return moment.astimezone(dt.UTC).astimezone(zone)


def counts_on(order: Order, zone: ZoneInfo) -> dt.datetime:
    """The moment an order counts for: its order time, a labour record's clock-in."""
    if order.is_labour and order.clock_in is not None:
        return local(order.clock_in, zone)
    return local(order.ordered_at, zone)


def day_of(order: Order, zone: ZoneInfo, day_starts_at: dt.time = dt.time(0)) -> dt.date:
    """The business day: the local date, or the day before when earlier than its start."""
    at = counts_on(order, zone)
    return at.date() - dt.timedelta(days=1) if at.time() < day_starts_at else at.date()


def sales(ds: Dataset) -> list[Order]:
    return [o for o in ds.orders if not o.is_labour]


def items(order: Order) -> Iterator[tuple[Decimal, Decimal]]:
    """(rate, VAT-inclusive amount) of every line and every subproduct (per unit of its line)."""
    for line in order.lines:
        yield line.tax_rate, line.quantity * line.price
        for sub in line.subproducts:
            yield sub.tax_rate, line.quantity * sub.price


def ticket_vat(order: Order) -> dict[Decimal, tuple[Decimal, Decimal, Decimal]]:
    """Per rate (base, VAT, total) of one ticket, as its receipt shows them: rounded per ticket."""
    gross: dict[Decimal, Decimal] = defaultdict(Decimal)
    for rate, amount in items(order):
        gross[rate] += amount
    return {rate: split_vat(amount, rate) for rate, amount in gross.items()}


@dataclass
class Shop:
    license: str
    ds: Dataset
    # Catalog names as they were before some rows were deleted at the source.
    products: dict[int, Any]
    categories: dict[int, Any]
    customers: dict[int, Any]


MIDNIGHT = dt.time(0)


def expected_daily_sales(shop: Shop, start: dt.time = MIDNIGHT) -> dict[Key, Key]:
    """Revenue is the tickets' totals; VAT and base are added up from each ticket's rates."""
    zone = shop.ds.zone
    out: dict[Key, Key] = {}
    for o in sales(shop.ds):
        key = (shop.license, day_of(o, zone, start), o.register_id)
        rates = ticket_vat(o).values()
        lines = sum((r[2] for r in rates), Decimal(0))
        ticket = (1, sum((line.quantity for line in o.lines), Decimal(0)), cents(o.total_price),
                  sum((r[1] for r in rates), Decimal(0)), sum((r[0] for r in rates), Decimal(0)),
                  cents(o.total_price) - lines, cents(sum(o.payments.values(), Decimal(0))))
        before = out.get(key, (0, Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(0),
                               Decimal(0)))
        out[key] = tuple(a + b for a, b in zip(before, ticket, strict=True))
    return out


def expected_vat(shop: Shop, start: dt.time = MIDNIGHT) -> dict[Key, Key]:
    out: dict[Key, Key] = {}
    for o in sales(shop.ds):
        day = day_of(o, shop.ds.zone, start)
        for rate, split in ticket_vat(o).items():
            before = out.get((shop.license, day, rate), (Decimal(0),) * 3)
            out[shop.license, day, rate] = tuple(a + b for a, b in zip(before, split, strict=True))
    return out


def expected_payments(shop: Shop, start: dt.time = MIDNIGHT) -> dict[Key, Key]:
    count: dict[Key, int] = defaultdict(int)
    amount: dict[Key, Decimal] = defaultdict(Decimal)
    for o in sales(shop.ds):
        for method, paid in o.payments.items():
            key = (shop.license, day_of(o, shop.ds.zone, start), method)
            count[key] += 1
            amount[key] += paid
    return {key: (count[key], cents(amount[key])) for key in count}


def expected_product_sales(shop: Shop, start: dt.time = MIDNIGHT) -> dict[Key, Key]:
    quantity: dict[Key, Decimal] = defaultdict(Decimal)
    products: dict[Key, Decimal] = defaultdict(Decimal)
    supplements: dict[Key, Decimal] = defaultdict(Decimal)
    for o in sales(shop.ds):
        day = day_of(o, shop.ds.zone, start)
        for line in o.lines:
            key = (shop.license, day, line.product_id)
            quantity[key] += line.quantity
            products[key] += line.quantity * line.price
            supplements[key] += sum((line.quantity * s.price for s in line.subproducts), Decimal(0))
    out = {}
    for key, sold in quantity.items():
        product = shop.products[key[2]]
        category = shop.categories[product.category_id]
        out[key] = (product.name, product.category_id, category.name, sold,
                    cents(products[key]), cents(supplements[key]),
                    cents(products[key]) + cents(supplements[key]))
    return out


def expected_hourly(shop: Shop, start: dt.time = MIDNIGHT) -> dict[Key, Key]:
    zone = shop.ds.zone
    days: dict[int, set[dt.date]] = defaultdict(set)
    orders: dict[Key, int] = defaultdict(int)
    revenue: dict[Key, Decimal] = defaultdict(Decimal)
    for o in sales(shop.ds):
        day = day_of(o, zone, start)
        key = (shop.license, day.isoweekday(), counts_on(o, zone).hour)
        days[day.isoweekday()].add(day)
        orders[key] += 1
        revenue[key] += cents(o.total_price)
    return {key: (len(days[key[1]]), orders[key], revenue[key]) for key in orders}


def expected_labor(shop: Shop, start: dt.time = MIDNIGHT) -> dict[Key, Key]:
    out = {}
    for o in shop.ds.orders:
        if not o.is_labour:
            continue
        assert o.clock_in is not None and o.clock_out is not None
        seconds = int((o.clock_out.astimezone(dt.UTC) - o.clock_in.astimezone(dt.UTC)).total_seconds())
        hours = (Decimal(seconds) / 3600).quantize(CENT, ROUND_HALF_UP)
        key = (shop.license, day_of(o, shop.ds.zone, start), o.user_id,
               o.clock_in.astimezone(dt.UTC))
        assert o.user_id is not None
        out[key] = (shop.ds.users[o.user_id].username, o.clock_out.astimezone(dt.UTC), hours)
    return out


def expected_liabilities(shop: Shop, today: dt.date) -> dict[Key, Key]:
    out: dict[Key, Key] = {}
    vouchers = [v for v in shop.ds.gift_vouchers.values()
                if v.valid_until is None or v.valid_until >= today]
    if vouchers:
        out[shop.license, "gift_voucher", None] = (
            None, len(vouchers), cents(sum((v.value for v in vouchers), Decimal(0))))
    by_customer: dict[int, list[Decimal]] = defaultdict(list)
    for credit in shop.ds.customer_credits.values():
        by_customer[credit.customer_id].append(credit.value)
    for customer_id, values in by_customer.items():
        if sum(values) == 0:
            continue
        customer = shop.customers.get(customer_id)
        name = None
        if customer is not None:
            name = f"{customer.first_name or ''} {customer.name or ''}".strip() or None
        out[shop.license, "customer_credit", customer_id] = (
            name, len(values), cents(sum(values, Decimal(0))))
    return out


# --- two shops synced through the CLI, some of their catalog deleted since --------------


@dataclass
class Synced:
    engine: Engine
    url: str
    base_url: str
    shops: list[Shop]
    today: dt.date

    def expected(self, compute: Any) -> dict[Key, Key]:
        out: dict[Key, Key] = {}
        for shop in self.shops:
            out.update(compute(shop))
        return out


def add_edge_cases(sim: Simulator) -> None:
    """Orders a UTC day would put on the wrong day, shifts across midnight and DST, and
    vouchers valid past any day the suite runs on (the generated ones end within a year
    of ANCHOR, and the liabilities count the ones valid today)."""
    for moment in ("2026-10-25 00:15", "2026-10-25 02:45", "2026-10-25 23:40", "2026-10-26 00:30",
                   "2026-10-26 00:40"):
        sim.add_orders(2, dt.datetime.fromisoformat(moment).replace(tzinfo=BRUSSELS))
    ds = sim.dataset
    user = sorted(ds.users)[2]
    shifts = (("2026-10-25 01:00", "2026-10-25 09:00"),  # 9 hours: the clocks went back at 03:00
              ("2026-10-26 22:00", "2026-10-27 06:30"))  # a night shift counts on its first day
    for start, end in shifts:
        ds.last_order_id = ds.orders.max_id + 1
        clock_in = dt.datetime.fromisoformat(start).replace(tzinfo=BRUSSELS)
        clock_out = dt.datetime.fromisoformat(end).replace(tzinfo=BRUSSELS)
        ds.orders.append(Order(ds.last_order_id, None, 1, user, Decimal("0.00"), clock_out,
                               clock_in, clock_out, (), {}))
    for voucher in sorted(ds.gift_vouchers)[:4]:
        ds.gift_vouchers[voucher] = replace(ds.gift_vouchers[voucher],
                                            valid_until=dt.date(2099, 12, 31))


@pytest.fixture(scope="module", params=SUITE_DATABASES)
def synced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    """Two shops backfilled into one database; then the first deletes catalog rows and syncs again."""
    tmp = tmp_path_factory.mktemp(f"reports-{request.param}")
    cleanup = ExitStack()
    url = cleanup.enter_context(database(request.param, tmp))
    main = Simulator(generate(seed=1, orders=600, anchor=ANCHOR), licenses={LICENSE: TOKEN})
    other = Simulator(generate(seed=2, orders=300, anchor=ANCHOR), licenses={OTHER: TOKEN})
    add_edge_cases(main)
    try:
        main.start()
        other.start()
        backfill(url, main, tmp, LICENSE)
        backfill(url, other, tmp, OTHER)
        shops = [Shop(name, sim.dataset, dict(sim.dataset.products), dict(sim.dataset.categories),
                      dict(sim.dataset.customers)) for name, sim in ((LICENSE, main), (OTHER, other))]

        ds = main.dataset
        sold = sorted({line.product_id for o in ds.orders for line in o.lines})
        gone_products = sold[:3]
        gone_category = ds.products[sold[0]].category_id
        assert gone_category is not None
        credit_holders = sorted({c.customer_id for c in ds.customer_credits.values()})
        valid_vouchers = sorted(v.id for v in ds.gift_vouchers.values()
                                if v.valid_until is None or v.valid_until > api_day(utcnow(), BRUSSELS))
        main.delete("products", gone_products)
        main.delete("categories", [gone_category])
        main.delete("customers", credit_holders[:2])  # their credit stays, and their name
        main.delete("customer_credits", credit_holders[2:4])
        main.delete("gift_vouchers", valid_vouchers[:2])
        backfill(url, main, tmp, LICENSE)

        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(t.products)
                                .where(t.products.c.deleted_at.is_not(None))).scalar_one() == 3
            today = conn.execute(sa.text("SELECT CURRENT_DATE")).scalar_one()
        if isinstance(today, str):  # SQLite
            today = dt.date.fromisoformat(today)
        yield Synced(engine, url, main.base_url, shops, today)
        engine.dispose()
    finally:
        main.stop()
        other.stop()
        cleanup.close()


def view(synced: Synced, name: str, width: int) -> dict[Key, Key]:
    """The view's rows (read the way `syncer report` reads them) as key -> values."""
    rows = reports.fetch(synced.engine, reports.get(name))
    out = {}
    for row in rows:
        values = tuple(row.values())
        key, rest = values[:width], values[width:]
        assert key not in out, (name, key)
        out[key] = rest
    return out


def assert_same(actual: dict[Key, Key], expected: dict[Key, Key]) -> None:
    assert expected
    assert sorted(actual, key=repr) == sorted(expected, key=repr)
    for key, values in expected.items():
        assert actual[key] == values, (key, actual[key], values)
        for got in actual[key]:  # exact types, not floats
            assert not isinstance(got, float), (key, actual[key])


# --- the data set exercises what the views must get right ---------------------------------


def test_the_data_exercises_dst_mixed_vat_labour_and_expiry(synced: Synced) -> None:
    shop = synced.shops[0]
    zone = shop.ds.zone
    days = {counts_on(o, zone).date() for o in sales(shop.ds)}
    assert DST_DAY in days
    day_start = dt.datetime.combine(DST_DAY, dt.time(), zone)
    day_end = dt.datetime.combine(DST_DAY + dt.timedelta(days=1), dt.time(), zone)
    assert (day_end.astimezone(dt.UTC) - day_start.astimezone(dt.UTC)) == dt.timedelta(hours=25)
    # Sales in the hour that happens twice, and around midnight where UTC has another day.
    on_dst_day = [counts_on(o, zone) for o in sales(shop.ds) if counts_on(o, zone).date() == DST_DAY]
    assert any(at.hour == 2 for at in on_dst_day)
    assert any(counts_on(o, zone).date() != o.ordered_at.astimezone(dt.UTC).date()
               for o in sales(shop.ds))
    # A line whose supplement is taxed at another rate than its product (a drink in a menu).
    assert any(sub.tax_rate != line.tax_rate
               for o in sales(shop.ds) for line in o.lines for sub in line.subproducts)
    assert {Decimal(0), Decimal(6), Decimal(12), Decimal(21)} <= {
        rate for o in sales(shop.ds) for rate, _ in items(o)}
    labour = [o for o in shop.ds.orders if o.is_labour]
    assert len(labour) >= 3
    assert any(o.clock_in is not None and o.clock_out is not None
               and o.clock_out.astimezone(dt.UTC) - o.clock_in.astimezone(dt.UTC)
               != o.clock_out.replace(tzinfo=None) - o.clock_in.replace(tzinfo=None) for o in labour)
    until = [v.valid_until for v in shop.ds.gift_vouchers.values()]
    assert None in until
    assert any(u is not None and u < synced.today for u in until)
    assert any(u is not None and u >= synced.today for u in until)


# --- each view, exactly ----------------------------------------------------------------


def test_daily_sales_per_local_day_and_register(synced: Synced) -> None:
    actual = view(synced, "report_daily_sales", 3)
    assert_same(actual, synced.expected(expected_daily_sales))
    # The 25-hour day is one day, with the orders of all its hours.
    assert any(key[1] == DST_DAY for key in actual)


def test_vat_per_day_and_rate_from_lines_and_supplements(synced: Synced) -> None:
    actual = view(synced, "report_vat", 3)
    assert_same(actual, synced.expected(expected_vat))
    for base, vat, total in actual.values():
        assert base + vat == total


def test_vat_and_daily_sales_agree_on_revenue(synced: Synced) -> None:
    revenue: dict[Key, Decimal] = defaultdict(Decimal)
    for (license, day, _register), values in view(synced, "report_daily_sales", 3).items():
        revenue[license, day] += values[2]
    totals: dict[Key, Decimal] = defaultdict(Decimal)
    for (license, day, _rate), (_base, _vat, total) in view(synced, "report_vat", 3).items():
        totals[license, day] += total
    assert revenue == totals


def test_payments_per_day_and_method(synced: Synced) -> None:
    assert_same(view(synced, "report_payments", 3), synced.expected(expected_payments))


def test_product_sales_keep_the_names_of_deleted_products(synced: Synced) -> None:
    actual = view(synced, "report_product_sales", 3)
    assert_same(actual, synced.expected(expected_product_sales))
    shop = synced.shops[0]
    assert any(values[5] > 0 for values in actual.values())  # supplements shown apart
    with synced.engine.connect() as conn:
        deleted = set(conn.execute(sa.select(t.products.c.id).where(
            t.products.c.license == LICENSE, t.products.c.deleted_at.is_not(None))).scalars())
    assert len(deleted) == 3
    named = {key[2]: values[0] for key, values in actual.items() if key[0] == LICENSE}
    assert all(named[p] == shop.products[p].name for p in deleted)


def test_hourly_orders_and_revenue_per_weekday_and_hour(synced: Synced) -> None:
    actual = view(synced, "report_hourly", 3)
    assert_same(actual, synced.expected(expected_hourly))
    assert all(1 <= weekday <= 7 and 0 <= hour <= 23 for _, weekday, hour in actual)


def test_labor_pairs_and_hours_worked(synced: Synced) -> None:
    rows = reports.fetch(synced.engine, reports.get("report_labor"))
    actual = {(r["license"], r["day"], r["user_id"], r["clock_in"]):
              (r["username"], r["clock_out"], r["hours_worked"]) for r in rows}
    assert len(actual) == len(rows)
    assert_same(actual, synced.expected(expected_labor))
    assert Decimal("9.00") in {values[2] for values in actual.values()}  # across the DST change


def test_liabilities_count_valid_vouchers_and_live_credits(synced: Synced) -> None:
    actual = view(synced, "report_liabilities", 3)
    assert_same(actual, synced.expected(lambda shop: expected_liabilities(shop, synced.today)))


# --- syncer report --------------------------------------------------------------------------


def report(synced: Synced, tmp_path: Path, *args: str) -> Any:
    return run_cli(["report", *args], cli_env(synced.url, synced.base_url), cwd=tmp_path)


def test_report_json_filters_days_and_license(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path, "report_vat", "--from", "2026-10-25", "--to", "2026-10-26",
                    "--license", LICENSE, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = {k: v for k, v in synced.expected(expected_vat).items()
                if k[0] == LICENSE and DST_DAY <= k[1] <= dt.date(2026, 10, 26)}
    assert len(rows) == len(expected)
    for row in rows:
        assert set(row) == {"license", "day", "tax_rate", "base", "vat", "total"}
        base, vat, total = expected[LICENSE, dt.date.fromisoformat(row["day"]), Decimal(row["tax_rate"])]
        # Money as strings with its cents: exact, and no float in between.
        assert (row["base"], row["vat"], row["total"]) == (f"{base:.2f}", f"{vat:.2f}", f"{total:.2f}")


def test_report_csv_has_a_header_and_every_row(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path, "payments", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    expected = synced.expected(expected_payments)
    assert len(rows) == len(expected)
    for row in rows:
        count, amount = expected[row["license"], dt.date.fromisoformat(row["day"]), row["method"]]
        assert (int(row["payments"]), Decimal(row["amount"])) == (count, amount)


def test_report_labor_json_shows_local_times(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path, "labor", "--license", LICENSE, "--from", "2026-10-25",
                    "--to", "2026-10-25", "--format", "json")
    assert result.exit_code == 0, result.output
    shifts = {(r["clock_in"], r["clock_out"], r["hours_worked"]) for r in json.loads(result.stdout)}
    assert ("2026-10-25T01:00:00+02:00", "2026-10-25T09:00:00+01:00", "9.00") in shifts


def test_report_table_for_people(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path, "report_daily_sales", "--license", OTHER,
                    "--from", "2026-10-27", "--to", "2026-10-27")
    assert result.exit_code == 0, result.output
    assert "report_daily_sales, license other" in result.stdout
    assert "revenue incl vat" in result.stdout
    day = {k: v for k, v in synced.expected(expected_daily_sales).items()
           if k[0] == OTHER and k[1] == dt.date(2026, 10, 27)}
    assert day
    for values in day.values():
        assert f"{values[2]:.2f}" in result.stdout


def test_report_without_rows_says_so(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path, "vat", "--from", "2001-01-01", "--to", "2001-01-31")
    assert result.exit_code == 0, result.output
    assert "no rows" in result.stdout
    result = report(synced, tmp_path, "vat", "--to", "2001-01-31", "--format", "json")
    assert json.loads(result.stdout) == []


def test_unknown_report_is_a_usage_error_listing_the_names(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path, "report_turnover")
    assert result.exit_code == 2
    for name in reports.NAMES:
        assert name in result.output.replace("\n", " ")


def test_dates_on_a_report_without_days_are_a_usage_error(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path, "hourly", "--from", "2026-10-25")
    assert result.exit_code == 2
    assert "no day column" in result.output
    result = report(synced, tmp_path, "vat", "--from", "25/10/2026")
    assert result.exit_code == 2


def test_money_columns_of_the_views_are_exact_numbers(synced: Synced) -> None:
    money = [(r, c.name) for r in reports.REPORTS for c in r.view.columns if isinstance(c.type, sa.Numeric)]
    assert money
    # What `syncer report` reads is Decimal on every database (SQLite's views carry no types).
    for report, column in money:
        values = [row[column] for row in reports.fetch(synced.engine, report)]
        assert all(isinstance(v, Decimal) for v in values if v is not None), (report.name, column)
    if synced.engine.dialect.name == "sqlite":
        return
    # A server's view columns are exact numbers too, for every tool that reads them.
    inspector = sa.inspect(synced.engine)
    types = {f"{r.name}.{c['name']}": c["type"] for r in {r for r, _ in money}
             for c in inspector.get_columns(r.name)}
    inexact = {f"{r.name}.{column}": repr(types[f"{r.name}.{column}"]) for r, column in money
               if not isinstance(types[f"{r.name}.{column}"], sa.Numeric)
               or isinstance(types[f"{r.name}.{column}"], sa.Float)}
    assert inexact == {}


# --- rounding and pairing, on hand-made rows ------------------------------------------------

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def put_order(conn: Any, order_id: int, day: dt.date, *, lines: Sequence[tuple[Any, ...]] = (),
              **columns: Any) -> None:
    """An order with lines (quantity, price, rate, [(supplement price, rate), ...])."""
    conn.execute(insert(t.orders).values(
        license="shop", id=order_id, business_date=day, local_hour=12, local_weekday=day.isoweekday(),
        content_hash="0" * 32, synced_at=NOW, **columns))
    for line_no, (quantity, price, rate, subs) in enumerate(lines, start=1):
        conn.execute(insert(t.order_lines).values(
            license="shop", order_id=order_id, line_no=line_no, quantity=Decimal(quantity),
            product_id=1, price=Decimal(price), tax_rate=Decimal(rate), synced_at=NOW))
        for slot, (sub_price, sub_rate) in enumerate(subs, start=1):
            conn.execute(insert(t.order_line_subproducts).values(
                license="shop", order_id=order_id, line_no=line_no, slot=slot, subproduct_id=slot,
                price=Decimal(sub_price), tax_rate=Decimal(sub_rate), synced_at=NOW))


@pytest.mark.parametrize(
    ("lines", "rate", "expected"),
    [
        # 0.14 / 1.12 = 0.125 exactly: half a cent, rounded up on both databases.
        ([("1", "0.14", "12", [])], Decimal(12), (Decimal("0.13"), Decimal("0.01"), Decimal("0.14"))),
        ([("1", "10.00", "12", []), ("1", "4.14", "12", [])], Decimal(12),
         (Decimal("12.63"), Decimal("1.51"), Decimal("14.14"))),
        # A refund: away from zero.
        ([("-1", "0.14", "12", [])], Decimal(12),
         (Decimal("-0.13"), Decimal("-0.01"), Decimal("-0.14"))),
        # The supplement at 21% goes to the 21% group, per unit of its line.
        ([("2", "15.00", "12", [("2.80", "21")])], Decimal(21),
         (Decimal("4.63"), Decimal("0.97"), Decimal("5.60"))),
        ([("0.5", "3.30", "5.5", [])], Decimal("5.5"),
         (Decimal("1.56"), Decimal("0.09"), Decimal("1.65"))),
    ],
)
def test_vat_split_is_the_same_cents_on_both_databases(
    engine: Engine, lines: list[tuple[Any, ...]], rate: Decimal, expected: tuple[Decimal, ...]
) -> None:
    day = dt.date(2026, 10, 25)
    with engine.begin() as conn:
        put_order(conn, 1, day, lines=lines)
    rows = {r["tax_rate"]: (r["base"], r["vat"], r["total"])
            for r in reports.fetch(engine, reports.get("vat"))}
    assert rows[rate] == expected
    gross = sum((Decimal(q) * Decimal(p) for q, p, r, _ in lines if Decimal(r) == rate), Decimal(0))
    gross += sum((Decimal(q) * Decimal(sp) for q, _, _, subs in lines for sp, sr in subs
                  if Decimal(sr) == rate), Decimal(0))
    assert split_vat(gross, rate) == expected


def brussels(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=BRUSSELS)


def test_separate_clock_in_and_clock_out_records_pair_up(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(t.users).values(license="shop", id=7, username="Lotte", synced_at=NOW))
        # Lotte: in, out; in, out across midnight; an in that never got its out; a stray out.
        events = [(10, "clock_in", "2026-10-20 08:00"), (11, "clock_out", "2026-10-20 12:30"),
                  (12, "clock_in", "2026-10-20 22:00"), (13, "clock_out", "2026-10-21 02:15"),
                  (14, "clock_in", "2026-10-22 09:00"), (15, "clock_in", "2026-10-23 09:00"),
                  (16, "clock_out", "2026-10-23 17:00"), (17, "clock_out", "2026-10-23 18:00")]
        for order_id, kind, when in events:
            moment = brussels(when)
            put_order(conn, order_id, moment.date(), user_id=7,
                      clock_in=moment if kind == "clock_in" else None,
                      clock_out=moment if kind == "clock_out" else None)
        # Another user's complete record in between changes nothing for Lotte.
        put_order(conn, 20, dt.date(2026, 10, 20), user_id=8, clock_in=brussels("2026-10-20 09:00"),
                  clock_out=brussels("2026-10-20 10:00"))
    rows = reports.fetch(engine, reports.get("labor"))
    got = sorted(((r["user_id"], r["day"], r["clock_in"], r["clock_out"], r["hours_worked"])
                  for r in rows), key=repr)

    def utc(text: str | None) -> dt.datetime | None:
        return None if text is None else brussels(text).astimezone(dt.UTC)

    want = [
        (7, dt.date(2026, 10, 20), utc("2026-10-20 08:00"), utc("2026-10-20 12:30"), Decimal("4.50")),
        (7, dt.date(2026, 10, 20), utc("2026-10-20 22:00"), utc("2026-10-21 02:15"), Decimal("4.25")),
        (7, dt.date(2026, 10, 22), utc("2026-10-22 09:00"), None, None),
        (7, dt.date(2026, 10, 23), utc("2026-10-23 09:00"), utc("2026-10-23 17:00"), Decimal("8.00")),
        (7, dt.date(2026, 10, 23), None, utc("2026-10-23 18:00"), None),
        (8, dt.date(2026, 10, 20), utc("2026-10-20 09:00"), utc("2026-10-20 10:00"), Decimal("1.00")),
    ]
    assert got == sorted(want, key=repr)


def test_hours_worked_round_to_the_hundredth(engine: Engine) -> None:
    with engine.begin() as conn:
        # 18 seconds is 0.005 hours: half a hundredth, rounded up; 17 seconds is 0.0047.
        for order_id, seconds in ((1, 18), (2, 17), (3, 7 * 3600 + 20 * 60)):
            start = brussels("2026-10-20 08:00")
            put_order(conn, order_id, start.date(), user_id=order_id, clock_in=start,
                      clock_out=start + dt.timedelta(seconds=seconds))
    hours = {r["user_id"]: r["hours_worked"] for r in reports.fetch(engine, reports.get("labor"))}
    assert hours == {1: Decimal("0.01"), 2: Decimal("0.00"), 3: Decimal("7.33")}


def test_upgrade_gives_stored_orders_their_local_day(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine, "0001")
    old_columns = [c for c in t.orders.columns
                   if c.name not in ("business_date", "local_hour", "local_weekday", "local_minute")]
    rows: list[dict[str, Any]] = [
        {"id": 1, "ordered_at": brussels("2026-10-26 00:30")},  # still 10-25 in UTC
        {"id": 2, "ordered_at": brussels("2026-10-25 02:30"), "clock_in": None},
        {"id": 3, "ordered_at": brussels("2026-10-26 02:00"), "clock_in": brussels("2026-10-25 22:00"),
         "clock_out": brussels("2026-10-26 02:00")},
        {"id": 4, "ordered_at": None},
    ]
    with engine.begin() as conn:
        for row in rows:
            conn.execute(sa.insert(sa.table("orders", *(sa.column(c.name, c.type) for c in old_columns)))
                         .values(license="shop", content_hash="0" * 32, synced_at=NOW, **row))
    migrate(engine, timezone="Europe/Brussels")
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.orders.c.id, t.orders.c.business_date, t.orders.c.local_hour,
                                     t.orders.c.local_weekday, t.orders.c.local_minute)
                           .order_by(t.orders.c.id)).all()
    assert [tuple(r) for r in got] == [
        (1, dt.date(2026, 10, 26), 0, 1, 30),
        (2, dt.date(2026, 10, 25), 2, 7, 30),
        (3, dt.date(2026, 10, 25), 22, 7, 0),
        (4, None, None, None, None),
    ]
    engine.dispose()


def test_demo_ends_with_daily_sales_and_vat(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    result = run_cli(["demo", "--db", str(tmp_path / "demo.db"), "--orders", "400"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    tail = result.stdout[result.stdout.index("report_daily_sales (last"):]
    assert "report_vat (last" in tail
    assert "syncer report" in tail


def _sql_blocks(text: str) -> list[str]:
    """The statements of every ```sql block of a document."""
    statements = []
    for block in text.split("```sql")[1:]:
        statements += [s.strip() for s in block[:block.index("```")].split(";") if s.strip()]
    return statements


def test_the_reporting_sql_of_the_readme_and_docs_runs_on_every_database(synced: Synced) -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    start = readme.index("\n## Reporting\n")
    statements = _sql_blocks(readme[start:readme.index("\n## ", start + 1)])
    assert len(statements) >= 3
    statements += _sql_blocks((root / "docs" / "reporting.md").read_text())
    assert len(statements) >= 12
    with synced.engine.connect() as conn:
        empty = []
        for statement in statements:
            rows = conn.execute(sa.text(statement.replace("'myshop'", f"'{LICENSE}'"))).all()
            if not rows:
                empty.append(statement.splitlines()[0])
            # Money shows exactly: SQLite sums NUMERIC as floats (10123.399999999998),
            # so a sum the documents give must come back with a short decimal text.
            for row in rows:
                for value in row:
                    if isinstance(value, float):
                        assert len(repr(value).partition(".")[2]) <= 4, (statement, row)
        assert len(empty) <= len(statements) - 8, f"too few queries found rows to check: {empty}"


def test_report_for_a_license_the_database_does_not_hold_says_so(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path, "vat", "--license", "nope")
    assert result.exit_code == 2, result.output
    assert "no data for license 'nope'" in result.output


# --- reconciliation: revenue is what was charged ----------------------------------------------


def test_revenue_is_the_tickets_totals_and_their_payments_per_day_and_register(
        synced: Synced) -> None:
    totals: dict[Key, Decimal] = defaultdict(Decimal)
    payments: dict[Key, Decimal] = defaultdict(Decimal)
    tickets: dict[Key, int] = defaultdict(int)
    for shop in synced.shops:
        for o in sales(shop.ds):
            key = (shop.license, day_of(o, shop.ds.zone), o.register_id)
            totals[key] += o.total_price
            payments[key] += sum(o.payments.values(), Decimal(0))
            tickets[key] += 1
    actual = view(synced, "report_daily_sales", 3)
    assert set(actual) == set(totals)
    largest = Decimal(0)
    for key, (orders, _sold, revenue, vat, excl, difference, paid) in actual.items():
        largest = max(largest, abs(revenue - totals[key]), abs(paid - payments[key]))
        assert orders == tickets[key]
        assert revenue == cents(totals[key]) == paid == cents(payments[key]), key
        assert excl + vat + difference == revenue and difference == 0
    assert largest == 0


def test_vat_per_ticket_and_rate_is_what_the_receipt_shows(synced: Synced) -> None:
    expected = {(shop.license, day_of(o, shop.ds.zone), o.id, rate): (o.register_id, *split)
                for shop in synced.shops for o in sales(shop.ds)
                for rate, split in ticket_vat(o).items()}
    actual = {(r["license"], r["day"], r["order_id"], r["tax_rate"]):
              (r["register_id"], r["base"], r["vat"], r["total"])
              for r in reports.fetch(synced.engine, reports.get("report_ticket_vat"))}
    assert_same(actual, expected)


def test_every_ticket_with_its_total_lines_vat_and_payments(synced: Synced) -> None:
    expected = {}
    for shop in synced.shops:
        for o in sales(shop.ds):
            at = counts_on(o, shop.ds.zone)
            rates = ticket_vat(o).values()
            lines = sum((r[2] for r in rates), Decimal(0))
            paid = cents(sum(o.payments.values(), Decimal(0)))
            expected[shop.license, day_of(o, shop.ds.zone), o.id] = (
                o.register_id, o.user_id, o.ordered_at.astimezone(dt.UTC), day_of(o, shop.ds.zone)
                .isoweekday(), at.hour, len(o.lines), sum((line.quantity for line in o.lines),
                                                          Decimal(0)),
                cents(o.total_price), lines, sum((r[0] for r in rates), Decimal(0)),
                sum((r[1] for r in rates), Decimal(0)), cents(o.total_price) - lines, paid,
                cents(o.total_price) - paid)
    actual = view(synced, "report_tickets", 3)
    assert_same(actual, expected)
    labour = {o.id for o in synced.shops[0].ds.orders if o.is_labour}
    assert labour and not labour & {key[2] for key in actual if key[0] == LICENSE}


def expected_register_day(shop: Shop, start: dt.time = MIDNIGHT) -> dict[Key, Key]:
    """The Z report: per register's day, its tickets, each rate, each method, the differences."""
    zone = shop.ds.zone
    out: dict[Key, list[Any]] = {}
    none = None

    def add(key: Key, values: list[Any]) -> None:
        if key not in out:
            out[key] = values
            return
        old = out[key]
        out[key] = [a + b if isinstance(a, int | Decimal) and not isinstance(a, bool) else a
                    for a, b in zip(old, values, strict=True)]

    for o in sales(shop.ds):
        day, register = day_of(o, zone, start), o.register_id
        at = o.ordered_at.astimezone(dt.UTC)
        rates = ticket_vat(o)
        lines = sum((r[2] for r in rates.values()), Decimal(0))
        paid = cents(sum(o.payments.values(), Decimal(0)))
        key = (shop.license, day, register, 1, "tickets", none, none)
        first, last = out.get(key, [0, at, at])[1:3]
        add(key, [1, at, at, sum((r[0] for r in rates.values()), Decimal(0)),
                  sum((r[1] for r in rates.values()), Decimal(0)), cents(o.total_price)])
        out[key][1:3] = [min(first, at), max(last, at)]
        for rate, (base, vat, total) in rates.items():
            add((shop.license, day, register, 2, "vat", rate, none), [1, none, none, base, vat, total])
        for method, amount in o.payments.items():
            add((shop.license, day, register, 3, "payment", none, method),
                [1, none, none, none, none, amount])
        add((shop.license, day, register, 4, "lines_difference", none, none),
            [int(cents(o.total_price) != lines), none, none, none, none, cents(o.total_price) - lines])
        add((shop.license, day, register, 5, "payments_difference", none, none),
            [int(cents(o.total_price) != paid), none, none, none, none, cents(o.total_price) - paid])
    return {key: tuple(values) for key, values in out.items()}


def test_register_day_is_the_z_report_line_by_line(synced: Synced) -> None:
    actual = view(synced, "report_register_day", 7)
    assert_same(actual, synced.expected(expected_register_day))
    sections = {key[4] for key in actual}
    assert sections == {"tickets", "vat", "payment", "lines_difference", "payments_difference"}


# --- a business day that starts after midnight -------------------------------------------------


def test_a_day_starting_at_four_counts_a_00_40_ticket_for_the_day_before_everywhere(
        synced: Synced, tmp_path: Path) -> None:
    shop = synced.shops[0]
    (late,) = (o for o in sales(shop.ds)
               if o.ordered_at.astimezone(BRUSSELS).strftime("%Y-%m-%d %H:%M") == "2026-10-26 00:40"
               and o.id == min(x.id for x in sales(shop.ds)
                               if x.ordered_at.astimezone(BRUSSELS).strftime("%H:%M") == "00:40"))
    four = dt.time(4)
    (tmp_path / "syncer.toml").write_text('[reports]\nday_starts_at = "04:00"\n')
    # Nothing may be fetched: the API is unreachable, and the ledger must not grow.
    env = cli_env(synced.url, "http://127.0.0.1:9/")
    before = ledger_count(synced.engine)
    try:
        result = run_cli(["report", "tickets", "--from", "2026-10-25", "--to", "2026-10-25",
                          "--license", LICENSE, "--format", "json"], env, cwd=tmp_path)
        assert result.exit_code == 0, result.output
        assert late.id in {row["order_id"] for row in json.loads(result.stdout)}
        result = run_cli(["report", "daily_sales", "--from", "2026-10-25", "--to", "2026-10-25",
                          "--license", LICENSE, "--format", "json"], env, cwd=tmp_path)
        counted = sum(row["orders"] for row in json.loads(result.stdout))
        assert counted == sum(1 for o in sales(shop.ds) if day_of(o, shop.ds.zone, four)
                              == dt.date(2026, 10, 25)) != sum(
            1 for o in sales(shop.ds) if day_of(o, shop.ds.zone) == dt.date(2026, 10, 25))
        assert ledger_count(synced.engine) == before
        # Every view, as any SQL tool reads it now.
        for name, width, compute in (
                ("report_daily_sales", 3, expected_daily_sales), ("report_vat", 3, expected_vat),
                ("report_payments", 3, expected_payments),
                ("report_product_sales", 3, expected_product_sales),
                ("report_hourly", 3, expected_hourly),
                ("report_register_day", 7, expected_register_day)):
            assert_same(view(synced, name, width),
                        synced.expected(lambda s, compute=compute: compute(s, four)))
        rows = reports.fetch(synced.engine, reports.get("report_labor"))
        labour = {(r["license"], r["day"], r["user_id"], r["clock_in"]):
                  (r["username"], r["clock_out"], r["hours_worked"]) for r in rows}
        assert_same(labour, synced.expected(lambda s: expected_labor(s, four)))
        # The shift that began at 01:00 on the DST Sunday now belongs to Saturday.
        assert any(key[1] == dt.date(2026, 10, 24) and values[2] == Decimal("9.00")
                   for key, values in labour.items())
    finally:
        # Back to midnight for the other tests on this database (a command without the
        # setting writes the default again).
        assert run_cli(["report", "vat", "--to", "2001-01-01"], env, cwd=synced_dir(tmp_path)
                       ).exit_code == 0
    assert_same(view(synced, "report_daily_sales", 3), synced.expected(expected_daily_sales))
    assert ledger_count(synced.engine) == before


def synced_dir(tmp_path: Path) -> Path:
    """A working directory without a syncer.toml."""
    plain = tmp_path / "plain"
    plain.mkdir(exist_ok=True)
    return plain


def test_report_without_a_name_lists_the_reports(synced: Synced, tmp_path: Path) -> None:
    result = report(synced, tmp_path)
    assert result.exit_code == 0, result.output
    for listed in reports.REPORTS:
        assert listed.name in result.stdout


def test_demo_sales_table_counts_the_tickets_of_report_daily_sales(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    result = run_cli(["demo", "--db", str(tmp_path / "demo.db"), "--orders", "1500"], env,
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    text = result.stdout
    table = text[text.index("Sales per day"):text.index("report_daily_sales (last")]
    shown = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]
        if len(cells) == 3 and cells[0][:2] == "20":
            shown[dt.date.fromisoformat(cells[0])] = (int(cells[1]), Decimal(cells[2]))
    engine = make_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        per_day: dict[dt.date, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
        for row in reports.fetch(engine, reports.get("report_daily_sales")):
            per_day[row["day"]][0] += row["orders"]
            per_day[row["day"]][1] += row["revenue_incl_vat"]
        with engine.connect() as conn:
            labour = conn.execute(sa.select(sa.func.count()).select_from(t.orders).where(
                t.orders.c.clock_out.is_not(None))).scalar_one()
    finally:
        engine.dispose()
    assert labour > 0  # the demo's history has clock-ins, and they are not sales
    assert sorted(shown) == sorted(per_day)[-7:]  # the last seven business days
    assert shown == {day: tuple(per_day[day]) for day in shown}
