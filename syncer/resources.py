"""The 13 synced resources, each declared once, as data."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sqlalchemy import Table

from syncer import parse, tables


class Pull(enum.Enum):
    FULL_LIST = "full_list"  # one request returns the whole list
    ID_WINDOW = "id_window"  # `start`/`end` windows past a cursor


@dataclass(frozen=True)
class Resource:
    name: str
    function: str
    pull: Pull
    table: Table
    parse: parse.Parser  # raw record -> Rows; names the record keys it reads (`parse.reads`)
    children: tuple[Table, ...] = ()
    # The column of every child table that holds its parent's id (children replaced
    # with their parent: design rule 5).
    parent_key: str | None = None
    # Columns (besides license) that identify a record in `table`.
    key: tuple[str, ...] = ("id",)
    # Filters this function accepts besides start/end.
    filters: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for child in self.children:
            if self.parent_key is None or self.parent_key not in child.c:
                raise ValueError(f"{self.name}: child table {child.name} needs the column "
                                 f"parent_key={self.parent_key!r}")

    @property
    def tables(self) -> tuple[Table, ...]:
        return (self.table, *self.children)


CATEGORIES = Resource("categories", "get-categories", Pull.FULL_LIST,
                      tables.categories, parse.parse_category)
PRODUCTS = Resource("products", "get-products", Pull.FULL_LIST,
                    tables.products, parse.parse_product)
SUBPRODUCTS = Resource("subproducts", "get-subproducts", Pull.FULL_LIST,
                       tables.subproducts, parse.parse_subproduct,
                       children=(tables.product_subproducts,), parent_key="subproduct_id")
CUSTOMERS = Resource("customers", "get-customers", Pull.FULL_LIST,
                     tables.customers, parse.parse_customer)
USERS = Resource("users", "get-users", Pull.FULL_LIST, tables.users, parse.parse_user)
POS_TABLES = Resource("pos_tables", "get-tables", Pull.FULL_LIST,
                      tables.pos_tables, parse.parse_pos_table)
PAYMENT_METHODS = Resource("payment_methods", "get-payment", Pull.FULL_LIST,
                           tables.payment_methods, parse.parse_payment_method)
PRINTERS = Resource("printers", "get-printers", Pull.FULL_LIST,
                    tables.printers, parse.parse_printer)
GIFT_VOUCHERS = Resource("gift_vouchers", "get-giftvoucher", Pull.FULL_LIST,
                         tables.gift_vouchers, parse.parse_gift_voucher)
CUSTOMER_CREDITS = Resource("customer_credits", "get-customercredits", Pull.FULL_LIST,
                            tables.customer_credits, parse.parse_customer_credit,
                            key=("customer_id", "tag_id"), filters=("customerid",))
ORDERS = Resource("orders", "get-orders", Pull.ID_WINDOW, tables.orders, parse.parse_order,
                  children=(tables.order_lines, tables.order_line_subproducts,
                            tables.order_payments),
                  parent_key="order_id", filters=("date", "clockinclockout"))
INVOICES = Resource("invoices", "get-invoices", Pull.ID_WINDOW,
                    tables.invoices, parse.parse_invoice,
                    children=(tables.invoice_lines,), parent_key="invoice_id", filters=("date",))
COUPONS = Resource("coupons", "get-coupon", Pull.ID_WINDOW, tables.coupons, parse.parse_coupon)

# Order matters: parents before what refers to them, cheap lists before history.
RESOURCES: tuple[Resource, ...] = (
    CATEGORIES, PRODUCTS, SUBPRODUCTS, CUSTOMERS, USERS, POS_TABLES, PAYMENT_METHODS,
    PRINTERS, GIFT_VOUCHERS, CUSTOMER_CREDITS, ORDERS, INVOICES, COUPONS,
)
BY_NAME: dict[str, Resource] = {r.name: r for r in RESOURCES}
BY_TABLE: dict[str, Resource] = {r.table.name: r for r in RESOURCES}  # by parent table
BY_FUNCTION: dict[str, Resource] = {r.function: r for r in RESOURCES}  # archived answers' resource


def get(name: str) -> Resource:
    """The resource called `name`, or a KeyError listing the known names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown resource {name!r}; known: {', '.join(BY_NAME)}") from None
