"""Expected table rows, derived from the simulator's canonical records, not from our parser.

The simulator keeps typed truth (Decimal, aware datetimes, dates, bools) and renders
it to the API's loose JSON; these functions say what a correct sync stores for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

from sqlalchemy import Engine, select

from syncer import tables as t
from syncer.simulator import Dataset
from syncer.simulator.data import Order
from tests.helpers import SYNCED_TABLES

SKIP = {"license", "synced_at", "deleted_at", "content_hash"}
METHODS = t.PAYMENT_METHODS


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(dt.UTC)


def _modtime(seconds: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds else None


def _local_reading(o: Order, ds: Dataset) -> dict[str, Any]:
    """The documented rule: the local wall clock of ordertime, or of a labour record's clock-in."""
    moment = o.clock_in if o.is_labour and o.clock_in is not None else o.ordered_at
    # Through UTC: a wall time in the spring gap reads as the hour after it.
    local = moment.astimezone(dt.UTC).astimezone(ds.zone)
    return {"business_date": local.date(), "local_hour": local.hour,
            "local_weekday": local.isoweekday(), "local_minute": local.minute}


def _extra(extra: dict[str, Any]) -> dict[str, Any] | None:
    return dict(extra) or None


def secnr_hash(secnr: str | None, hash_key: str | None) -> str | None:
    """The documented rule: HMAC-SHA256 of the digits, keyed with [privacy] hash_key;
    no hash without a key."""
    if not secnr or hash_key is None:
        return None
    digits = "".join(ch for ch in secnr if ch.isdigit())
    return hmac.new(hash_key.encode(), digits.encode(), hashlib.sha256).hexdigest()


def expected_rows(ds: Dataset, hash_key: str | None = None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {tbl.name: [] for tbl in SYNCED_TABLES}
    for c in ds.categories.values():
        out["categories"].append({"id": c.id, "name": c.name, "extra": _extra(c.extra)})
    for p in ds.products.values():
        out["products"].append({
            "id": p.id, "name": p.name, "category_id": p.category_id, "price": p.price,
            "quantity": p.quantity, "has_popup": p.has_popup, "has_menu_popup": p.has_menu_popup,
            "has_open_price": p.has_open_price, "modified_at": _modtime(p.modtime),
            "extra": _extra(p.extra)})
    for s in ds.subproducts.values():
        out["subproducts"].append({
            "id": s.id, "name": s.name, "price": s.price, "quantity": s.quantity,
            "modified_at": _modtime(s.modtime), "extra": _extra(s.extra)})
        for product_id in sorted(set(s.product_ids)):
            out["product_subproducts"].append({"product_id": product_id, "subproduct_id": s.id})
    for cu in ds.customers.values():
        out["customers"].append({
            "id": cu.id, "name": cu.name, "first_name": cu.first_name, "company_name": cu.company_name,
            "street_number": cu.street_number, "phone": cu.phone, "zipcode": cu.zipcode,
            "town": cu.town, "vat_number": cu.vat_number, "email": cu.email, "tag_id": cu.tag_id,
            "tag_type": cu.tag_type, "tag_family_id": cu.tag_family_id,
            "modified_at": _modtime(cu.modtime), "extra": _extra(cu.extra)})
    for u in ds.users.values():
        out["users"].append({"id": u.id, "username": u.username, "is_admin": u.is_admin,
                             "secnr_hash": secnr_hash(u.secnr, hash_key), "national_number": None,
                             "extra": _extra(u.extra)})
    for pt in ds.pos_tables.values():
        out["pos_tables"].append({"id": pt.id, "table_number": pt.table_number,
                                  "status": pt.status, "extra": _extra(pt.extra)})
    for m in ds.payment_methods.values():
        out["payment_methods"].append({"id": m.id, "name": m.name, "extra": _extra(m.extra)})
    for pr in ds.printers.values():
        out["printers"].append({"id": pr.id, "name": pr.name, "extra": _extra(pr.extra)})
    for g in ds.gift_vouchers.values():
        out["gift_vouchers"].append({
            "id": g.id, "barcode": g.barcode, "value": g.value, "valid_from": g.valid_from,
            "valid_until": g.valid_until, "modified_at": _modtime(g.modtime), "extra": _extra(g.extra)})
    for cr in ds.customer_credits.values():
        out["customer_credits"].append({"customer_id": cr.customer_id, "tag_id": cr.tag_id,
                                        "value": cr.value, "tag_type": cr.tag_type,
                                        "extra": _extra(cr.extra)})
    for o in ds.orders:
        out["orders"].append({
            "id": o.id, "customer_id": o.customer_id, "register_id": o.register_id,
            "user_id": o.user_id, "total_price": o.total_price, "ordered_at": _utc(o.ordered_at),
            "clock_in": _utc(o.clock_in), "clock_out": _utc(o.clock_out), "extra": _extra(o.extra),
            **_local_reading(o, ds)})
        for line_no, line in enumerate(o.lines, start=1):
            out["order_lines"].append({
                "order_id": o.id, "line_no": line_no, "quantity": line.quantity,
                "product_id": line.product_id, "price": line.price, "tax_rate": line.tax_rate,
                "extra": _extra(line.extra)})
            for sub in line.subproducts:
                out["order_line_subproducts"].append({
                    "order_id": o.id, "line_no": line_no, "slot": sub.slot,
                    "subproduct_id": sub.subproduct_id, "price": sub.price, "tax_rate": sub.tax_rate})
        for method, amount in o.payments.items():
            if amount:
                out["order_payments"].append({"order_id": o.id, "method": method, "amount": amount})
    for inv in ds.invoices:
        out["invoices"].append({
            "id": inv.id, "customer_id": inv.customer_id, "total_price": inv.total_price,
            "invoice_date": inv.invoice_date, "due_date": inv.due_date, "number": inv.number,
            "doc_type": inv.doc_type, "note": inv.note, "from_vat_ticket": inv.from_vat_ticket,
            "extra": _extra(inv.extra)})
        for line_no, il in enumerate(inv.lines, start=1):
            out["invoice_lines"].append({
                "invoice_id": inv.id, "line_no": line_no, "quantity": il.quantity,
                "product_name": il.product_name, "price": il.price, "tax_rate": il.tax_rate,
                "extra": _extra(il.extra)})
    for cp in ds.coupons:
        out["coupons"].append({
            "id": cp.id, "barcode": cp.barcode, "value": cp.value, "value_type": cp.value_type,
            "valid_from": cp.valid_from, "valid_until": cp.valid_until, "is_used": cp.is_used,
            "extra": _extra(cp.extra)})
    return {name: sorted(rows, key=_sort_key) for name, rows in out.items()}


def _sort_key(row: dict[str, Any]) -> str:
    return repr([row.get(k) for k in ("id", "order_id", "invoice_id", "customer_id", "tag_id",
                                      "product_id", "subproduct_id", "line_no", "slot", "method")])


def stored_rows(engine: Engine, *, live_only: bool = True) -> dict[str, list[dict[str, Any]]]:
    """The synced tables as the same dicts (rows marked deleted left out unless asked)."""
    out = {}
    with engine.connect() as conn:
        for table in SYNCED_TABLES:
            query = select(*[c for c in table.columns if c.name not in SKIP])
            if live_only and "deleted_at" in table.c:
                query = query.where(table.c.deleted_at.is_(None))
            out[table.name] = sorted((dict(r._mapping) for r in conn.execute(query)), key=_sort_key)
    return out
