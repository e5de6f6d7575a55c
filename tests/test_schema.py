"""The migrations build exactly the schema of syncer.tables, on SQLite and on Postgres."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, insert, inspect, select

from syncer import tables as t
from syncer.db import alembic_config, make_engine, migrate
from syncer.dialects.types import UtcDateTime

BRUSSELS = ZoneInfo("Europe/Brussels")

# design.md: money, prices, tax rates and quantities are exact NUMERIC.
MONEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "products": ("price", "quantity"),
    "subproducts": ("price", "quantity"),
    "orders": ("total_price",),
    "order_lines": ("quantity", "price", "tax_rate"),
    "order_line_subproducts": ("price", "tax_rate"),
    "order_payments": ("amount",),
    "invoices": ("total_price",),
    "invoice_lines": ("quantity", "price", "tax_rate"),
    "gift_vouchers": ("value",),
    "coupons": ("value",),
    "customer_credits": ("value",),
}


@pytest.fixture
def empty_engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database (no migration run yet)."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def schema_diff(engine: Engine) -> list[Any]:
    """What alembic's autogenerate would change to make the database match syncer.tables."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, t.metadata))


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def user_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_migrated_database_matches_the_table_definitions(empty_engine: Engine) -> None:
    migrate(empty_engine)
    assert user_tables(empty_engine) == set(t.metadata.tables)
    assert schema_diff(empty_engine) == []


def test_migrate_twice_changes_nothing_and_keeps_the_data(empty_engine: Engine) -> None:
    migrate(empty_engine)
    now = dt.datetime.now(dt.UTC)
    with empty_engine.begin() as conn:
        conn.execute(insert(t.printers).values(license="shop", id=1, name="Keuken", synced_at=now))

    migrate(empty_engine)

    assert current_revision(empty_engine) == head_revision(empty_engine)
    assert schema_diff(empty_engine) == []
    with empty_engine.connect() as conn:
        assert conn.execute(select(t.printers.c.name)).scalars().all() == ["Keuken"]


def test_downgrade_to_base_then_upgrade_to_head(empty_engine: Engine) -> None:
    migrate(empty_engine)
    cfg = alembic_config(empty_engine)

    command.downgrade(cfg, "base")
    assert user_tables(empty_engine) == set()
    assert current_revision(empty_engine) is None

    command.upgrade(cfg, "head")
    assert current_revision(empty_engine) == head_revision(empty_engine)
    assert user_tables(empty_engine) == set(t.metadata.tables)
    assert schema_diff(empty_engine) == []


def test_money_columns_are_numeric_in_the_database(empty_engine: Engine) -> None:
    migrate(empty_engine)
    inspector = inspect(empty_engine)
    for table, names in MONEY_COLUMNS.items():
        columns = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        for name in names:
            kind = columns[name]
            assert isinstance(kind, sa.Numeric), (table, name, kind)
            assert not isinstance(kind, sa.Float), (table, name, kind)
            assert kind.scale == 4, (table, name, kind)


def test_timestamps_are_timestamptz_on_postgres(pg_url: str) -> None:
    # SQLite has no such type; the round trip below checks its values come back aware.
    engine = make_engine(pg_url)
    migrate(engine)
    inspector = inspect(engine)
    for table in t.metadata.sorted_tables:
        reflected = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if isinstance(column.type, UtcDateTime):
                kind = reflected[column.name]
                assert isinstance(kind, sa.DateTime), (table.name, column.name)
                assert kind.timezone is True, (table.name, column.name)
    engine.dispose()


def test_money_and_times_come_back_exact_and_timezone_aware(empty_engine: Engine) -> None:
    migrate(empty_engine)
    # Local Brussels time on the night the clocks go back: the second 02:30 (winter time).
    ordered = dt.datetime(2026, 10, 25, 2, 30, 15, tzinfo=BRUSSELS, fold=1)
    synced = dt.datetime(2026, 10, 27, 9, 0, 0, 123456, tzinfo=dt.UTC)
    total = Decimal("12345678901.2345")
    with empty_engine.begin() as conn:
        conn.execute(insert(t.orders).values(
            license="shop", id=7, total_price=total, ordered_at=ordered, content_hash="x" * 32,
            synced_at=synced))
        conn.execute(insert(t.order_lines).values(
            license="shop", order_id=7, line_no=1, quantity=Decimal("3"), price=Decimal("0.1000"),
            tax_rate=Decimal("0.2100"), synced_at=synced))

    with empty_engine.connect() as conn:
        order = conn.execute(select(t.orders).where(t.orders.c.id == 7)).one()
        line = conn.execute(select(t.order_lines)).one()

    assert isinstance(order.total_price, Decimal)
    assert order.total_price == total
    assert (line.quantity, line.price, line.tax_rate) == (Decimal(3), Decimal("0.1"), Decimal("0.21"))
    assert all(isinstance(v, Decimal) for v in (line.quantity, line.price, line.tax_rate))
    assert line.quantity * line.price == Decimal("0.3")  # exact, not 0.30000000000000004

    for value, written in ((order.ordered_at, ordered), (order.synced_at, synced)):
        assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)
        # (An ambiguous local time never compares equal across zones, PEP 495: compare in UTC.)
        assert value == written.astimezone(dt.UTC)
    assert order.ordered_at.astimezone(BRUSSELS).utcoffset() == dt.timedelta(hours=1)
    assert order.clock_in is None


def test_a_naive_datetime_is_refused(empty_engine: Engine) -> None:
    migrate(empty_engine)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), empty_engine.begin() as conn:
        conn.execute(insert(t.printers).values(license="shop", id=1, name="Bar",
                                               synced_at=dt.datetime(2026, 1, 1, 12, 0)))


def test_replicas_migrating_at_once_take_turns(server_url: str, tmp_path: Path) -> None:
    """Each replica runs `syncer migrate` on start; on a new database they must not
    both create the schema (duplicate types and tables)."""
    env = {**os.environ, "SYNCER_DATABASE_URL": server_url}
    procs = [subprocess.Popen([sys.executable, "-m", "syncer", "migrate"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(3)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs


def test_the_coupon_rescan_position_moves_to_its_own_column(empty_engine: Engine) -> None:
    """0004: a re-scan's position was kept in `cursor`; it moves to `rescan_position`
    (and back on downgrade), and no resource's cursor changes."""
    cfg = alembic_config(empty_engine)
    command.upgrade(cfg, "0003")
    state = sa.table("sync_state", sa.column("license"), sa.column("resource"), sa.column("cursor"))
    with empty_engine.begin() as conn:
        conn.execute(insert(state), [{"license": "shop", "resource": "coupons_rescan", "cursor": 1500},
                                     {"license": "shop", "resource": "coupons", "cursor": 4321}])
    command.upgrade(cfg, "0004_rescan_position")
    with empty_engine.connect() as conn:
        rows = {r.resource: (r.cursor, r.rescan_position) for r in conn.execute(select(
            t.sync_state.c.resource, t.sync_state.c.cursor, t.sync_state.c.rescan_position))}
    assert rows == {"coupons_rescan": (None, 1500), "coupons": (4321, None)}
    command.downgrade(cfg, "0003")
    with empty_engine.connect() as conn:
        back = dict(conn.execute(select(state.c.resource, state.c.cursor)).all())
    assert back == {"coupons_rescan": 1500, "coupons": 4321}


def test_job_leases_move_into_the_sync_state(empty_engine: Engine) -> None:
    """0009: a job's lease lives in its sync_state row; `job_lease` keeps the process
    locks (SQLite's one daemon), and its job rows, leases no run holds during a
    migration, go."""
    cfg = alembic_config(empty_engine)
    command.upgrade(cfg, "0008_answer_mark")
    lease = sa.table("job_lease", sa.column("license"), sa.column("job"), sa.column("owner"))
    state = sa.table("sync_state", sa.column("license"), sa.column("resource"), sa.column("cursor"))
    with empty_engine.begin() as conn:
        conn.execute(insert(lease), [{"license": "*", "job": "__daemon__", "owner": "host:1:a"},
                                     {"license": "shop", "job": "orders", "owner": "host:1:a"}])
        conn.execute(insert(state), [{"license": "shop", "resource": "orders", "cursor": 42}])
    command.upgrade(cfg, "0009_job_lease_in_state")
    with empty_engine.connect() as conn:
        assert conn.execute(select(lease.c.license, lease.c.job)).all() == [("*", "__daemon__")]
        rows = conn.execute(select(t.sync_state.c.cursor, t.sync_state.c.lease_owner,
                                   t.sync_state.c.lease_expires_at)).all()
    assert rows == [(42, None, None)]
    command.downgrade(cfg, "0008_answer_mark")
    with empty_engine.connect() as conn:
        assert conn.execute(select(state.c.cursor)).scalars().all() == [42]
        columns = {c["name"] for c in sa.inspect(conn).get_columns("sync_state")}
    assert "lease_owner" not in columns
