"""The 13 synced resources, each declared once, as data."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Table

from syncer import parse, tables


class Pull(enum.Enum):
    FULL_LIST = "full_list"  # one request returns the whole list
    ID_WINDOW = "id_window"  # `start`/`end` windows past a cursor


class Change(enum.Enum):
    MODTIME = "modtime"  # the record carries `modtime`
    CONTENT = "content"  # snapshot: compare the content
    NEW_IDS = "new_ids"  # append-mostly; late changes come from re-scans


@dataclass(frozen=True)
class Resource:
    name: str
    function: str
    pull: Pull
    change: Change
    table: Table
    parse: Callable[[dict[str, object], parse.ParseContext], parse.Rows]
    children: tuple[Table, ...] = ()
    # Columns (besides license) that identify a record in `table`.
    key: tuple[str, ...] = ("id",)
    # Filters this function accepts besides start/end.
    filters: tuple[str, ...] = field(default=())

    @property
    def tables(self) -> tuple[Table, ...]:
        return (self.table, *self.children)


CATEGORIES = Resource("categories", "get-categories", Pull.FULL_LIST, Change.CONTENT,
                      tables.categories, parse.parse_category)
PRODUCTS = Resource("products", "get-products", Pull.FULL_LIST, Change.MODTIME,
                    tables.products, parse.parse_product)
SUBPRODUCTS = Resource("subproducts", "get-subproducts", Pull.FULL_LIST, Change.MODTIME,
                       tables.subproducts, parse.parse_subproduct,
                       children=(tables.product_subproducts,))
CUSTOMERS = Resource("customers", "get-customers", Pull.FULL_LIST, Change.MODTIME,
                     tables.customers, parse.parse_customer)
USERS = Resource("users", "get-users", Pull.FULL_LIST, Change.CONTENT,
                 tables.users, parse.parse_user)
POS_TABLES = Resource("pos_tables", "get-tables", Pull.FULL_LIST, Change.CONTENT,
                      tables.pos_tables, parse.parse_pos_table)
PAYMENT_METHODS = Resource("payment_methods", "get-payment", Pull.FULL_LIST, Change.CONTENT,
                           tables.payment_methods, parse.parse_payment_method)
PRINTERS = Resource("printers", "get-printers", Pull.FULL_LIST, Change.CONTENT,
                    tables.printers, parse.parse_printer)
GIFT_VOUCHERS = Resource("gift_vouchers", "get-giftvoucher", Pull.FULL_LIST, Change.MODTIME,
                         tables.gift_vouchers, parse.parse_gift_voucher)
CUSTOMER_CREDITS = Resource("customer_credits", "get-customercredits", Pull.FULL_LIST,
                            Change.CONTENT, tables.customer_credits, parse.parse_customer_credit,
                            key=("customer_id", "tag_id"), filters=("customerid",))
ORDERS = Resource("orders", "get-orders", Pull.ID_WINDOW, Change.NEW_IDS,
                  tables.orders, parse.parse_order,
                  children=(tables.order_lines, tables.order_line_subproducts,
                            tables.order_payments),
                  filters=("date", "clockinclockout"))
INVOICES = Resource("invoices", "get-invoices", Pull.ID_WINDOW, Change.NEW_IDS,
                    tables.invoices, parse.parse_invoice,
                    children=(tables.invoice_lines,), filters=("date",))
COUPONS = Resource("coupons", "get-coupon", Pull.ID_WINDOW, Change.NEW_IDS,
                   tables.coupons, parse.parse_coupon)

# Order matters: parents before what refers to them, cheap lists before history.
RESOURCES: tuple[Resource, ...] = (
    CATEGORIES, PRODUCTS, SUBPRODUCTS, CUSTOMERS, USERS, POS_TABLES, PAYMENT_METHODS,
    PRINTERS, GIFT_VOUCHERS, CUSTOMER_CREDITS, ORDERS, INVOICES, COUPONS,
)
BY_NAME: dict[str, Resource] = {r.name: r for r in RESOURCES}
BY_FUNCTION: dict[str, Resource] = {r.function: r for r in RESOURCES}


def get(name: str) -> Resource:
    """The resource called `name`, or a KeyError listing the known names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown resource {name!r}; known: {', '.join(BY_NAME)}") from None
