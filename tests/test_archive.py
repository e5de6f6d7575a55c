"""The response archive and `syncer rebuild`: every answer kept, the tables re-derived
from it with no request, on SQLite and Postgres, the real CLI over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, delete, func, select, update

from syncer import archive, page
from syncer import resources as res
from syncer import tables as t
from syncer.config import (
    ApiConfig,
    ArchiveConfig,
    Config,
    DatabaseConfig,
    LicenseConfig,
    ScheduleConfig,
    load_config,
)
from syncer.daemon import Daemon
from syncer.db import make_engine, migrate
from syncer.ledger import api_day, utcnow
from syncer.parse import Parser, parse_product
from syncer.runtime import Runtime
from syncer.simulator import Simulator, generate
from syncer.simulator.data import Order
from syncer.status import build as build_status
from syncer.sync import Sync
from tests.conftest import ANCHOR, LICENSE, TOKEN
from tests.helpers import (
    SYNCED_TABLES,
    FakeClock,
    cli_env,
    dump,
    finish,
    kill_slow_backfill,
    run_cli,
    spawn_cli,
)

BRUSSELS = ZoneInfo("Europe/Brussels")


def config_for(db_url: str, sim: Simulator) -> Config:
    return Config(database=DatabaseConfig(url=db_url),
                  api=ApiConfig(base_url=sim.base_url, max_attempts=2),
                  licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),),
                  schedule=ScheduleConfig(lease_seconds=45))


@contextmanager
def syncing(engine: Engine, config: Config) -> Iterator[Sync]:
    """The license's `Sync` over the simulator, as a `syncer run` pull makes it."""
    lic = config.licenses[0]
    with Runtime(engine, config, lic, purpose="run") as rt:
        yield rt.sync


def wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(SYNCED_TABLES):
            conn.execute(delete(table).where(table.c.license == LICENSE))


def cursors(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(t.sync_state.c.resource, t.sync_state.c.cursor)).all())


def rebuild_without_a_request(db_url: str, sim: Simulator, tmp_path: Path, *args: str) -> str:
    before = sim.stats()["requests"]
    result = run_cli(["rebuild", *args], cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert sim.stats()["requests"] == before, "a rebuild must not send a request"
    assert "0 requests sent" in result.output
    return result.output


def an_hour_of_run(engine: Engine, config: Config, sim: Simulator, clock: FakeClock) -> None:
    """Four hours of the daemon on a fake clock while the shop sells, edits and deletes products,
    and customers use coupons."""
    daemon = Daemon(engine, config, clock=clock)
    products = sorted(sim.dataset.products)
    coupons = sorted(c.id for c in sim.dataset.coupons if not c.is_used)
    try:
        for minute in range(0, 240, 6):
            if minute == 6:
                sim.touch("products", products[3:6])
            if minute == 12:
                sim.delete("products", products[10:12])
            if minute in (12, 60, 120):
                sim.add_orders(4, at=clock())
            if minute == 0:  # the coupon re-scan runs first, then hours later
                sim.use_coupons(coupons[:3])
            if minute == 30:  # a late change to an order stored at minute 12
                sim.touch("orders", [sim.dataset.orders.max_id - 2])
            daemon.run_due()
            clock.advance(minutes=6)
    finally:
        for lic in daemon.licenses:
            lic.close()


def test_rebuild_restores_wiped_or_damaged_tables_row_for_row_without_a_request(
    db_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(dt.datetime.combine(api_day(utcnow(), BRUSSELS) + dt.timedelta(days=1), dt.time(12),
                                          tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=3, orders=600, anchor=ANCHOR), licenses={LICENSE: TOKEN})
    sim.start()
    try:
        assert run_cli(["backfill"], cli_env(db_url, sim.base_url), cwd=tmp_path).exit_code == 0
        engine = make_engine(db_url)
        sim.set_clock(clock)
        an_hour_of_run(engine, config_for(db_url, sim), sim, clock)
        live, live_cursors = dump(engine, keep_synced_at=True), cursors(engine)
        assert any(r for r in live["products"] if r[-1] is not None), "a product is marked deleted"
        with engine.connect() as conn:  # every kind of answer wrote rows
            kinds = set(conn.execute(select(t.response_archive.c.kind).distinct()
                                     .where(t.response_archive.c.written > 0)).scalars())
        assert kinds == {archive.FULL_LIST, archive.WINDOW, archive.DATE, archive.RESCAN}

        wipe(engine)
        rebuild_without_a_request(db_url, sim, tmp_path)
        assert dump(engine, keep_synced_at=True) == live
        assert cursors(engine) == live_cursors

        with engine.begin() as conn:  # damage: lines gone, prices changed
            conn.execute(delete(t.order_lines).where(t.order_lines.c.line_no == 1))
            conn.execute(update(t.products).values(price=t.products.c.price + 1))
        rebuild_without_a_request(db_url, sim, tmp_path)
        assert dump(engine, keep_synced_at=True) == live

        # The retention drops what only repeated stored data; the rest still rebuilds.
        before = archive.sizes(engine)
        dropped = archive.retention(engine, keep_days=0, now=clock() + dt.timedelta(days=1))
        after = archive.sizes(engine)
        assert dropped > 0 and after["answers"] == before["answers"] - dropped
        wipe(engine)
        rebuild_without_a_request(db_url, sim, tmp_path)
        assert dump(engine, keep_synced_at=True) == live
        engine.dispose()
    finally:
        sim.stop()


def test_a_quarantined_record_lands_on_rebuild_once_the_parser_accepts_it(
    db_url: str, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = sim.dataset
    bad = sorted(ds.products)[7]
    ds.products[bad] = replace(ds.products[bad], extra={"price": "12,5 EUR"})
    assert run_cli(["backfill"], cli_env(db_url, sim.base_url), cwd=tmp_path).exit_code == 0
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(t.quarantine.c.record_key)).scalars().all() == [str(bad)]
        assert conn.execute(select(t.products.c.id).where(t.products.c.id == bad)).first() is None

    @wraps(parse_product)  # a parser fix, in this version: the same keys read
    def lenient(raw: dict[str, object], ctx: Any) -> Any:
        if raw.get("price") == "12,5 EUR":
            raw = {**raw, "price": "12.50"}
        return parse_product(raw, ctx)

    monkeypatch.setitem(res.BY_FUNCTION, "get-products", replace(res.PRODUCTS, parse=cast(Parser, lenient)))
    output = rebuild_without_a_request(db_url, sim, tmp_path, "--resource", "products")
    assert "1 record(s) left the quarantine" in output
    with engine.connect() as conn:
        price = conn.execute(select(t.products.c.price).where(t.products.c.id == bad)).scalar_one()
        assert conn.execute(select(func.count()).select_from(t.quarantine)).scalar_one() == 0
    assert str(price) in ("12.5000", "12.50", "12.5")
    engine.dispose()


def test_an_unchanged_full_list_pulled_100_times_adds_one_body(
    db_url: str, engine: Engine, sim: Simulator
) -> None:
    with syncing(engine, config_for(db_url, sim)) as sync:
        for _ in range(100):
            sync.pull_full_list(res.PRINTERS)
    with engine.connect() as conn:
        rows = conn.execute(select(t.response_archive.c.ledger_id, t.response_archive.c.body_id)
                            ).all()
        ledger_ids = set(conn.execute(select(t.request_ledger.c.id)).scalars())
    assert len(rows) == 100
    assert len({r.body_id for r in rows}) == 1
    assert archive.sizes(engine)["bodies"] == 1
    assert {r.ledger_id for r in rows} == ledger_ids  # each answer names its request


def test_archive_off_keeps_nothing(db_url: str, sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "syncer.toml").write_text("[archive]\nenabled = false\n")
    assert run_cli(["backfill", "--resource", "printers"], cli_env(db_url, sim.base_url),
                   cwd=tmp_path).exit_code == 0
    engine = make_engine(db_url)
    assert archive.sizes(engine)["answers"] == 0
    # And a rebuild refuses to empty what the archive cannot give back.
    result = run_cli(["rebuild", "--resource", "printers"], cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert result.exit_code == 1
    assert "stored before its first archived answer" in result.output
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.printers)).scalar_one() > 0
    engine.dispose()


def test_sigkill_during_pulls_leaves_answers_and_rows_together(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    (tmp_path / "syncer.toml").write_text("[resources.orders]\nwindow = 40\nmax_window = 40\n")
    env = cli_env(db_url, sim.base_url)
    engine = make_engine(db_url)
    migrate(engine)
    for kill_after in (3, 9, 14):
        kill_slow_backfill(sim, env, tmp_path, kill_after)
        # Every stored row comes from an archived answer, and every archived answer's rows
        # are stored: rebuilding from the archive alone gives the same tables.
        stored = dump(engine, keep_synced_at=True)
        assert sum(map(len, stored.values())) > 0
        wipe(engine)
        rebuild_without_a_request(db_url, sim, tmp_path)
        assert dump(engine, keep_synced_at=True) == stored
    engine.dispose()


def test_rebuild_is_refused_while_a_daemon_holds_the_license_jobs(
    db_url: str, engine: Engine, sim: Simulator, tmp_path: Path
) -> None:
    from syncer.leases import claim

    assert run_cli(["backfill", "--resource", "printers"], cli_env(db_url, sim.base_url),
                   cwd=tmp_path).exit_code == 0
    assert claim(engine, LICENSE, "printers", "otherhost:1:abc", dt.datetime.now(dt.UTC),
                 dt.timedelta(minutes=5))
    result = run_cli(["rebuild", "--resource", "printers"], cli_env(db_url, sim.base_url), cwd=tmp_path)
    assert result.exit_code == 1
    assert "a daemon (process 1 on otherhost) holds its job 'printers'" in result.output
    with engine.connect() as conn:  # nothing was touched
        assert conn.execute(select(func.count()).select_from(t.printers)).scalar_one() > 0


def test_the_daemon_applies_the_retention_once_a_day(db_url: str, engine: Engine) -> None:
    clock = FakeClock(dt.datetime(2026, 10, 27, 12, 0, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=200, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    clock=clock)
    sim.start()
    try:
        config = config_for(db_url, sim).model_copy(
            update={"archive": ArchiveConfig(keep_days=2)})
        daemon = Daemon(engine, config, clock=clock)
        for _ in range(20):
            daemon.run_due()
            clock.advance(minutes=10)
        with engine.connect() as conn:
            repeats = conn.execute(select(func.count()).select_from(t.response_archive).where(
                t.response_archive.c.written == 0, t.response_archive.c.quarantined == 0,
                t.response_archive.c.kind != archive.WINDOW)).scalar_one()
        before = archive.sizes(engine)
        assert repeats > 5
        clock.advance(days=1)
        daemon.run_due()  # the first job of the day runs it; nothing is older than 2 days
        assert archive.sizes(engine)["answers"] >= before["answers"]
        clock.advance(days=1, minutes=1)
        daemon.run_due()  # the next day: what only repeated stored data 2 days ago goes
        after = archive.sizes(engine)
        assert after["answers"] < before["answers"]
        clock.advance(hours=2)
        daemon.run_due()  # not again the same day
        with engine.connect() as conn:
            ran_at = conn.execute(select(t.resume_point.c.updated_at).where(
                t.resume_point.c.task == "retention")).scalar_one()
        assert ran_at < clock() - dt.timedelta(hours=1)
        for lic in daemon.licenses:
            lic.close()
    finally:
        sim.stop()


# --- the same answer again is not parsed again (answer_marks) -------------------------------


def _products(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(t.products.c.id, t.products.c.name, t.products.c.price, t.products.c.deleted_at,
                   t.products.c.synced_at).order_by(t.products.c.id))]


def test_an_unchanged_full_list_is_kept_but_not_parsed_again(
    db_url: str, engine: Engine, sim: Simulator
) -> None:
    with syncing(engine, config_for(db_url, sim)) as sync:
        first = sync.pull_full_list(res.PRODUCTS)
        assert first.counts.inserted == len(sim.dataset.products) > 0
        stored, parsing = _products(engine), sync.timings["parse"]
        assert parsing > 0
        again = sync.pull_full_list(res.PRODUCTS)
        assert (again.counts.written, again.counts.unchanged) == (0, first.records)
        assert sync.timings["parse"] == parsing  # not parsed
        assert _products(engine) == stored  # nothing written, not even synced_at
        # One product changes at the source: the list is parsed and that one row written.
        sim.touch("products", sorted(sim.dataset.products)[:1])
        changed = sync.pull_full_list(res.PRODUCTS)
        assert sync.timings["parse"] > parsing
        assert (changed.counts.updated, changed.counts.written) == (1, 1)
    with engine.connect() as conn:  # every answer is still kept (rule 8)
        assert conn.execute(select(func.count()).select_from(t.response_archive)).scalar_one() == 3


def test_after_a_reset_or_a_rebuild_an_unchanged_list_is_loaded_again(
    db_url: str, engine: Engine, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill", "--resource", "products"], env, cwd=tmp_path).exit_code == 0
    stored = len(_products(engine))
    assert stored == len(sim.dataset.products)
    # The rows go, the list at the source stays the same: the pull after a reset must
    # load it again, not take it for "unchanged".
    result = run_cli(["reset", "products", "--drop-rows", "--yes"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert _products(engine) == []
    assert run_cli(["backfill", "--resource", "products"], env, cwd=tmp_path).exit_code == 0
    assert len(_products(engine)) == stored
    # Rows damaged behind the syncer's back are put right by a rebuild, which also
    # forgets the mark, so the next pull compares the list row by row again.
    with engine.begin() as conn:
        conn.execute(update(t.products).values(name="damaged"))
    rebuild_without_a_request(db_url, sim, tmp_path, "--resource", "products")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.answer_marks).where(
            t.answer_marks.c.function == "get-products")).scalar_one() == 0
        assert "damaged" not in {row[1] for row in _products(engine)}


def test_a_list_with_a_quarantined_record_or_other_settings_is_parsed_again(
    db_url: str, engine: Engine, sim: Simulator
) -> None:
    ds = sim.dataset
    bad = sorted(ds.products)[2]
    ds.products[bad] = replace(ds.products[bad], extra={"price": "12,5 EUR"})
    with syncing(engine, config_for(db_url, sim)) as sync:
        sync.pull_full_list(res.PRODUCTS)
        parsing = sync.timings["parse"]
        sync.pull_full_list(res.PRODUCTS)
        assert sync.timings["parse"] > parsing  # its record is quarantined again, not skipped
        sync.pull_full_list(res.USERS)
        parsing = sync.timings["parse"]
        sync.pull_full_list(res.USERS)
        assert sync.timings["parse"] == parsing
    # A hash key set in the config changes what the same users list becomes.
    config = config_for(db_url, sim)
    keyed = config.model_copy(update={"privacy": config.privacy.model_copy(
        update={"hash_key": SecretStr("a-key-of-the-user")})})
    with syncing(engine, keyed) as sync:
        result = sync.pull_full_list(res.USERS)
        assert sync.timings["parse"] > 0
    with engine.connect() as conn:
        hashes = conn.execute(select(t.users.c.secnr_hash)).scalars().all()
    assert result.counts.updated > 0 and any(hashes)


def _day_of(order: Order) -> dt.date:
    return order.ordered_at.date()  # local, as the API's `date` parameter means it


def _marks(engine: Engine, function: str) -> dict[str, tuple[Any, Any]]:
    with engine.connect() as conn:
        return {r.params_key: (r.min_id, r.max_id) for r in conn.execute(
            select(t.answer_marks).where(t.answer_marks.c.function == function))}


def test_a_day_re_pulled_unchanged_is_not_parsed_and_a_write_by_others_drops_the_mark(
    db_url: str, engine: Engine, sim: Simulator
) -> None:
    """Yesterday's re-check mostly answers the same: not parsed again. But a window (or
    another day) that writes some of its orders makes its mark stale: dropped, so a
    later answer equal to the old one is compared row by row again."""
    orders = sim.dataset.orders
    with syncing(engine, config_for(db_url, sim)) as sync:
        sync.pull_window(res.ORDERS, 1, 10**6, window=10**6)  # everything, as a backfill
        # A day of orders in the middle of the history.
        day = _day_of(orders.window(orders.max_id // 2)[0])
        first = sync.pull_date(res.ORDERS, day)
        assert first.records > 0
        parsing = sync.timings["parse"]
        again = sync.pull_date(res.ORDERS, day)
        assert sync.timings["parse"] == parsing and again.counts.written == 0  # skipped
        date_key = archive.params_key({"date": day.isoformat()})
        ids = _marks(engine, "get-orders")[date_key]
        assert ids[0] <= orders.max_id // 2 <= ids[1]
        # One of that day's orders changes; a window over its ids writes it first.
        changed = ids[0]
        sim.touch("orders", [changed])
        written = sync.pull_window(res.ORDERS, changed, changed, window=1)
        assert written.counts.updated == 1
        assert date_key not in _marks(engine, "get-orders")  # the day's mark is stale: gone
        # A day elsewhere keeps its mark: its ids do not overlap.
        other = _day_of(orders.window(orders.max_id)[0])
        if other != day:
            sync.pull_date(res.ORDERS, other)
            kept = archive.params_key({"date": other.isoformat()})
            sim.touch("orders", [changed])
            sync.pull_window(res.ORDERS, changed, changed, window=1)
            assert kept in _marks(engine, "get-orders")
        # The day again: parsed (no mark), nothing left to write.
        parsing = sync.timings["parse"]
        third = sync.pull_date(res.ORDERS, day)
        assert sync.timings["parse"] > parsing and third.counts.written == 0


def _rebuild_point(engine: Engine) -> dict[str, Any] | None:
    """The rebuild's resume point as a reader sees it while the rebuild writes."""
    from sqlalchemy.exc import OperationalError

    from syncer.resume import read_point

    for _ in range(50):
        try:
            with engine.connect() as conn:
                return read_point(conn, LICENSE, "rebuild")
        except OperationalError:  # SQLite: the writer holds the file a moment
            time.sleep(0.01)
    raise AssertionError("the resume point could not be read")


@pytest.mark.parametrize("kill_at", [0.0, 0.3, 0.7])
def test_a_killed_rebuild_says_so_and_its_immediate_rerun_ends_exact(
        db_url: str, engine: Engine, sim: Simulator, tmp_path: Path, kill_at: float) -> None:
    # Small windows: many archived answers, so the kill lands between two of them.
    (tmp_path / "syncer.toml").write_text(
        "[resources.orders]\nwindow = 20\nmin_window = 10\nmax_window = 20\n")
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
    expected = dump(engine)
    assert len(expected["orders"]) > 500

    proc = spawn_cli(["rebuild"], env, tmp_path)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the rebuild ended before its kill point"
        assert time.monotonic() < deadline
        point = _rebuild_point(engine)
        if point is not None and int(point["after"]) >= kill_at * int(point["upto"]):
            break
        time.sleep(0.005)
    proc.kill()  # SIGKILL, and not reaped yet: its PID stays, as a zombie, until waited for
    try:
        assert dump(engine) != expected  # half-emptied: what the rerun must make whole
        status = run_cli(["status", "--json"], env, cwd=tmp_path)
        signs = [sign for lic in json.loads(status.output)["licenses"]
                 for sign in lic["stop_signs"] if sign["kind"] == "rebuild_unfinished"]
        assert len(signs) == 1 and "orders" in signs[0]["says"]
        text = run_cli(["status"], env, cwd=tmp_path)
        assert "A rebuild is unfinished" in text.output
        shown = page.render(build_status(engine, load_config(tmp_path / "syncer.toml", environ=env)))
        assert "A rebuild is unfinished" in shown and 'data-state="stopped"' in shown
        audited = run_cli(["audit", "--json"], env, cwd=tmp_path)
        assert audited.exit_code == 4
        found = json.loads(audited.output)["licenses"][0]
        assert "orders" in found["rebuild_unfinished"]["resources"]

        rerun = run_cli(["rebuild"], env, cwd=tmp_path)  # at once: no lease expiry waited for
        assert rerun.exit_code == 0, rerun.output
        assert "(resumed)" in rerun.output
    finally:
        finish(proc, timeout=10)
    assert dump(engine) == expected
    with engine.connect() as conn:
        from syncer.resume import unfinished_rebuilds
        assert unfinished_rebuilds(conn) == {}
    status = run_cli(["status", "--json"], env, cwd=tmp_path)
    assert "rebuild_unfinished" not in status.output.replace('"rebuild_unfinished_since": null', "")
