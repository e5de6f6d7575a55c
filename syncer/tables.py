"""The database schema: synced tables (as in design.md) and bookkeeping tables.

Conventions kept by every synced table:
- `license` is the first column of the primary key, so many shops share one database;
- money, prices, quantities and tax rates are NUMERIC (Decimal in Python);
- times are timezone-aware (stored as UTC; SQLite keeps them as UTC text);
- `synced_at` is when the row was last written; full-list tables add `deleted_at`;
- `extra` keeps the fields the API sent that have no column (NULL when none).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from syncer.dialects.types import Id, Json, KeyText, UtcDateTime

UTC = dt.UTC

# 15 significant digits round-trip exactly through SQLite's REAL storage as well
# as through Postgres NUMERIC; parsing rejects values that do not fit (quarantine).
MONEY_PRECISION, MONEY_SCALE = 15, 4
RATE_PRECISION, RATE_SCALE = 7, 4


def Money() -> Numeric[Any]:
    return Numeric(MONEY_PRECISION, MONEY_SCALE)


def Rate() -> Numeric[Any]:
    return Numeric(RATE_PRECISION, RATE_SCALE)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _license() -> Column[str]:
    return Column("license", String(100), primary_key=True)


def _synced() -> list[Column[Any]]:
    return [
        Column("extra", Json(), nullable=True),
        Column("synced_at", UtcDateTime(), nullable=False),
    ]


def _full_list() -> list[Column[Any]]:
    return [*_synced(), Column("deleted_at", UtcDateTime(), nullable=True)]


categories = Table(
    "categories",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text),
    *_full_list(),
)

products = Table(
    "products",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text),
    Column("category_id", BigInteger),
    Column("price", Money()),
    Column("quantity", Money()),
    Column("has_popup", Boolean),
    Column("has_menu_popup", Boolean),
    Column("has_open_price", Boolean),
    Column("modified_at", UtcDateTime()),
    *_full_list(),
)

subproducts = Table(
    "subproducts",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text),
    Column("price", Money()),
    Column("quantity", Money()),
    Column("modified_at", UtcDateTime()),
    *_full_list(),
)

# Children of subproducts (from `productlink`): replaced whenever the subproduct is written.
product_subproducts = Table(
    "product_subproducts",
    metadata,
    _license(),
    Column("product_id", BigInteger, primary_key=True, autoincrement=False),
    Column("subproduct_id", BigInteger, primary_key=True, autoincrement=False),
    Column("synced_at", UtcDateTime(), nullable=False),
    Index(None, "license", "subproduct_id"),
)

customers = Table(
    "customers",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text),
    Column("first_name", Text),
    Column("company_name", Text),
    Column("street_number", Text),
    Column("phone", Text),
    Column("zipcode", Text),
    Column("town", Text),
    Column("vat_number", Text),
    Column("email", Text),
    Column("tag_id", Text),
    Column("tag_type", Text),
    Column("tag_family_id", BigInteger),
    Column("modified_at", UtcDateTime()),
    *_full_list(),
)

users = Table(
    "users",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("username", Text),
    Column("is_admin", Boolean),
    # Keyed hash (HMAC-SHA256) of the national register number; the plain value
    # goes to `national_number` only when [privacy] store_national_number = true.
    Column("secnr_hash", String(64)),
    Column("national_number", Text),
    *_full_list(),
)

pos_tables = Table(
    "pos_tables",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("table_number", Text),
    Column("status", SmallInteger),  # 0 free, 1 in use, 2 waiting for payment
    *_full_list(),
)

payment_methods = Table(
    "payment_methods",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text),
    *_full_list(),
)

printers = Table(
    "printers",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text),
    *_full_list(),
)

orders = Table(
    "orders",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("customer_id", BigInteger),
    Column("register_id", BigInteger),
    Column("user_id", BigInteger),
    Column("total_price", Money()),
    Column("ordered_at", UtcDateTime()),
    Column("clock_in", UtcDateTime()),
    Column("clock_out", UtcDateTime()),
    # Local wall-clock reading (api.timezone) of the moment the order counts for:
    # ordered_at, or for a labour record its clock-in. Filled at parse time, because
    # SQLite cannot convert time zones; the report views group on these.
    Column("business_date", Date),
    Column("local_hour", SmallInteger),  # 0-23
    Column("local_weekday", SmallInteger),  # ISO: 1 Monday .. 7 Sunday
    Column("local_minute", SmallInteger),  # 0-59, of local_hour: where a business day starts
    # Hash of the whole source record, children included: a changed line or
    # payment changes it, so the order (and its children) is written again.
    Column("content_hash", String(32), nullable=False),
    *_synced(),
    Index(None, "license", "ordered_at"),
    Index(None, "license", "business_date"),
)

order_lines = Table(
    "order_lines",
    metadata,
    _license(),
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("quantity", Money()),
    Column("product_id", BigInteger),
    Column("price", Money()),
    Column("tax_rate", Rate()),
    *_synced(),
    Index(None, "license", "product_id"),
)

order_line_subproducts = Table(
    "order_line_subproducts",
    metadata,
    _license(),
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("slot", SmallInteger, primary_key=True, autoincrement=False),
    Column("subproduct_id", BigInteger),
    Column("price", Money()),
    Column("tax_rate", Rate()),
    Column("synced_at", UtcDateTime(), nullable=False),
)

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

order_payments = Table(
    "order_payments",
    metadata,
    _license(),
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("method", String(20), primary_key=True),
    Column("amount", Money(), nullable=False),
    Column("synced_at", UtcDateTime(), nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("customer_id", BigInteger),
    Column("total_price", Money()),
    Column("invoice_date", Date),
    Column("due_date", Date),
    Column("number", Text),
    Column("doc_type", SmallInteger),  # 1 invoice, 2 quote, 3 credit note
    Column("note", Text),
    Column("from_vat_ticket", Boolean),
    Column("content_hash", String(32), nullable=False),
    *_synced(),
    Index(None, "license", "invoice_date"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    _license(),
    Column("invoice_id", BigInteger, primary_key=True, autoincrement=False),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("quantity", Money()),
    Column("product_name", Text),
    Column("price", Money()),
    Column("tax_rate", Rate()),
    *_synced(),
)

gift_vouchers = Table(
    "gift_vouchers",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("barcode", Text),
    Column("value", Money()),
    Column("valid_from", Date),
    Column("valid_until", Date),
    Column("modified_at", UtcDateTime()),
    *_full_list(),
)

coupons = Table(
    "coupons",
    metadata,
    _license(),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("barcode", Text),
    Column("value", Money()),
    Column("value_type", SmallInteger),  # 1 money, 2 percent
    Column("valid_from", Date),
    Column("valid_until", Date),
    Column("is_used", Boolean),
    *_synced(),
)

customer_credits = Table(
    "customer_credits",
    metadata,
    _license(),
    Column("customer_id", BigInteger, primary_key=True, autoincrement=False),
    # '' when the credit has no tag: a key column cannot be NULL.
    Column("tag_id", String(100), primary_key=True),
    Column("value", Money()),
    Column("tag_type", Text),
    *_full_list(),
)

# --- bookkeeping -------------------------------------------------------------

sync_state = Table(
    "sync_state",
    metadata,
    Column("license", String(100), primary_key=True),
    Column("resource", String(40), primary_key=True),
    Column("cursor", BigInteger),  # id-window resources: highest id stored
    Column("window", Integer),  # the adaptive window size last used
    Column("last_success_at", UtcDateTime()),
    Column("last_attempt_at", UtcDateTime()),
    Column("last_error", Text),
    Column("last_error_at", UtcDateTime()),
    Column("disabled_reason", Text),  # set on 1005 (module not licensed)
    Column("next_run_at", UtcDateTime()),
    Column("rescan_position", BigInteger),  # a re-scan job: the last id its windows reached
    # An id-window job still catching up on its history (None: caught up): since when,
    # the last stored day when it began, and the first and last stored day after its
    # latest run (orders and invoices; coupons carry no day).
    Column("catching_up_since", UtcDateTime()),
    Column("catch_up_from_day", Date),
    Column("history_first_day", Date),
    Column("history_reached_day", Date),
    # Failed runs of the job in a row (0 or NULL: its last run did not fail); the wait
    # before the next grows with it (outcomes.backoff).
    Column("failures", Integer),
    # Which process runs the job right now (daemon.claim_on): a replica takes the lease
    # with the job's state in one statement, only when the job is due, renews it while
    # the job runs and lets it go with the next run stored; a lease past
    # `lease_expires_at` (a dead replica) is free for another.
    Column("lease_owner", String(120)),
    Column("lease_expires_at", UtcDateTime()),
)

# The last answer loaded in full per function and parameters (sync.apply_answer): the
# same answer again would write nothing, so it is not parsed again. `min_id`..`max_id`:
# the record ids it held (None: ids unknown); a load by other parameters that writes
# records in that range drops the mark.
answer_marks = Table(
    "answer_marks",
    metadata,
    Column("license", String(100), primary_key=True),
    Column("function", String(40), primary_key=True),
    Column("params_key", KeyText(), primary_key=True),
    Column("mark", String(64), nullable=False),
    Column("min_id", BigInteger),
    Column("max_id", BigInteger),
    Column("loaded_at", UtcDateTime(), nullable=False),
)

license_state = Table(
    "license_state",
    metadata,
    Column("license", String(100), primary_key=True),
    # Set on 1001/1002 with the fingerprint of the credentials that were refused (name,
    # token and base_url: `LicenseConfig.fingerprint`);
    # nothing is sent for the license until its credentials change.
    Column("auth_rejected_fingerprint", String(64)),
    Column("auth_rejected_at", UtcDateTime()),
    Column("auth_rejected_reason", Text),
    # Set on 1003/1004 to the datetime the API gave (capped: see outcomes.STOP_MARGIN).
    Column("blocked_until", UtcDateTime()),
    Column("blocked_reason", Text),
    Column("updated_at", UtcDateTime()),
    # The last stop an operator lifted on purpose (`syncer unblock`): when, who, what.
    Column("lifted_at", UtcDateTime()),
    Column("lifted_by", String(200)),
    Column("lifted_stop", Text),
)

# One row per license and API day: the atomic spend counter behind the budget.
request_budget = Table(
    "request_budget",
    metadata,
    Column("license", String(100), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("spent", Integer, nullable=False),
)

request_ledger = Table(
    "request_ledger",
    metadata,
    Column("id", Id(), primary_key=True, autoincrement=True),
    Column("license", String(100), nullable=False),
    Column("day", Date, nullable=False),  # the API's day (api.timezone)
    Column("sent_at", UtcDateTime(), nullable=False),
    Column("function", String(60), nullable=False),
    Column("params", Json(), nullable=True),  # never holds the token
    Column("purpose", String(20), nullable=False),  # backfill, run, call, check
    Column("job", String(40)),  # the daemon's job, or the backfill's resource, that sent it
    Column("attempt", SmallInteger, nullable=False),
    Column("outcome", String(20), nullable=False),  # pending, ok, empty, api_error, failed
    Column("error_code", Integer),
    Column("http_status", SmallInteger),
    Column("duration_ms", Integer),
    Index(None, "license", "day"),
    Index(None, "error_code", "sent_at"),  # recent bad logins, across licenses
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Id(), primary_key=True, autoincrement=True),
    Column("license", String(100), nullable=False),
    Column("resource", String(40), nullable=False),
    Column("record_key", Text),
    Column("raw", Text, nullable=False),
    Column("raw_hash", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("first_seen_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
    Column("seen_count", Integer, nullable=False),
    UniqueConstraint("license", "resource", "raw_hash"),
)

# The database's reporting settings, one row (id 1), written from the config's
# [reports] section by every command that opens the database; the report views read
# it, so a change takes effect without rewriting a stored row.
report_settings = Table(
    "report_settings",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("day_starts_at", String(5), nullable=False),  # "HH:MM", local time
    Column("day_start_minute", SmallInteger, nullable=False),  # the same, in minutes
    Column("updated_at", UtcDateTime()),
)

# One row per `syncer audit` the daemon ran (daily, per license): for the metric
# syncer_audit_problems and for anyone who wants the history of the checks.
audit_runs = Table(
    "audit_runs",
    metadata,
    Column("id", Id(), primary_key=True, autoincrement=True),
    Column("license", String(100), nullable=False),
    Column("ran_at", UtcDateTime(), nullable=False),
    Column("problems", Integer, nullable=False),
    Column("report", Json(), nullable=False),
    Column("kinds", Json()),  # problems by kind (audit.KINDS)
    Index(None, "license", "ran_at"),
)

# Process locks, not job leases (those are in sync_state): job "__daemon__" with
# license "*" guards SQLite's one daemon, and a rebuild or reset on SQLite takes it
# too. A lock past `expires_at` (a dead process) is free for another.
job_lease = Table(
    "job_lease",
    metadata,
    Column("license", String(100), primary_key=True),
    Column("job", String(40), primary_key=True),
    Column("owner", String(120)),
    Column("expires_at", UtcDateTime()),
)

# --- the response archive (design rule 8) -------------------------------------
# Every successful answer of a synced function, kept so the tables can be rebuilt
# without a request (see syncer/archive.py). A body is stored once per run of equal
# answers of one (license, function, params): the answers refer to it.

archive_bodies = Table(
    "archive_bodies",
    metadata,
    Column("id", Id(), primary_key=True, autoincrement=True),
    Column("license", String(100), nullable=False),
    Column("content_hash", String(64), nullable=False),  # sha256 of the raw bytes received
    Column("codec", String(10), nullable=False),  # zstd or zlib
    Column("raw_bytes", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
)

response_archive = Table(
    "response_archive",
    metadata,
    Column("id", Id(), primary_key=True, autoincrement=True),
    Column("license", String(100), nullable=False),
    Column("function", String(60), nullable=False),
    Column("params", Json(), nullable=True),  # never holds the token
    Column("params_key", KeyText(), nullable=False),  # the params as canonical JSON, for lookups
    Column("kind", String(20), nullable=False),  # full_list, window, date, rescan
    Column("state", Json(), nullable=True),  # the sync state the answer moved (cursor, window)
    Column("ledger_id", BigInteger),  # the request_ledger row of the request answered
    Column("received_at", UtcDateTime(), nullable=False),
    Column("records", Integer, nullable=False),
    # What loading it did: an answer that wrote or quarantined nothing repeats what
    # is stored, and the retention may drop it.
    Column("written", Integer, nullable=False),
    Column("quarantined", Integer, nullable=False),
    Column("body_id", BigInteger, ForeignKey("archive_bodies.id"), nullable=False),
    Index(None, "license", "function", "params_key", "id"),
    Index(None, "body_id"),
)

# Where a long task that commits as it goes stands, so a rerun continues it:
# `rebuild` (the last archived answer replayed) and `backfill` (the full lists a
# backfill already stored on its API day).
resume_point = Table(
    "resume_point",
    metadata,
    Column("license", String(100), primary_key=True),
    Column("task", String(20), primary_key=True),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("data", Json(), nullable=False),
)
