"""The simulator's data: canonical records, their deterministic generation, and
their rendering to the JSON dicts the CloudPOS API sends.

Canonical records hold typed values: Decimal for money, quantities and tax rates,
aware datetimes in the API's time zone for local times, int unix seconds for
`modtime`, `date` for dates, bool for flags and None for a missing value. The
`render_*` functions turn one record into the API's dict using the variants of
docs/api-reading.md ("12.50", "12,50", 12.5, 0/1/"0"/"1", "" for missing,
"0000-00-00 00:00:00" for a missing clock time), picked deterministically per
record. A correct parser reading a rendered dict gets the canonical values back.

Local times are built as a wall time with fold=0, so the rendered string read back
with fold=0 is the same instant. Two deliberate edge cases follow from that:
- on an autumn DST day one order is at 02:30 (ambiguous): canonical is the first,
  summer-time 02:30 (fold=0);
- on a spring DST day one order is at 02:30 (a wall time that does not exist):
  canonical is the instant fold=0 gives, i.e. 01:30 UTC, one hour after 01:30 local
  and shown as 03:30 by `astimezone`; it is rendered as the original "02:30".
Compare such times after `.astimezone(UTC)` (or by `.timestamp()`): Python's `==`
between datetimes in different zones is always False when the offset depends on
`fold` (PEP 495).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import gc
import itertools
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo

from syncer.simulator.shapes import DayShape

PAYMENT_METHODS = (
    "cash",
    "bancontact",
    "voucher",
    "transfer",
    "visa",
    "chargecard",
    "luncheoncard",
    "americanexpress",
    "mastercard",
)

# Resource names as in the database (touch/delete take these).
RESOURCES = (
    "categories",
    "products",
    "subproducts",
    "customers",
    "users",
    "pos_tables",
    "payment_methods",
    "printers",
    "gift_vouchers",
    "customer_credits",
    "orders",
    "invoices",
    "coupons",
)

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
VAT_0, VAT_6, VAT_12, VAT_21 = Decimal(0), Decimal(6), Decimal(12), Decimal(21)


# --- canonical records --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Category:
    id: int
    name: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    name: str
    category_id: int | None
    price: Decimal
    quantity: Decimal | None  # stock; None when the product keeps no stock
    has_popup: bool
    has_menu_popup: bool
    has_open_price: bool
    modtime: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Subproduct:
    id: int
    name: str
    price: Decimal
    quantity: Decimal | None
    product_ids: tuple[int, ...]  # `productlink`
    modtime: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str | None
    first_name: str | None
    company_name: str | None
    street_number: str | None
    phone: str | None
    zipcode: str | None
    town: str | None
    vat_number: str | None
    email: str | None
    tag_id: str | None
    tag_type: str | None
    tag_family_id: int | None
    modtime: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    is_admin: bool
    secnr: str | None  # national register number, plain (only a few users have one)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PosTable:
    id: int
    table_number: str
    status: int  # 0 free, 1 in use, 2 waiting for payment
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    id: int
    name: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Printer:
    id: int
    name: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GiftVoucher:
    id: int
    barcode: str
    value: Decimal
    valid_from: dt.date | None
    valid_until: dt.date | None
    modtime: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Coupon:
    id: int
    barcode: str
    value: Decimal
    value_type: int  # 1 money, 2 percent
    valid_from: dt.date | None
    valid_until: dt.date | None
    is_used: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CustomerCredit:
    customer_id: int
    tag_id: str  # "" when the credit has no tag (it is part of the key, as in the table)
    value: Decimal
    tag_type: str | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreditTopUp:
    """One credit top-up, as `get-customercredits&customerid=N` lists it."""

    id: int
    customer_id: int
    tag_id: str
    tag_type: str | None
    value: Decimal
    product_id: int
    category_id: int | None


# Orders and their parts are the bulk of a data set (200,000 orders: a million
# objects): they are not frozen because a frozen dataclass is four times slower
# to create. Treat them as immutable all the same; a change replaces the record.


@dataclass(slots=True)
class LineSubproduct:
    slot: int  # 1..10, the N of subproductNid
    subproduct_id: int
    price: Decimal
    tax_rate: Decimal


@dataclass(slots=True)
class OrderLine:
    quantity: Decimal
    product_id: int
    price: Decimal
    tax_rate: Decimal
    subproducts: tuple[LineSubproduct, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        """quantity * (product price + its subproduct prices)."""
        return self.quantity * (self.price + sum((s.price for s in self.subproducts), ZERO))


@dataclass(slots=True)
class Order:
    id: int
    customer_id: int | None
    register_id: int | None
    user_id: int | None
    total_price: Decimal
    ordered_at: dt.datetime
    clock_in: dt.datetime | None
    clock_out: dt.datetime | None
    lines: tuple[OrderLine, ...]
    payments: dict[str, Decimal]  # method -> amount; only non-zero amounts
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_labour(self) -> bool:
        return self.clock_in is not None or self.clock_out is not None


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    quantity: Decimal
    product_name: str
    price: Decimal
    tax_rate: Decimal
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Invoice:
    id: int
    customer_id: int | None
    total_price: Decimal
    invoice_date: dt.date
    due_date: dt.date | None
    number: str
    doc_type: int  # 1 invoice, 2 quote, 3 credit note
    note: str | None
    from_vat_ticket: bool
    lines: tuple[InvoiceLine, ...]
    extra: dict[str, Any] = field(default_factory=dict)


# --- id-ordered store -----------------------------------------------------------


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=_HasId)


class IdIndex(Generic[R]):
    """Records of an id-window resource: sorted by id, bisect windows, optional day index."""

    def __init__(self, records: Iterable[R], day_of: Callable[[R], dt.date] | None = None):
        self._items: list[R] = sorted(records, key=lambda r: r.id)
        self._ids: list[int] = [r.id for r in self._items]
        self._day_of = day_of
        self._days: dict[dt.date, list[int]] = {}
        if day_of is not None:
            for record in self._items:
                self._days.setdefault(day_of(record), []).append(record.id)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[R]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdIndex) and self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IdIndex({len(self)} records, ids {self.min_id}..{self.max_id})"

    @property
    def min_id(self) -> int:
        return self._ids[0] if self._ids else 0

    @property
    def max_id(self) -> int:
        return self._ids[-1] if self._ids else 0

    def get(self, record_id: int) -> R | None:
        i = bisect.bisect_left(self._ids, record_id)
        if i < len(self._ids) and self._ids[i] == record_id:
            return self._items[i]
        return None

    def window(self, start: int | None = None, end: int | None = None) -> list[R]:
        """Records with start <= id <= end (either bound may be open)."""
        lo = 0 if start is None else bisect.bisect_left(self._ids, start)
        hi = len(self._ids) if end is None else bisect.bisect_right(self._ids, end)
        return self._items[lo:hi]

    def on_day(self, day: dt.date) -> list[R]:
        found = (self.get(i) for i in self._days.get(day, ()))
        return [r for r in found if r is not None]

    def days(self) -> list[dt.date]:
        return sorted(d for d, ids in self._days.items() if ids)

    def replace(self, record: R) -> None:
        i = bisect.bisect_left(self._ids, record.id)
        if i == len(self._ids) or self._ids[i] != record.id:
            raise KeyError(record.id)
        old = self._items[i]
        self._items[i] = record
        if self._day_of is not None and self._day_of(old) != self._day_of(record):
            self._days[self._day_of(old)].remove(record.id)
            bisect.insort(self._days.setdefault(self._day_of(record), []), record.id)

    def remove(self, record_id: int) -> None:
        i = bisect.bisect_left(self._ids, record_id)
        if i == len(self._ids) or self._ids[i] != record_id:
            raise KeyError(record_id)
        old = self._items.pop(i)
        del self._ids[i]
        if self._day_of is not None:
            self._days[self._day_of(old)].remove(record_id)

    def append(self, record: R) -> None:
        if self._ids and record.id <= self._ids[-1]:
            raise ValueError(f"id {record.id} is not past the highest id {self._ids[-1]}")
        self._items.append(record)
        self._ids.append(record.id)
        if self._day_of is not None:
            self._days.setdefault(self._day_of(record), []).append(record.id)


def _order_day(order: Order) -> dt.date:
    return order.ordered_at.date()


def _invoice_day(invoice: Invoice) -> dt.date:
    return invoice.invoice_date


# --- the data set ---------------------------------------------------------------


@dataclass(eq=True)
class Dataset:
    """The canonical state of one simulated shop; the Simulator mutates it in place."""

    seed: int
    anchor: dt.date
    tz: str
    categories: dict[int, Category]
    products: dict[int, Product]
    subproducts: dict[int, Subproduct]
    customers: dict[int, Customer]
    users: dict[int, User]
    pos_tables: dict[int, PosTable]
    payment_methods: dict[int, PaymentMethod]
    printers: dict[int, Printer]
    gift_vouchers: dict[int, GiftVoucher]
    customer_credits: dict[tuple[int, str], CustomerCredit]
    credit_top_ups: list[CreditTopUp]
    orders: IdIndex[Order]
    invoices: IdIndex[Invoice]
    coupons: IdIndex[Coupon]
    # Web orders for get-confirmedweborder: id -> confirmed pick-up time or None.
    weborders: dict[int, dt.datetime | None]
    # VAT rates the API does not list with products/subproducts; orders use them.
    product_tax: dict[int, Decimal]
    subproduct_tax: dict[int, Decimal]
    # The highest order id ever issued: a voided (deleted) id is never reused.
    last_order_id: int = 0
    # The rest of the anchor day's sales, later than the moment the history ends: they
    # join `orders` as the clock passes their time (see release), so a running
    # simulator's history grows with the day and never holds an order in the future.
    pending_orders: list[Order] = field(default_factory=list)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def records(self, resource: str) -> list[Any]:
        """The current canonical records of a resource, in the order the API lists them."""
        store = self._store(resource)
        return list(store.values()) if isinstance(store, dict) else list(store)

    def counts(self) -> dict[str, int]:
        return {name: len(self._store(name)) for name in RESOURCES}

    def _store(self, resource: str) -> dict[Any, Any] | IdIndex[Any]:
        if resource not in RESOURCES:
            raise KeyError(f"unknown resource {resource!r}")
        store: dict[Any, Any] | IdIndex[Any] = getattr(self, resource)
        return store

    # Mutations. Each checks every id first, so a bad id changes nothing.

    def touch(self, resource: str, ids: list[int], now: dt.datetime) -> None:
        """Change a visible field of each record (and its modtime, where it has one)."""
        self._check_ids(resource, ids)
        stamp = int(now.timestamp())
        for record_id in ids:
            self._touch_one(resource, record_id, stamp)

    def delete(self, resource: str, ids: list[int]) -> None:
        """Remove records (orders and invoices: voided; credits: by customer id)."""
        self._check_ids(resource, ids)
        for record_id in ids:
            if resource == "customer_credits":
                for key in [k for k in self.customer_credits if k[0] == record_id]:
                    del self.customer_credits[key]
                self.credit_top_ups = [t for t in self.credit_top_ups if t.customer_id != record_id]
                continue
            store = self._store(resource)
            if isinstance(store, dict):
                del store[record_id]
            else:
                store.remove(record_id)

    def use_coupons(self, ids: list[int]) -> None:
        self._check_ids("coupons", ids)
        for record_id in ids:
            coupon = self.coupons.get(record_id)
            assert coupon is not None
            self.coupons.replace(dataclasses.replace(coupon, is_used=True))

    def hold_back(self, until: dt.datetime) -> None:
        """Make the orders later than `until` pending: the history ends there."""
        cut = bisect.bisect_right([o.ordered_at.timestamp() for o in self.orders],
                                  until.timestamp())
        kept = list(self.orders)
        self.pending_orders = kept[cut:] + self.pending_orders
        self.orders = IdIndex(kept[:cut], _order_day)
        self.last_order_id = self.orders.max_id

    def release(self, now: dt.datetime) -> list[int]:
        """Move the pending orders made by `now` into the history; their new ids."""
        released = []
        while self.pending_orders and self.pending_orders[0].ordered_at <= now:
            order = self.pending_orders.pop(0)
            # Orders added by hand (add_orders) may have taken the id it was given.
            highest = max(self.orders.max_id, self.last_order_id)
            if order.id <= highest:
                order = dataclasses.replace(order, id=highest + 1)
            self.orders.append(order)
            self.last_order_id = order.id
            released.append(order.id)
        return released

    def add_orders(self, count: int, at: dt.datetime) -> list[int]:
        """Append `count` sales ordered at `at` (to the second), with ids past the highest."""
        zone = self.zone
        local = at.astimezone(zone) if at.tzinfo is not None else at.replace(tzinfo=zone)
        # The API's local string cannot say fold=1; keep the instant it will be read as.
        when = local.replace(microsecond=0, fold=0)
        catalog = _Catalog.of(self)
        new_ids = []
        next_id = max(self.orders.max_id, self.last_order_id)
        for _ in range(count):
            next_id += 1
            rng = random.Random(self.seed * 1_000_003 + next_id)
            self.orders.append(_make_order(rng, catalog, next_id, when, labour=False))
            new_ids.append(next_id)
        self.last_order_id = next_id
        return new_ids

    def _check_ids(self, resource: str, ids: list[int]) -> None:
        if resource == "customer_credits":
            known = {k[0] for k in self.customer_credits}
            missing = [i for i in ids if i not in known]
        else:
            store = self._store(resource)
            if isinstance(store, dict):
                missing = [i for i in ids if i not in store]
            else:
                missing = [i for i in ids if store.get(i) is None]
        if missing:
            raise KeyError(f"{resource}: no record with id {missing}")

    def _touch_one(self, resource: str, record_id: int, stamp: int) -> None:
        def modtime(old: int) -> int:
            # Always move forward, even when the (test) clock is behind the data.
            return max(old + 1, stamp)

        if resource == "categories":
            c = self.categories[record_id]
            self.categories[record_id] = dataclasses.replace(c, name=_bump(c.name))
        elif resource == "products":
            p = self.products[record_id]
            self.products[record_id] = dataclasses.replace(
                p, price=p.price + Decimal("0.10"), modtime=modtime(p.modtime))
        elif resource == "subproducts":
            s = self.subproducts[record_id]
            self.subproducts[record_id] = dataclasses.replace(
                s, price=s.price + Decimal("0.10"), modtime=modtime(s.modtime))
        elif resource == "customers":
            cu = self.customers[record_id]
            self.customers[record_id] = dataclasses.replace(
                cu, name=_bump(cu.name or "Klant"), modtime=modtime(cu.modtime))
        elif resource == "users":
            u = self.users[record_id]
            self.users[record_id] = dataclasses.replace(u, username=_bump(u.username))
        elif resource == "pos_tables":
            t = self.pos_tables[record_id]
            self.pos_tables[record_id] = dataclasses.replace(t, status=(t.status + 1) % 3)
        elif resource == "payment_methods":
            m = self.payment_methods[record_id]
            self.payment_methods[record_id] = dataclasses.replace(m, name=_bump(m.name))
        elif resource == "printers":
            pr = self.printers[record_id]
            self.printers[record_id] = dataclasses.replace(pr, name=_bump(pr.name))
        elif resource == "gift_vouchers":
            g = self.gift_vouchers[record_id]
            self.gift_vouchers[record_id] = dataclasses.replace(
                g, value=g.value + Decimal("5.00"), modtime=modtime(g.modtime))
        elif resource == "customer_credits":
            for key, credit in list(self.customer_credits.items()):
                if key[0] == record_id:
                    self.customer_credits[key] = dataclasses.replace(
                        credit, value=credit.value + Decimal("1.00"))
                    self._top_up(credit, Decimal("1.00"))
        elif resource == "orders":
            order = self.orders.get(record_id)
            assert order is not None
            self.orders.replace(_touch_order(order))
        elif resource == "invoices":
            invoice = self.invoices.get(record_id)
            assert invoice is not None
            self.invoices.replace(_touch_invoice(invoice))
        elif resource == "coupons":
            coupon = self.coupons.get(record_id)
            assert coupon is not None
            self.coupons.replace(dataclasses.replace(coupon, value=coupon.value + Decimal(1)))

    def _top_up(self, credit: CustomerCredit, amount: Decimal) -> None:
        # Keep the detail rows summing to the credit: the last top-up takes the change.
        for i in range(len(self.credit_top_ups) - 1, -1, -1):
            t = self.credit_top_ups[i]
            if t.customer_id == credit.customer_id and t.tag_id == credit.tag_id:
                self.credit_top_ups[i] = dataclasses.replace(t, value=t.value + amount)
                return


_SUFFIX = re.compile(r" \((\d+)\)$")


def _bump(name: str) -> str:
    """'Bieren' -> 'Bieren (2)' -> 'Bieren (3)': a visible, repeatable change."""
    m = _SUFFIX.search(name)
    if m is None:
        return f"{name} (2)"
    return f"{name[: m.start()]} ({int(m.group(1)) + 1})"


def _touch_order(order: Order) -> Order:
    if not order.lines:
        # A labour record: the clock-out moves a quarter of an hour.
        assert order.clock_out is not None
        out = (order.clock_out.replace(tzinfo=None) + dt.timedelta(minutes=15)).replace(
            tzinfo=order.clock_out.tzinfo)
        return dataclasses.replace(order, clock_out=out)
    first = order.lines[0]
    lines = (dataclasses.replace(first, quantity=first.quantity + 1), *order.lines[1:])
    total = _line_sum(lines)
    payments = dict(order.payments) or {"cash": ZERO}
    methods = list(payments)
    # The last method absorbs the difference, so payments still sum to the total.
    payments[methods[-1]] = total - sum((payments[m] for m in methods[:-1]), ZERO)
    return dataclasses.replace(order, lines=lines, total_price=total, payments=payments)


def _touch_invoice(invoice: Invoice) -> Invoice:
    first = invoice.lines[0]
    step = Decimal(-1) if first.quantity < 0 else Decimal(1)
    lines = (dataclasses.replace(first, quantity=first.quantity + step), *invoice.lines[1:])
    total = sum((ln.quantity * ln.price for ln in lines), ZERO).quantize(CENT)
    return dataclasses.replace(invoice, lines=lines, total_price=total)


def _line_sum(lines: Iterable[OrderLine]) -> Decimal:
    return sum((ln.total for ln in lines), ZERO).quantize(CENT)


# --- generation -----------------------------------------------------------------

# (category, VAT rate, price range in euro, whether it is a drink, base product names)
_MENU: tuple[tuple[str, Decimal, tuple[float, float], bool, tuple[str, ...]], ...] = (
    ("Warme dranken", VAT_21, (2.6, 4.5), True, (
        "Koffie", "Espresso", "Cappuccino", "Latte macchiato", "Thee", "Warme chocolade",
        "Irish coffee", "Koffie verkeerd")),
    ("Frisdranken", VAT_21, (2.5, 3.4), True, (
        "Coca-Cola", "Coca-Cola Zero", "Fanta", "Sprite", "Ice Tea", "Spa plat", "Spa bruis",
        "Appelsap", "Sinaasappelsap", "Tonic", "Cécémel")),
    ("Bieren", VAT_21, (2.8, 6.5), True, (
        "Jupiler", "Stella Artois", "Duvel", "Westmalle Tripel", "Westmalle Dubbel",
        "Leffe Blond", "Leffe Bruin", "Hoegaarden", "Kriek Boon", "Chimay Blauw",
        "Karmeliet Tripel", "Orval", "Rochefort 10")),
    ("Wijnen", VAT_21, (4.5, 9.0), True, (
        "Huiswijn wit", "Huiswijn rood", "Huiswijn rosé", "Cava", "Chardonnay", "Merlot",
        "Sauvignon blanc", "Champagne")),
    ("Aperitieven", VAT_21, (6.0, 10.0), True, (
        "Kir", "Kir royal", "Aperol spritz", "Porto", "Martini bianco", "Gin tonic", "Campari")),
    ("Sterke dranken", VAT_21, (5.0, 9.0), True, (
        "Jenever", "Whisky", "Cognac", "Rum", "Vodka", "Amaretto", "Limoncello")),
    ("Voorgerechten", VAT_12, (8.0, 16.0), False, (
        "Tomatensoep", "Kippensoep", "Garnaalkroketten", "Kaaskroketten", "Carpaccio",
        "Scampi look", "Vitello tonnato")),
    ("Hoofdgerechten", VAT_12, (19.0, 32.0), False, (
        "Stoofvlees met frietjes", "Vol-au-vent", "Steak friet", "Waterzooi", "Mosselen natuur",
        "Konijn met pruimen", "Vispannetje", "Kalfsblanket", "Varkenshaasje")),
    ("Pasta's", VAT_12, (14.0, 19.0), False, (
        "Spaghetti bolognese", "Lasagne", "Penne arrabbiata", "Tagliatelle carbonara",
        "Pasta scampi")),
    ("Salades", VAT_12, (15.0, 21.0), False, (
        "Salade niçoise", "Geitenkaassalade", "Caesar salade", "Salade met scampi")),
    ("Burgers", VAT_12, (16.0, 21.0), False, (
        "Classic burger", "Cheeseburger", "Veggieburger", "Chicken burger", "BBQ burger")),
    ("Kindermenu", VAT_12, (9.0, 12.0), False, (
        "Kinderspaghetti", "Balletjes in tomatensaus", "Kipnuggets met frietjes",
        "Visstick met puree")),
    ("Desserts", VAT_12, (7.0, 10.0), False, (
        "Dame blanche", "Chocolademousse", "Crème brûlée", "Tiramisu", "Pannenkoeken",
        "Wafel met slagroom", "Sorbet")),
    ("Afhaal", VAT_6, (8.0, 18.0), False, (
        "Afhaal stoofvlees", "Afhaal lasagne", "Afhaal soep 1 l", "Afhaal spaghetti",
        "Afhaal vol-au-vent")),
    ("Diversen", VAT_0, (0.1, 0.3), False, (
        "Cadeaubon", "Waarborg fles", "Leeggoed bak", "Tegoed opladen")),
)
_DRINK_VARIANTS = ("", " groot", " 50cl", " fles", " zonder alcohol")
_FOOD_VARIANTS = ("", " (groot)", " (klein)", " (halve portie)", " (glutenvrij)")
_DRINK_FACTORS = (Decimal(1), Decimal("1.4"), Decimal("1.6"), Decimal(4), Decimal("0.9"))
_FOOD_FACTORS = (Decimal(1), Decimal("1.3"), Decimal("0.75"), Decimal("0.6"), Decimal("1.1"))
_OPEN_PRICE = {"Cadeaubon", "Tegoed opladen"}
_POPUP_CATEGORIES = {"Hoofdgerechten", "Pasta's", "Salades", "Burgers", "Voorgerechten",
                     "Desserts", "Warme dranken", "Frisdranken"}
_MENU_POPUP_CATEGORIES = {"Kindermenu", "Hoofdgerechten"}

# (name, price, VAT, categories it links to)
_SUBPRODUCTS: tuple[tuple[str, str, Decimal, tuple[str, ...]], ...] = (
    *((n, p, VAT_12, ("Hoofdgerechten", "Burgers", "Kindermenu")) for n, p in (
        ("Mayonaise", "0.80"), ("Ketchup", "0.80"), ("Andalouse", "0.80"), ("Tartaar", "0.90"),
        ("Bearnaise", "2.50"), ("Pepersaus", "2.50"), ("Champignonsaus", "2.50"),
        ("Samurai", "0.80"), ("Cocktailsaus", "0.90"), ("Mosterd", "0.00"))),
    *((n, "0.00", VAT_12, ("Hoofdgerechten", "Burgers")) for n in (
        "Bleu", "Saignant", "À point", "Bien cuit")),
    *((n, p, VAT_12, ("Hoofdgerechten", "Salades", "Burgers", "Kindermenu")) for n, p in (
        ("Frietjes", "3.50"), ("Kroketten", "3.80"), ("Puree", "3.00"), ("Rijst", "2.50"),
        ("Gemengde salade", "3.50"), ("Gebakken groenten", "4.00"), ("Extra brood", "1.50"))),
    *((n, p, VAT_12, ("Burgers", "Pasta's", "Salades", "Voorgerechten")) for n, p in (
        ("Extra kaas", "1.00"), ("Extra bacon", "1.50"), ("Extra ui", "0.50"),
        ("Spiegelei", "1.50"), ("Avocado", "2.00"), ("Jalapeños", "1.00"),
        ("Extra scampi", "4.50"), ("Glutenvrij", "1.00"), ("Extra parmezaan", "1.00"),
        ("Truffelolie", "2.00"))),
    # Drinks in a menu are 21% while the dish is 12%: one line, two VAT rates.
    *((n, p, VAT_21, ("Hoofdgerechten", "Kindermenu")) for n, p in (
        ("Glas huiswijn wit", "5.00"), ("Glas huiswijn rood", "5.00"), ("Pintje", "3.00"),
        ("Cola (menu)", "2.80"), ("Spa (menu)", "2.60"), ("Koffie (menu)", "2.80"),
        ("Aperitief van het huis", "6.50"), ("Kinderdrankje", "2.00"))),
    *((n, p, VAT_21, ("Warme dranken",)) for n, p in (
        ("Extra shot", "0.80"), ("Slagroom", "0.60"), ("Havermelk", "0.40"),
        ("Sojamelk", "0.40"), ("Karamelsiroop", "0.60"), ("Vanillesiroop", "0.60"),
        ("Amaretto-scheut", "2.50"))),
    *((n, p, VAT_12, ("Desserts",)) for n, p in (
        ("Bolletje vanille-ijs", "1.50"), ("Chocoladesaus", "1.00"), ("Advocaat", "1.50"),
        ("Verse aardbeien", "2.50"), ("Extra slagroom", "0.80"))),
    *((n, p, VAT_21, ("Frisdranken",)) for n, p in (
        ("Citroen", "0.00"), ("IJsblokjes", "0.00"), ("Schijfje sinaasappel", "0.00"),
        ("Rietje", "0.00"), ("Groot glas", "1.00"))),
    *((n, p, VAT_12, ("Kindermenu",)) for n, p in (
        ("Verrassing", "1.00"), ("Kinderijsje", "2.00"), ("Appelmoes", "1.50"),
        ("Kleurplaat", "0.00"))),
)

_FIRST_NAMES = (
    "Jan", "Marc", "Luc", "Peter", "Koen", "Tom", "Bart", "Wim", "Pieter", "Jonas", "Lucas",
    "Noah", "Arthur", "Louis", "Emma", "Marie", "Els", "An", "Sofie", "Lotte", "Julie",
    "Nathalie", "Sarah", "Charlotte", "Lien", "Ine", "Hanne", "Olivia", "Mila", "Elise",
    "Nicolas", "Thomas", "Camille", "Léa", "Hugo", "Mohamed", "Youssef", "Fatima", "Samira",
)
_LAST_NAMES = (
    "Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens",
    "Wouters", "De Smet", "Dubois", "Lambert", "Dupont", "Hermans", "Michiels", "Aerts",
    "Vermeulen", "Van Damme", "De Backer", "Pauwels", "Verstraeten", "Cools",
    "Van den Broeck", "Martens", "Coppens", "Segers", "Smets", "Declercq", "Vandenberghe",
)
_TOWNS = (
    ("9000", "Gent"), ("2000", "Antwerpen"), ("8000", "Brugge"), ("3000", "Leuven"),
    ("2800", "Mechelen"), ("3500", "Hasselt"), ("1000", "Brussel"), ("9300", "Aalst"),
    ("8500", "Kortrijk"), ("2300", "Turnhout"), ("9100", "Sint-Niklaas"), ("8400", "Oostende"),
    ("1800", "Vilvoorde"), ("3800", "Sint-Truiden"), ("9200", "Dendermonde"), ("4000", "Liège"),
)
_STREETS = (
    "Kerkstraat", "Stationsstraat", "Dorpsstraat", "Molenstraat", "Nieuwstraat",
    "Schoolstraat", "Kapelstraat", "Veldstraat", "Hoogstraat", "Markt", "Brugsesteenweg",
    "Lindenlaan", "Rue de la Station",
)
_COMPANIES = (
    "Bakkerij {}", "{} BV", "Garage {}", "Bouwbedrijf {} NV", "Advocatenkantoor {}",
    "{} & Zonen", "Tandartspraktijk {}", "Boekhoudkantoor {}",
)
_USERS = ("Beheerder", "Sarah", "Kevin", "Lotte", "Jonas", "Ine", "Mehdi", "Tom", "Femke",
          "Arne", "Kassa 1", "Stagiair")
_PAYMENT_NAMES = ("Cash", "Bancontact", "Kadobon", "Overschrijving", "Visa", "Oplaadkaart",
                  "Maaltijdcheque", "American Express", "Mastercard")
_PAYMENT_WEIGHTS = (30, 45, 2, 2, 8, 2, 4, 1, 6)
_PRINTERS = ("Keuken", "Bar", "Kassa", "Terras")
_COLORS = ("#aa0000", "#00aa00", "#0055aa", "#ffaa00", "#7700aa")
_LINE_COMMENTS = ("zonder ui", "extra warm", "saus apart", "glutenvrij", "voor de kleine")

# Opening hours 10:00-23:00; busy at lunch, busiest in the evening.
_HOURS = tuple(range(10, 23))
_HOUR_WEIGHTS = (3, 5, 12, 11, 5, 4, 4, 6, 12, 14, 12, 8, 4)


def _pool(weights: dict[Any, int]) -> tuple[Any, ...]:
    """Each value repeated by its weight: a weighted draw is then one random() call."""
    return tuple(value for value, weight in weights.items() for _ in range(weight))


# Generating 200,000 orders must take seconds: draws go through these pools.
_LINE_COUNT_POOL: tuple[int, ...] = _pool({1: 25, 2: 30, 3: 20, 4: 13, 5: 8, 6: 4})
_QUANTITY_POOL: tuple[Decimal, ...] = _pool(
    {Decimal(1): 62, Decimal(2): 20, Decimal(3): 8, Decimal(4): 6, Decimal("0.5"): 4})
_SUB_COUNT_POOL: tuple[int, ...] = _pool({0: 7, 1: 7, 2: 4, 3: 2})
_REGISTER_POOL: tuple[int, ...] = _pool({1: 6, 2: 3, 3: 1})
_METHOD_POOL: tuple[str, ...] = _pool(dict(zip(PAYMENT_METHODS, _PAYMENT_WEIGHTS, strict=True)))
_OPEN_PRICES = tuple(Decimal(v).quantize(CENT) for v in (10, 20, 25, 50))


def _price(rng: random.Random, low: float, high: float) -> Decimal:
    """A menu price: a multiple of 0.10, so half quantities still give whole cents."""
    tenths = rng.randint(round(low * 10), round(high * 10))
    return (Decimal(tenths) / 10).quantize(CENT)


def _national_number(rng: random.Random) -> str:
    """A Belgian national register number (born before 2000) with a valid check number."""
    yy, mm, dd, seq = rng.randint(50, 99), rng.randint(1, 12), rng.randint(1, 28), rng.randint(1, 997)
    check = 97 - int(f"{yy:02d}{mm:02d}{dd:02d}{seq:03d}") % 97
    return f"{yy:02d}.{mm:02d}.{dd:02d}-{seq:03d}.{check:02d}"


def _vat_number(rng: random.Random) -> str:
    base = rng.randint(2_000_000, 9_999_999)  # 0 + 7 digits: 8-digit base
    check = 97 - base % 97
    digits = f"0{base:07d}{check:02d}"
    return f"BE{digits[:4]}.{digits[4:7]}.{digits[7:]}"


def _ascii(text: str) -> str:
    table = str.maketrans("éèëçï", "eeeci")
    return text.lower().translate(table).replace(" ", "")


@dataclass
class _Catalog:
    """What order generation draws from, built from the current data set."""

    pool: list[Product]  # weighted by popularity
    # Popup/menu products -> the subproducts linked to them, with their VAT rate.
    links: dict[int, list[tuple[Subproduct, Decimal]]]
    product_tax: dict[int, Decimal]
    customer_ids: list[int]
    staff_ids: list[int]

    @classmethod
    def of(cls, ds: Dataset) -> _Catalog:
        rng = random.Random(ds.seed)
        pool: list[Product] = []
        for product in ds.products.values():
            if product.name in {"Waarborg fles", "Leeggoed bak"} or product.has_open_price:
                weight = 1
            else:
                weight = rng.choice((1, 2, 3, 4, 6))
            pool.extend([product] * weight)
        links: dict[int, list[tuple[Subproduct, Decimal]]] = {}
        for sub in ds.subproducts.values():
            for pid in sub.product_ids:
                linked = ds.products.get(pid)
                if linked is not None and (linked.has_popup or linked.has_menu_popup):
                    links.setdefault(pid, []).append((sub, ds.subproduct_tax[sub.id]))
        staff = [u.id for u in ds.users.values() if not u.is_admin] or list(ds.users) or [1]
        return cls(pool, links, ds.product_tax, list(ds.customers), staff)


def generate(
    seed: int = 1,
    orders: int = 2000,
    anchor: dt.date | None = None,
    tz: str = "Europe/Brussels",
    until: dt.datetime | None = None,
    anomalies: bool = False,
    day_orders: tuple[int, int] = (150, 300),
    shape: DayShape | None = None,
) -> Dataset:
    """A deterministic shop: catalogue, customers, and `orders` orders over days ending at anchor.

    `day_orders`: the fewest and most orders of a day (drawn evenly between them).

    The history ends at `until` and then holds `orders` orders: the rest of the anchor
    day's sales wait in `pending_orders` until a clock passes them (`Dataset.release`).
    Without an anchor the anchor is today and `until` is now, so a live simulator never
    serves an order in the future; with an anchor and no `until` the whole anchor day is
    history (the tests' fixed data sets).

    `anomalies`: plant what `syncer audit` must find (see `plant_anomalies`); off by
    default, so the default data set reconciles. `shape`: when in the day the orders
    come (see `shapes`); by default a restaurant's hours, 10:00-23:00.
    """
    if anchor is None and until is None:
        until = dt.datetime.now(ZoneInfo(tz))
    # Millions of small acyclic objects: the cyclic GC would rescan the growing heap
    # again and again (half the time for 200,000 orders) and find nothing to free.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        dataset = _generate(seed, orders, anchor, tz, until, day_orders, shape)
        if anomalies:
            plant_anomalies(dataset)
        if until is not None:
            dataset.hold_back(until)
        # The records live as long as the simulator; keep the collector from walking
        # them on every full collection (seconds for 200,000 orders). Reference
        # counting still frees them when the data set is dropped.
        gc.freeze()
        return dataset
    finally:
        if gc_was_enabled:
            gc.enable()


def _generate(seed: int, orders: int, anchor: dt.date | None, tz: str,
              until: dt.datetime | None, day_orders: tuple[int, int] = (150, 300),
              shape: DayShape | None = None) -> Dataset:
    zone = ZoneInfo(tz)
    if anchor is None:
        anchor = (until or dt.datetime.now(zone)).astimezone(zone).date()
    rng = random.Random(f"cloudpos-{seed}-{orders}-{anchor.isoformat()}")
    # Catalogue modtimes lie in the year before the first order day.
    epoch = int(dt.datetime.combine(anchor, dt.time(), zone).timestamp())

    def modtime() -> int:
        return epoch - rng.randrange(60 * 86400, 400 * 86400)

    categories: dict[int, Category] = {}
    products: dict[int, Product] = {}
    product_tax: dict[int, Decimal] = {}
    by_category: dict[str, list[int]] = {}
    for cat_id, (cat_name, _vat, _range, _drink, _names) in enumerate(_MENU, start=1):
        categories[cat_id] = Category(cat_id, cat_name)
    base_prices: dict[tuple[int, str], Decimal] = {}
    product_id = 0
    for variant in range(5):
        for cat_id, (cat_name, vat, (low, high), drink, names) in enumerate(_MENU, start=1):
            variants = _DRINK_VARIANTS if drink else _FOOD_VARIANTS
            for base in names:
                if product_id >= 300 or (variant > 0 and (cat_name == "Diversen" or rng.random() < 0.25)):
                    continue
                product_id += 1
                if (cat_id, base) not in base_prices:
                    base_prices[cat_id, base] = _price(rng, low, high)
                factor = (_DRINK_FACTORS if drink else _FOOD_FACTORS)[variant]
                price = (base_prices[cat_id, base] * factor).quantize(Decimal("0.1")).quantize(CENT)
                open_price = base in _OPEN_PRICE
                if open_price:
                    price = ZERO
                quantity: Decimal | None = None
                if drink or cat_name == "Diversen":
                    quantity = Decimal(rng.randint(-3, 240))
                elif rng.random() < 0.1:
                    quantity = Decimal(rng.randint(0, 40)) / 2
                extra: dict[str, Any] = {}
                if rng.random() < 0.2:
                    extra["color"] = rng.choice(_COLORS)
                products[product_id] = Product(
                    id=product_id,
                    name=base + variants[variant],
                    category_id=cat_id,
                    price=price,
                    quantity=quantity,
                    has_popup=cat_name in _POPUP_CATEGORIES,
                    has_menu_popup=cat_name in _MENU_POPUP_CATEGORIES and rng.random() < 0.5,
                    has_open_price=open_price,
                    modtime=modtime(),
                    extra=extra,
                )
                product_tax[product_id] = vat
                by_category.setdefault(cat_name, []).append(product_id)

    subproducts: dict[int, Subproduct] = {}
    subproduct_tax: dict[int, Decimal] = {}
    for sub_id, (name, price_text, vat, link_categories) in enumerate(_SUBPRODUCTS, start=1):
        candidates = sorted({p for c in link_categories for p in by_category.get(c, [])})
        linked = sorted(rng.sample(candidates, min(len(candidates), rng.randint(3, 25))))
        stock = Decimal(rng.randint(0, 80)) if rng.random() < 0.3 else None
        subproducts[sub_id] = Subproduct(sub_id, name, Decimal(price_text), stock,
                                         tuple(linked), modtime())
        subproduct_tax[sub_id] = vat

    customers = _customers(rng, modtime)
    users = _users(rng)
    pos_tables = {}
    table_names = [str(n) for n in range(1, 23)] + [f"T{n}" for n in range(1, 7)] + ["Bar 1", "Bar 2"]
    for table_id, table_name in enumerate(table_names, start=1):
        pos_tables[table_id] = PosTable(table_id, table_name, rng.choices((0, 1, 2), (6, 3, 1))[0])
    payment_methods = {i: PaymentMethod(i, n) for i, n in enumerate(_PAYMENT_NAMES, start=1)}
    printers = {i: Printer(i, n) for i, n in enumerate(_PRINTERS, start=1)}

    # Order days end at the anchor, about 150-300 orders a day (day_orders).
    day_counts: list[int] = []
    remaining = orders
    today: list[int] | None = None  # the anchor day's order times (seconds), drawn first
    if until is not None and until.astimezone(zone).date() == anchor:
        # The history ends at `until` and holds `orders` orders: the anchor day's
        # sales by then count toward them; the rest of its day comes later (pending).
        today = _order_seconds(rng, rng.randint(*day_orders), shape)
        cut = until.astimezone(zone)
        made = sum(1 for sec in today if _at(anchor, sec, zone) <= cut)
        drop = max(made - remaining, 0)  # fewer wanted than made by now: the latest stay
        today = today[drop:]
        day_counts.append(len(today))
        remaining -= made - drop
    while remaining > 0:
        day_counts.append(min(remaining, rng.randint(*day_orders)))
        remaining -= day_counts[-1]
    first_day = anchor - dt.timedelta(days=max(len(day_counts) - 1, 0))
    day_counts.reverse()
    days = [first_day + dt.timedelta(days=i) for i in range(len(day_counts))]

    ds = Dataset(
        seed=seed, anchor=anchor, tz=tz, categories=categories, products=products,
        subproducts=subproducts, customers=customers, users=users, pos_tables=pos_tables,
        payment_methods=payment_methods, printers=printers, gift_vouchers={},
        customer_credits={}, credit_top_ups=[], orders=IdIndex([], _order_day),
        invoices=IdIndex([], _invoice_day), coupons=IdIndex([]), weborders={},
        product_tax=product_tax, subproduct_tax=subproduct_tax,
    )
    catalog = _Catalog.of(ds)
    order_list: list[Order] = []
    order_id = 0
    for day, count in zip(days, day_counts, strict=True):
        seconds = today if today is not None and day == anchor else _order_seconds(rng, count, shape)
        if _is_dst_change(day, zone):
            # The edge case the parser must get right: 02:30 on a DST day (see module doc).
            seconds[0] = 2 * 3600 + 30 * 60
        for sec in seconds:
            order_id += 2 if rng.random() < 0.03 else 1  # voided orders leave gaps
            when = _at(day, sec, zone)
            labour = rng.random() < 0.01 and sec != 9000
            order_list.append(_make_order(rng, catalog, order_id, when, labour))
    ds.orders = IdIndex(order_list, _order_day)
    ds.last_order_id = order_id
    ds.invoices = IdIndex(_invoices(rng, days, day_counts, products, product_tax, customers),
                          _invoice_day)
    ds.coupons = IdIndex(_coupons(rng, max(1, orders // 20), first_day, anchor))
    ds.gift_vouchers = _gift_vouchers(rng, anchor, modtime)
    ds.customer_credits, ds.credit_top_ups = _credits(rng, customers, products, by_category)
    ds.weborders = _weborders(anchor, zone)
    return ds


# Ids the API never returns, planted by generate(anomalies=True): more in a row than the
# voided orders of a normal day, fewer than a backfill window.
MISSING_RUN = 37
OVERPAID = Decimal("5.00")  # paid above the total of one ticket
OFF_LINES = Decimal("1.50")  # a ticket's total above its lines (and paid in full)


def plant_anomalies(ds: Dataset) -> None:
    """A ticket paid OVERPAID more than its total; a ticket whose total is OFF_LINES above
    its lines, paid in full; and MISSING_RUN ids never returned, after the middle order
    (the later orders move up)."""
    orders = list(ds.orders)
    sales = [o for o in orders if not o.is_labour and o.payments and o.total_price > 0]
    overpaid, off_lines = sales[len(sales) // 3], sales[len(sales) // 3 + 1]
    first = next(iter(overpaid.payments))
    other = next(iter(off_lines.payments))
    replaced = {
        overpaid.id: dataclasses.replace(
            overpaid, payments={**overpaid.payments, first: overpaid.payments[first] + OVERPAID}),
        off_lines.id: dataclasses.replace(
            off_lines, total_price=off_lines.total_price + OFF_LINES,
            payments={**off_lines.payments, other: off_lines.payments[other] + OFF_LINES}),
    }
    middle = orders[len(orders) // 2].id
    moved = []
    for original in orders:
        order = replaced.get(original.id, original)
        if order.id > middle:
            order = dataclasses.replace(order, id=order.id + MISSING_RUN)
        moved.append(order)
    ds.orders = IdIndex(moved, _order_day)
    ds.last_order_id += MISSING_RUN


def _order_seconds(rng: random.Random, count: int, shape: DayShape | None = None) -> list[int]:
    """A day's order times, seconds after midnight, sorted, weighted by the opening hours
    (or drawn in `shape`)."""
    if shape is not None:
        return shape.seconds(rng, count)
    hours = rng.choices(_HOURS, _HOUR_WEIGHTS, k=count)
    return sorted(h * 3600 + rng.randrange(3600) for h in hours)


def _at(day: dt.date, sec: int, zone: ZoneInfo) -> dt.datetime:
    """The local wall time `sec` seconds into `day` (fold=0)."""
    return dt.datetime(day.year, day.month, day.day, sec // 3600, sec // 60 % 60, sec % 60,
                       tzinfo=zone)


def _is_dst_change(day: dt.date, zone: ZoneInfo) -> bool:
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return start.utcoffset() != end.utcoffset()


def _make_order(
    rng: random.Random, catalog: _Catalog, order_id: int, when: dt.datetime, labour: bool
) -> Order:
    """One order at `when` (a local wall time, fold=0): a sale, or a labour record."""
    r = rng.random
    register = _REGISTER_POOL[int(r() * len(_REGISTER_POOL))]
    staff = catalog.staff_ids
    user = staff[int(r() * len(staff))]
    if labour:
        # Written at clock-out; the shift started some hours earlier (wall-clock hours).
        naive = when.replace(tzinfo=None)
        clock_in = (naive - dt.timedelta(minutes=15 * rng.randint(12, 36))).replace(
            tzinfo=when.tzinfo)
        return Order(order_id, None, register, user, ZERO, when, clock_in, when, (), {})
    customer = None
    if r() < 0.08 and catalog.customer_ids:
        customer = catalog.customer_ids[int(r() * len(catalog.customer_ids))]
    pool = catalog.pool
    lines = []
    total = ZERO
    for _ in range(_LINE_COUNT_POOL[int(r() * len(_LINE_COUNT_POOL))]):
        product = pool[int(r() * len(pool))]
        quantity = _QUANTITY_POOL[int(r() * len(_QUANTITY_POOL))]
        price = product.price
        if product.has_open_price:
            price = _OPEN_PRICES[int(r() * len(_OPEN_PRICES))]
            quantity = _QUANTITY_POOL[0]
        unit = price
        subs: tuple[LineSubproduct, ...] = ()
        linked = catalog.links.get(product.id)
        if linked:
            k = min(len(linked), _SUB_COUNT_POOL[int(r() * len(_SUB_COUNT_POOL))])
            if k:
                picked: list[int] = []
                while len(picked) < k:
                    i = int(r() * len(linked))
                    if i not in picked:
                        picked.append(i)
                slots = range(1, k + 1) if r() < 0.8 else sorted(rng.sample(range(1, 11), k))
                subs = tuple(
                    LineSubproduct(slot, linked[i][0].id, linked[i][0].price, linked[i][1])
                    for slot, i in zip(slots, picked, strict=True)
                )
                for sub in subs:
                    unit += sub.price
        extra: dict[str, Any] = {}
        if r() < 0.03:
            extra["comment"] = _LINE_COMMENTS[int(r() * len(_LINE_COMMENTS))]
        lines.append(OrderLine(quantity, product.id, price, catalog.product_tax[product.id],
                               subs, extra))
        total += quantity * unit
    total = total.quantize(CENT)
    payments: dict[str, Decimal] = {}
    method = _METHOD_POOL[int(r() * len(_METHOD_POOL))]
    if total >= Decimal("0.02") and r() < 0.12:
        # A split bill: part with one method, the rest with another.
        other = method
        while other == method:
            other = PAYMENT_METHODS[int(r() * len(PAYMENT_METHODS))]
        part = (total * Decimal(10 + int(r() * 81)) / 100).quantize(CENT)
        part = min(max(part, CENT), total - CENT)
        payments[method] = part
        payments[other] = total - part
    elif total > 0:
        payments[method] = total
    return Order(order_id, customer, register, user, total, when, None, None, tuple(lines),
                 payments)


def _customers(rng: random.Random, modtime: Callable[[], int]) -> dict[int, Customer]:
    customers: dict[int, Customer] = {}
    for cid in range(1, 401):
        first = rng.choice(_FIRST_NAMES)
        last = rng.choice(_LAST_NAMES)
        company = rng.choice(_COMPANIES).format(last) if rng.random() < 0.2 else None
        zipcode, town = rng.choice(_TOWNS) if rng.random() < 0.85 else (None, None)
        street = f"{rng.choice(_STREETS)} {rng.randint(1, 180)}" if town else None
        if rng.random() < 0.5:
            pairs = " ".join(f"{rng.randint(10, 99)}" for _ in range(3))
            phone: str | None = f"04{rng.randint(70, 99)} {pairs}"
        elif rng.random() < 0.5:
            phone = f"09 {rng.randint(200, 399)} {rng.randint(10, 99)} {rng.randint(10, 99)}"
        else:
            phone = None
        domain = rng.choice(("telenet.be", "gmail.com", "skynet.be", "hotmail.com", "proximus.be"))
        email = f"{_ascii(first)}.{_ascii(last)}@{domain}" if rng.random() < 0.6 else None
        tag_id = tag_type = None
        family = None
        if rng.random() < 0.25:
            tag_type = rng.choice(("rfid", "barcode"))
            if tag_type == "rfid":
                tag_id = f"{rng.getrandbits(32):08X}"
            else:
                tag_id = f"2100000{rng.randint(0, 999_999):06d}"
            family = rng.randint(1, 8) if rng.random() < 0.4 else None
        customers[cid] = Customer(
            id=cid,
            name=last,
            first_name=first if rng.random() < 0.95 else None,
            company_name=company,
            street_number=street,
            phone=phone,
            zipcode=zipcode,
            town=town,
            vat_number=_vat_number(rng) if company else None,
            email=email,
            tag_id=tag_id,
            tag_type=tag_type,
            tag_family_id=family,
            modtime=modtime(),
        )
    return customers


def _users(rng: random.Random) -> dict[int, User]:
    users = {}
    for uid, name in enumerate(_USERS, start=1):
        secnr = _national_number(rng) if uid in (2, 5, 9) else None
        users[uid] = User(uid, name, is_admin=uid in (1, 4), secnr=secnr)
    return users


def _invoices(
    rng: random.Random,
    days: list[dt.date],
    day_counts: list[int],
    products: dict[int, Product],
    product_tax: dict[int, Decimal],
    customers: dict[int, Customer],
) -> list[Invoice]:
    """About one sales document per 25 orders, on the order days."""
    companies = [c.id for c in customers.values() if c.company_name] or list(customers)
    product_list = [p for p in products.values() if not p.has_open_price]
    numbers: dict[tuple[str, int], int] = {}
    invoices = []
    invoice_id = 0
    for day, count in zip(days, day_counts, strict=True):
        expected = count / 25
        documents = max(0, round(expected + rng.uniform(-1.5, 1.5))) if count >= 25 else int(
            rng.random() < expected)
        for _ in range(documents):
            invoice_id += 2 if rng.random() < 0.03 else 1
            doc_type = rng.choices((1, 2, 3), (80, 12, 8))[0]
            prefix = {1: "F", 2: "O", 3: "C"}[doc_type]
            seq = numbers[prefix, day.year] = numbers.get((prefix, day.year), 0) + 1
            sign = Decimal(-1) if doc_type == 3 else Decimal(1)
            lines = []
            for _ in range(rng.randint(1, 5)):
                p = rng.choice(product_list)
                qty = sign * rng.choice((1, 1, 2, 3, 5, 10, 20))
                lines.append(InvoiceLine(Decimal(qty), p.name, p.price, product_tax[p.id]))
            total = sum((ln.quantity * ln.price for ln in lines), ZERO).quantize(CENT)
            due = None if doc_type == 3 else day + dt.timedelta(days=14 if doc_type == 2 else 30)
            note = rng.choice(("Betaling binnen 30 dagen", "Feest 12 personen", "Personeelsfeest",
                               "Retour leeggoed")) if rng.random() < 0.3 else None
            invoices.append(Invoice(
                id=invoice_id,
                customer_id=rng.choice(companies) if rng.random() < 0.9 else None,
                total_price=total,
                invoice_date=day,
                due_date=due,
                number=f"{prefix}{day.year}-{seq:05d}",
                doc_type=doc_type,
                note=note,
                from_vat_ticket=rng.random() < 0.3,
                lines=tuple(lines),
            ))
    return invoices


def _coupons(rng: random.Random, count: int, first_day: dt.date, anchor: dt.date) -> list[Coupon]:
    coupons = []
    span = (anchor - first_day).days + 60
    for cid in range(1, count + 1):
        value_type = rng.choices((1, 2), (6, 4))[0]
        value = Decimal(rng.choice((5, 10, 15))) if value_type == 1 else Decimal(rng.choice((10, 15, 20, 25)))
        valid_from = anchor - dt.timedelta(days=rng.randint(0, span)) if rng.random() < 0.9 else None
        valid_until = (valid_from + dt.timedelta(days=rng.choice((30, 60, 90)))
                       if valid_from and rng.random() < 0.8 else None)
        coupons.append(Coupon(cid, f"99{rng.randint(0, 10**11 - 1):011d}", value.quantize(CENT),
                              value_type, valid_from, valid_until, rng.random() < 0.35))
    return coupons


def _gift_vouchers(rng: random.Random, anchor: dt.date, modtime: Callable[[], int]) -> dict[int, GiftVoucher]:
    vouchers = {}
    for vid in range(1, 41):
        valid_from = anchor - dt.timedelta(days=rng.randint(1, 500))
        valid_until = valid_from + dt.timedelta(days=365) if rng.random() < 0.85 else None
        value = Decimal(rng.choice((20, 25, 50, 75, 100, 150))).quantize(CENT)
        vouchers[vid] = GiftVoucher(vid, f"24{rng.randint(0, 10**11 - 1):011d}", value,
                                    valid_from, valid_until, modtime())
    return vouchers


def _credits(
    rng: random.Random,
    customers: dict[int, Customer],
    products: dict[int, Product],
    by_category: dict[str, list[int]],
) -> tuple[dict[tuple[int, str], CustomerCredit], list[CreditTopUp]]:
    """About 60 credits; some customers hold a second one without a tag."""
    credits: dict[tuple[int, str], CustomerCredit] = {}
    top_ups: list[CreditTopUp] = []
    top_up_products = by_category.get("Diversen", []) or [1]
    top_up_id = 0
    for cid in sorted(rng.sample(sorted(customers), 57)):
        customer = customers[cid]
        keys: list[tuple[str, str | None]] = []
        if customer.tag_id:
            keys.append((customer.tag_id, customer.tag_type))
        elif rng.random() < 0.5:
            keys.append((f"{rng.getrandbits(32):08X}", "rfid"))
        else:
            keys.append(("", None))
        if rng.random() < 0.1 and keys[0][0]:
            keys.append(("", None))
        for tag_id, tag_type in keys:
            value = (Decimal(rng.randint(500, 15000)) / 100).quantize(CENT)
            credits[cid, tag_id] = CustomerCredit(cid, tag_id, value, tag_type)
            # Detail rows: one to four top-ups summing to the credit.
            parts = rng.randint(1, 4)
            cents = int(value * 100)
            cuts = sorted(rng.sample(range(1, cents), parts - 1)) if cents > parts else []
            bounds = [0, *cuts, cents]
            for lo, hi in itertools.pairwise(bounds):
                top_up_id += 1
                product = rng.choice(top_up_products)
                top_ups.append(CreditTopUp(top_up_id, cid, tag_id, tag_type,
                                           (Decimal(hi - lo) / 100).quantize(CENT), product,
                                           products[product].category_id if product in products else None))
    return credits, top_ups


def _weborders(anchor: dt.date, zone: ZoneInfo) -> dict[int, dt.datetime | None]:
    def at(hour: int, minute: int) -> dt.datetime:
        return dt.datetime.combine(anchor, dt.time(hour, minute), zone)

    return {501: at(18, 30), 502: at(19, 15), 503: None, 504: at(12, 0), 505: None}


# --- rendering ------------------------------------------------------------------


def _variant(key: int, salt: int) -> int:
    """A stable pseudo-random 0..99 per record and field kind: which rendering to use."""
    x = (key * 2_654_435_761 + salt * 40_503) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    return x % 100


def _money(value: Decimal | None, v: int) -> str | int | float:
    if value is None:
        return ""
    if v < 65:
        return format(value, "f")
    if v < 85:
        return format(value, "f").replace(".", ",")
    if value == value.to_integral_value():
        return int(value)
    # A JSON number: json.loads gives a float whose repr is these digits.
    return float(value)


def _number(value: Decimal | None, v: int) -> str | int | float:
    """Quantities and tax rates: "2", "0.5", "21.00" or a JSON number, never a comma."""
    if value is None:
        return ""
    if v < 45:
        return format(value, "f")
    if v < 65:
        return f"{value:.2f}"
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _int(value: int, v: int) -> int | str:
    return value if v < 60 else str(value)


def _ref(value: int | None, v: int) -> int | str:
    """A reference id; none is sent as "", "0" or 0."""
    if value is None:
        return ("", "", "0", 0)[v % 4]
    return _int(value, v)


def _flag(value: bool, v: int) -> int | str:
    return int(value) if v < 50 else str(int(value))


def _text(value: str | None) -> str:
    return "" if value is None else value


def _local(value: dt.datetime | None, v: int) -> str:
    if value is None:
        return "0000-00-00 00:00:00" if v < 70 else ""
    return value.replace(tzinfo=None).isoformat(" ")


def _date(value: dt.date | None, v: int) -> str:
    if value is None:
        return "" if v < 75 else "0000-00-00"
    if v >= 85:
        return f"{value.isoformat()} 00:00:00"
    return value.isoformat()


def _with_extra(body: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    if extra:
        body.update(extra)
    return body


def render_category(c: Category) -> dict[str, Any]:
    return _with_extra({"id": _int(c.id, _variant(c.id, 1)), "name": c.name}, c.extra)


def render_product(p: Product) -> dict[str, Any]:
    v = _variant(p.id, 2)
    return _with_extra({
        "id": _int(p.id, v),
        "name": p.name,
        "categorylink": _ref(p.category_id, _variant(p.id, 3)),
        "price": _money(p.price, v),
        "quantity": _number(p.quantity, _variant(p.id, 4)),
        "popup": _flag(p.has_popup, v),
        "menupopup": _flag(p.has_menu_popup, _variant(p.id, 5)),
        "openprice": _flag(p.has_open_price, v),
        "modtime": _int(p.modtime, _variant(p.id, 6)),
    }, p.extra)


def render_subproduct(s: Subproduct) -> dict[str, Any]:
    v = _variant(s.id, 7)
    return _with_extra({
        "id": _int(s.id, v),
        "name": s.name,
        "price": _money(s.price, v),
        "quantity": _number(s.quantity, _variant(s.id, 8)),
        "productlink": [_int(p, v) for p in s.product_ids],
        "modtime": _int(s.modtime, _variant(s.id, 9)),
    }, s.extra)


def render_customer(c: Customer) -> dict[str, Any]:
    v = _variant(c.id, 10)
    return _with_extra({
        "id": _int(c.id, v),
        "name": _text(c.name),
        "fistname": _text(c.first_name),
        "companyname": _text(c.company_name),
        "street_number": _text(c.street_number),
        "phone": _text(c.phone),
        "zipcode": _text(c.zipcode),
        "town": _text(c.town),
        "vatnumber": _text(c.vat_number),
        "email": _text(c.email),
        "tagid": _text(c.tag_id),
        "tagtype": _text(c.tag_type),
        "tagfamid": _ref(c.tag_family_id, _variant(c.id, 11)),
        "modtime": _int(c.modtime, _variant(c.id, 12)),
    }, c.extra)


def render_user(u: User) -> dict[str, Any]:
    v = _variant(u.id, 13)
    return _with_extra({
        "id": _int(u.id, v),
        "username": u.username,
        "admin": _flag(u.is_admin, v),
        "secnr": _text(u.secnr),
    }, u.extra)


def render_pos_table(t: PosTable) -> dict[str, Any]:
    v = _variant(t.id, 14)
    return _with_extra({"id": _int(t.id, v), "table": t.table_number,
                        "status": _int(t.status, _variant(t.id, 15))}, t.extra)


def render_payment_method(m: PaymentMethod) -> dict[str, Any]:
    return _with_extra({"id": _int(m.id, _variant(m.id, 16)), "payment": m.name}, m.extra)


def render_printer(p: Printer) -> dict[str, Any]:
    return _with_extra({"id": _int(p.id, _variant(p.id, 17)), "printername": p.name}, p.extra)


def render_gift_voucher(g: GiftVoucher) -> dict[str, Any]:
    v = _variant(g.id, 18)
    return _with_extra({
        "id": _int(g.id, v),
        "barcode": g.barcode,
        "value": _money(g.value, v),
        "validfrom": _date(g.valid_from, _variant(g.id, 19)),
        "validuntil": _date(g.valid_until, _variant(g.id, 20)),
        "modtime": _int(g.modtime, _variant(g.id, 21)),
    }, g.extra)


def render_coupon(c: Coupon) -> dict[str, Any]:
    v = _variant(c.id, 22)
    return _with_extra({
        "id": _int(c.id, v),
        "barcode": c.barcode,
        "value": _money(c.value, v),
        "valuetype": _int(c.value_type, _variant(c.id, 23)),
        "validfrom": _date(c.valid_from, _variant(c.id, 24)),
        "validuntil": _date(c.valid_until, _variant(c.id, 25)),
        "used": _flag(c.is_used, _variant(c.id, 26)),
    }, c.extra)


def render_customer_credit(c: CustomerCredit) -> dict[str, Any]:
    v = _variant(c.customer_id, 27)
    return _with_extra({
        "customerid": _int(c.customer_id, v),
        "value": _money(c.value, v),
        "tagid": c.tag_id,
        "tagtype": _text(c.tag_type),
    }, c.extra)


def render_credit_top_up(t: CreditTopUp) -> dict[str, Any]:
    v = _variant(t.id, 28)
    return {
        "id": _int(t.id, v),
        "customerid": _int(t.customer_id, v),
        "value": _money(t.value, v),
        "tagid": t.tag_id,
        "tagtype": _text(t.tag_type),
        "productid": _int(t.product_id, v),
        "categoryid": _ref(t.category_id, v),
    }


_SLOT_KEYS = tuple(
    (f"subproduct{n}id", f"subproduct{n}price", f"subproduct{n}tax") for n in range(1, 11))
# Three ways the API may send unused slots: "" values, zeros, or no keys at all.
_EMPTY_SLOTS = {key: "" for keys in _SLOT_KEYS for key in keys}
_ZERO_SLOTS = {key: ("0" if key.endswith("id") else "0.00" if key.endswith("price") else "0")
               for keys in _SLOT_KEYS for key in keys}
_ZERO_SLOTS_INT = {**_ZERO_SLOTS, **{keys[0]: 0 for keys in _SLOT_KEYS}}


def _render_line(line: OrderLine, order_id: int, v_slots: int, v: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "quantity": _number(line.quantity, v),
        "productid": _int(line.product_id, v),
        "productprice": _money(line.price, v),
        "producttax": _number(line.tax_rate, _variant(order_id, 30)),
    }
    if v_slots < 25:
        body.update(_EMPTY_SLOTS)
    elif v_slots < 40:
        body.update(_ZERO_SLOTS if v_slots < 32 else _ZERO_SLOTS_INT)
    for sub in line.subproducts:
        # Assigning over a key already present keeps its place in the slot order.
        key_id, key_price, key_tax = _SLOT_KEYS[sub.slot - 1]
        body[key_id] = _int(sub.subproduct_id, v)
        body[key_price] = _money(sub.price, v)
        body[key_tax] = _number(sub.tax_rate, v)
    return _with_extra(body, line.extra)


def render_order(o: Order) -> dict[str, Any]:
    v = _variant(o.id, 31)
    v_clock = _variant(o.id, 32)
    v_slots = _variant(o.id, 33)
    body: dict[str, Any] = {
        "id": _int(o.id, v),
        "customerid": _ref(o.customer_id, _variant(o.id, 34)),
        "kassaid": _ref(o.register_id, v),
        "totalprice": _money(o.total_price, v),
        "user": _ref(o.user_id, v),
        "ordertime": _local(o.ordered_at, v_clock),
        "clockin": _local(o.clock_in, v_clock),
        "clockout": _local(o.clock_out, v_clock),
        "orderdetail": [_render_line(ln, o.id, v_slots, _variant(o.id * 8 + i, 35))
                        for i, ln in enumerate(o.lines)],
    }
    zero: str | int = "0.00" if v < 80 else 0
    for method in PAYMENT_METHODS:
        amount = o.payments.get(method)
        body[f"{method}payment"] = zero if amount is None else _money(amount, v)
    return _with_extra(body, o.extra)


def render_invoice(i: Invoice) -> dict[str, Any]:
    v = _variant(i.id, 36)
    return _with_extra({
        "id": _int(i.id, v),
        "customerid": _ref(i.customer_id, _variant(i.id, 37)),
        "totalprice": _money(i.total_price, v),
        "date": _date(i.invoice_date, _variant(i.id, 38)),
        "expirationdate": _date(i.due_date, _variant(i.id, 39)),
        "number": i.number,
        "doctype": _int(i.doc_type, v),
        "note": _text(i.note),
        "invoicedetail": [
            _with_extra({
                "quantity": _number(ln.quantity, v),
                "productname": ln.product_name,
                "productprice": _money(ln.price, _variant(i.id * 8 + n, 40)),
                "producttax": _number(ln.tax_rate, v),
            }, ln.extra)
            for n, ln in enumerate(i.lines)
        ],
        "docfromvatticket": _flag(i.from_vat_ticket, _variant(i.id, 41)),
    }, i.extra)


RENDERERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "categories": render_category,
    "products": render_product,
    "subproducts": render_subproduct,
    "customers": render_customer,
    "users": render_user,
    "pos_tables": render_pos_table,
    "payment_methods": render_payment_method,
    "printers": render_printer,
    "gift_vouchers": render_gift_voucher,
    "customer_credits": render_customer_credit,
    "orders": render_order,
    "invoices": render_invoice,
    "coupons": render_coupon,
}


def render(resource: str, record: Any) -> dict[str, Any]:
    """The API's JSON dict for one canonical record of `resource`."""
    return RENDERERS[resource](record)


def format_local(value: dt.datetime) -> str:
    """`YYYY-MM-DD HH:MM:SS` of an aware datetime's wall time (as the API writes it)."""
    return value.replace(tzinfo=None, microsecond=0).isoformat(" ")
