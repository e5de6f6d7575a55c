"""`syncer audit`: what it finds in the stored data, checked against the simulator's own
data (computed here in Python), on SQLite and Postgres, through the real CLI."""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import Engine, func, insert, select, update

from syncer import audit
from syncer import tables as t
from syncer.config import (
    ApiConfig,
    Config,
    DatabaseConfig,
    LicenseConfig,
    ResourceConfig,
    ScheduleConfig,
)
from syncer.daemon import Daemon
from syncer.db import make_engine, migrate
from syncer.ops import serve
from syncer.simulator import Dataset, Simulator, generate
from syncer.simulator.data import MISSING_RUN, OFF_LINES, OVERPAID, Order
from syncer.status import audit_words
from syncer.status import build as build_status
from tests.conftest import ANCHOR, LICENSE, SUITE_DATABASES, TOKEN, database
from tests.helpers import backfill, cli_env, ledger_count, run_cli

CENT = Decimal("0.01")
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


# --- what the audit must find, computed from the simulator's data ---------------------------


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, ROUND_HALF_UP)


def lines_total(order: Order) -> Decimal:
    """The ticket's lines as its receipt shows them: per rate, rounded to the cent."""
    gross: dict[Decimal, Decimal] = {}
    for line in order.lines:
        gross[line.tax_rate] = gross.get(line.tax_rate, Decimal(0)) + line.quantity * line.price
        for sub in line.subproducts:
            gross[sub.tax_rate] = gross.get(sub.tax_rate, Decimal(0)) + line.quantity * sub.price
    return sum((cents(v) for v in gross.values()), Decimal(0))


def payments_off(ds: Dataset) -> list[int]:
    return [o.id for o in ds.orders if not o.is_labour
            and cents(sum(o.payments.values(), Decimal(0))) != cents(o.total_price)]


def lines_off(ds: Dataset) -> list[int]:
    return [o.id for o in ds.orders if not o.is_labour
            and abs(cents(o.total_price) - lines_total(o)) * 100 > len(o.lines)]


def missing_ranges(ids: set[int]) -> list[tuple[int, int]]:
    missing = sorted(set(range(min(ids), max(ids) + 1)) - ids)
    out: list[tuple[int, int]] = []
    for i in missing:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def gaps_of(result: dict[str, Any], resource: str) -> list[tuple[int, int, str]]:
    return [(g["first"], g["last"], g["status"]) for g in result["id_gaps"][resource]]


@dataclass
class Audited:
    url: str
    base_url: str
    ds: Dataset
    bad_order: int
    bad_product: int
    tmp: Path


def audit_cli(where: Audited, *args: str) -> Any:
    return run_cli(["audit", *args], cli_env(where.url, where.base_url), cwd=where.tmp)


@pytest.fixture(scope="module", params=SUITE_DATABASES)
def planted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Audited]:
    """The simulator with its anomalies, plus a product and an order that cannot be parsed,
    backfilled through the CLI."""
    tmp = tmp_path_factory.mktemp(f"audit-{request.param}")
    stack = ExitStack()
    url = stack.enter_context(database(request.param, tmp, "audit"))
    sim = Simulator(generate(seed=1, orders=600, anchor=ANCHOR, anomalies=True),
                    licenses={LICENSE: TOKEN})
    ds = sim.dataset
    bad_product = sorted(ds.products)[7]
    ds.products[bad_product] = replace(ds.products[bad_product], extra={"price": "abc"})
    broken = copy.copy(ds.orders.window(1, 100)[5])
    broken.extra = {"orderdetail": "not a list"}
    ds.orders.replace(broken)
    try:
        sim.start()
        backfill(url, sim, tmp)
        yield Audited(url, sim.base_url, ds, broken.id, bad_product, tmp)
    finally:
        sim.stop()
        stack.close()


def test_the_simulator_plants_exactly_one_of_each(planted: Audited) -> None:
    ds = planted.ds
    assert len(payments_off(ds)) == 1 and len(lines_off(ds)) == 1
    assert payments_off(ds) != lines_off(ds)
    (overpaid,) = (o for o in ds.orders if o.id == payments_off(ds)[0])
    assert sum(overpaid.payments.values(), Decimal(0)) - overpaid.total_price == OVERPAID
    (off,) = (o for o in ds.orders if o.id == lines_off(ds)[0])
    assert cents(off.total_price) - lines_total(off) == OFF_LINES
    assert sum(off.payments.values(), Decimal(0)) == off.total_price  # paid in full
    runs = [b - a + 1 for a, b in missing_ranges({o.id for o in ds.orders})]
    assert max(runs) >= MISSING_RUN
    # The default data set has none of it.
    clean = generate(seed=1, orders=600, anchor=ANCHOR)
    assert payments_off(clean) == [] and lines_off(clean) == []
    assert max(b - a + 1 for a, b in missing_ranges({o.id for o in clean.orders})) < MISSING_RUN


def test_audit_json_names_the_planted_tickets_gaps_and_quarantine(planted: Audited) -> None:
    result = audit_cli(planted, "--json", "--to", ANCHOR.isoformat())
    assert result.exit_code == audit.EXIT_PROBLEMS == 4, result.output
    report = json.loads(result.stdout)
    (lic,) = report["licenses"]
    assert lic["license"] == LICENSE
    ds = planted.ds
    assert [tk["order_id"] for tk in lic["tickets_payments_off"]] == payments_off(ds)
    assert [tk["order_id"] for tk in lic["tickets_lines_off"]] == lines_off(ds)
    (paid,) = lic["tickets_payments_off"]
    assert paid["difference"] == f"{-OVERPAID:.2f}"
    (lines,) = lic["tickets_lines_off"]
    assert lines["difference"] == f"{OFF_LINES:.2f}"

    # Every id the API lacks is a gap the backfill's windows asked about: confirmed. The
    # order that could not be parsed is not missing at the API: it is in the quarantine.
    stored = {o.id for o in ds.orders}
    expected = [(a, b, "confirmed") for a, b in missing_ranges(stored)]
    assert (planted.bad_order, planted.bad_order, "quarantined") not in expected
    got = gaps_of(lic, "orders")
    assert [g for g in got if g[2] != "quarantined"] == expected
    assert [g for g in got if g[2] == "quarantined"] == [(planted.bad_order, planted.bad_order,
                                                          "quarantined")]
    assert any(b - a + 1 >= MISSING_RUN for a, b, _ in got)  # the planted run, confirmed
    assert gaps_of(lic, "invoices") == [(a, b, "confirmed") for a, b in
                                        missing_ranges({i.id for i in ds.invoices})]
    assert gaps_of(lic, "coupons") == [(a, b, "confirmed") for a, b in
                                       missing_ranges({c.id for c in ds.coupons})]

    assert {name: [r["record_key"] for r in records] for name, records in lic["quarantine"].items()
            } == {"orders": [str(planted.bad_order)], "products": [str(planted.bad_product)]}
    assert "orderdetail" in lic["quarantine"]["orders"][0]["reason"]
    assert lic["stale_lists"] == [] and lic["open_days_without_tickets"] == []
    # Two tickets and two quarantined records; confirmed gaps are what the API said.
    assert lic["problems"] == report["problems"] == 4


def test_audit_text_says_what_it_found_and_sends_nothing(planted: Audited) -> None:
    engine = make_engine(planted.url)
    try:
        before = ledger_count(engine)
        result = run_cli(["audit", "--to", ANCHOR.isoformat()],
                         cli_env(planted.url, "http://127.0.0.1:9/"), cwd=planted.tmp)
        assert ledger_count(engine) == before
    finally:
        engine.dispose()
    assert result.exit_code == 4, result.output
    text = result.stdout
    assert "4 problem(s)" in text
    assert f"ticket {payments_off(planted.ds)[0]}" in text
    assert f"ticket {lines_off(planted.ds)[0]}" in text
    assert "confirmed by the API" in text
    assert f"orders record {planted.bad_order} in quarantine" in text


def test_audit_dates_limit_the_ticket_checks(planted: Audited) -> None:
    (overpaid,) = (o for o in planted.ds.orders if o.id == payments_off(planted.ds)[0])
    day = overpaid.ordered_at.date()
    result = audit_cli(planted, "--json", "--from", (day + dt.timedelta(days=1)).isoformat(),
                       "--to", ANCHOR.isoformat())
    lic = json.loads(result.stdout)["licenses"][0]
    assert lic["tickets_payments_off"] == []
    result = audit_cli(planted, "--from", "2026-10-20", "--to", "2026-10-01")
    assert result.exit_code == 2 and "after --to" in result.output
    result = audit_cli(planted, "--license", "nope")
    assert result.exit_code == 2 and "no data for license 'nope'" in result.output


def test_audit_of_the_clean_simulator_exits_0(db_url: str, sim: Simulator, tmp_path: Path) -> None:
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
    result = run_cli(["audit", "--json", "--to", ANCHOR.isoformat()], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["problems"] == 0
    (lic,) = report["licenses"]
    assert all(g["status"] == "confirmed" for gaps in lic["id_gaps"].values() for g in gaps)
    result = run_cli(["audit", "--to", ANCHOR.isoformat()], env, cwd=tmp_path)
    assert result.exit_code == 0 and "0 problem(s)" in result.stdout


# --- each check on hand-made rows ----------------------------------------------------------


def config(url: str, opening_hours: str | dict[str, str] = "10:00-23:00") -> Config:
    return Config(database=DatabaseConfig(url=url),
                  licenses=(LicenseConfig(name="shop", token=SecretStr(TOKEN)),),
                  schedule=ScheduleConfig(opening_hours=opening_hours))


def put_sale(conn: Any, order_id: int, day: dt.date) -> None:
    conn.execute(insert(t.orders).values(
        license="shop", id=order_id, total_price=Decimal(0), business_date=day, local_hour=12,
        local_minute=0, local_weekday=day.isoweekday(), content_hash="0" * 32, synced_at=NOW,
        ordered_at=dt.datetime.combine(day, dt.time(11), dt.UTC)))


def ledger_window(conn: Any, start: int, end: int, outcome: str = "ok") -> None:
    conn.execute(insert(t.request_ledger).values(
        license="shop", day=NOW.date(), sent_at=NOW, function="get-orders",
        params={"start": str(start), "end": str(end)}, purpose="backfill", attempt=1,
        outcome=outcome))


def test_a_gap_is_confirmed_only_where_an_answered_window_covered_it(engine: Engine) -> None:
    day = dt.date(2026, 11, 2)
    with engine.begin() as conn:
        for order_id in (1, 2, 9, 10, 20):
            put_sale(conn, order_id, day)
        ledger_window(conn, 1, 5)  # covers 3-5 of the gap 3-8
        ledger_window(conn, 6, 7, outcome="failed")  # not answered: proves nothing
        ledger_window(conn, 11, 30, outcome="empty")
        conn.execute(insert(t.request_ledger).values(  # a day re-check: no ids
            license="shop", day=NOW.date(), sent_at=NOW, function="get-orders",
            params={"date": "2026-11-02"}, purpose="run", attempt=1, outcome="ok"))
        conn.execute(insert(t.quarantine).values(
            license="shop", resource="orders", record_key="15", raw="{}", raw_hash="x",
            reason="bad", first_seen_at=NOW, last_seen_at=NOW, seen_count=1))
    result = audit.run(engine, config(str(engine.url)), license="shop", since=day, until=day,
                       now=NOW)
    (lic,) = result["licenses"]
    assert gaps_of(lic, "orders") == [(3, 5, "confirmed"), (6, 8, "not_asked"),
                                      (11, 14, "confirmed"), (15, 15, "quarantined"),
                                      (16, 19, "confirmed")]
    # The range not yet asked and the quarantined record are problems. The full lists were
    # never refreshed, but the license's first request was just now: not due yet.
    assert lic["stale_lists"] == []
    assert lic["problems"] == 1 + 1
    assert lic["kinds"] == {"id_gaps": 1, "quarantine": 1}


def test_a_list_never_refreshed_is_a_problem_only_once_its_interval_has_passed(
    engine: Engine
) -> None:
    """A fresh install is not "stale": a list never stored counts from the license's first
    request, after the list's longest interval of opening hours."""
    cfg = config(str(engine.url))
    with engine.connect() as conn:
        assert audit.stale_lists(conn, cfg, "shop", NOW) == []  # nothing ever sent
    with engine.begin() as conn:
        ledger_window(conn, 1, 5)  # the first request, at NOW (10:00, opening time)
    with engine.connect() as conn:
        assert audit.stale_lists(conn, cfg, "shop", NOW + dt.timedelta(minutes=20)) == []
        late = audit.stale_lists(conn, cfg, "shop", NOW + dt.timedelta(minutes=40))
        assert [(s["resource"], s["why"]) for s in late] == [("pos_tables", "never refreshed")]


def test_full_lists_are_stale_after_their_planned_interval_of_opening_hours(engine: Engine) -> None:
    lists = ("categories", "products", "subproducts", "customers", "users", "pos_tables",
             "payment_methods", "printers", "gift_vouchers", "customer_credits")
    with engine.begin() as conn:
        for resource in lists:
            conn.execute(insert(t.sync_state).values(license="shop", resource=resource,
                                                     last_success_at=NOW))
    cfg = config(str(engine.url))
    with engine.connect() as conn:
        # NOW is 10:00 in Brussels, opening time: pos_tables runs every 30 minutes while open.
        assert audit.stale_lists(conn, cfg, "shop", NOW + dt.timedelta(minutes=20)) == []
        late = audit.stale_lists(conn, cfg, "shop", NOW + dt.timedelta(minutes=40))
        assert [s["resource"] for s in late] == ["pos_tables"]
        # 13 hours open since: every list should have run (the longest interval is 12 hours).
        night = NOW + dt.timedelta(hours=14)
        assert [s["resource"] for s in audit.stale_lists(conn, cfg, "shop", night)] == list(lists)
        # Never open: only the lists the planner refreshes while closed (daily) count.
        closed = config(str(engine.url), {"default": "closed"})
        assert audit.stale_lists(conn, closed, "shop", NOW + dt.timedelta(hours=23)) == []
        assert [s["resource"] for s in audit.stale_lists(
            conn, closed, "shop", NOW + dt.timedelta(hours=25))] == [
            r for r in lists if r not in ("pos_tables", "customer_credits")]
        conn.execute(update(t.sync_state).where(t.sync_state.c.resource == "pos_tables")
                     .values(disabled_reason="1005"))
        assert "pos_tables" not in {s["resource"] for s in
                                    audit.stale_lists(conn, cfg, "shop", night)}


def test_open_days_without_a_ticket_follow_the_opening_hours(engine: Engine) -> None:
    monday = dt.date(2026, 11, 2)
    with engine.begin() as conn:
        for offset in (0, 2, 4):  # Monday, Wednesday, Friday
            put_sale(conn, offset + 1, monday + dt.timedelta(days=offset))
    sunday = monday + dt.timedelta(days=6)
    every_day = config(str(engine.url))
    weekdays = config(str(engine.url), {"sat": "closed", "sun": "closed", "tue": "closed",
                                        "default": "10:00-22:00"})
    with engine.connect() as conn:
        assert audit.open_days_without_tickets(conn, every_day, "shop", None, sunday) == [
            monday + dt.timedelta(days=d) for d in (1, 3, 5, 6)]
        assert audit.open_days_without_tickets(conn, weekdays, "shop", None, sunday) == [
            monday + dt.timedelta(days=3)]
        assert audit.open_days_without_tickets(conn, weekdays, "nobody", None, sunday) == []


@pytest.fixture
def live_sim() -> Iterator[Simulator]:
    """A shop whose history runs up to now (the `sim` fixture's ends on ANCHOR: every day
    since would be an open day without a ticket)."""
    simulator = Simulator(generate(seed=1, orders=600), licenses={LICENSE: TOKEN})
    simulator.start()
    yield simulator
    simulator.stop()


def test_a_fresh_install_is_audited_once_its_history_is_in_then_once_a_day(
    db_url: str, live_sim: Simulator
) -> None:
    """The daemon's start-up audit finds nothing stored yet: it waits ("history still
    loading") instead of reporting every id as missing, and audits when the history jobs
    are in; a healthy install then has no problem. Then once a day."""
    sim = live_sim
    engine = make_engine(db_url)
    migrate(engine)
    cfg = Config(database=DatabaseConfig(url=db_url),
                 api=ApiConfig(base_url=sim.base_url, max_attempts=2),
                 licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),),
                 resources={"orders": ResourceConfig(window=1000)})  # the history in one run
    # Before any sync: still loading, so not audited (the start-up audit of the daemon).
    assert audit.run_daily(engine, cfg) == 0
    [view] = build_status(engine, cfg).licenses
    assert view.history_loading and view.audit_problems is None
    assert audit_words(view, cfg.api.tz) == \
        "Audit: history still loading; the audit runs when it is in"
    daemon = Daemon(engine, cfg)
    daemon.start()
    try:
        deadline = time.monotonic() + 30
        runs: list[Any] = []
        while time.monotonic() < deadline and not runs:
            time.sleep(0.2)
            with engine.connect() as conn:
                runs = list(conn.execute(select(t.audit_runs)).all())
        time.sleep(1)  # no second audit follows
    finally:
        assert daemon.stop(timeout=10)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(t.audit_runs)).scalar_one() == 1
            assert not audit.history_loading(conn, cfg, LICENSE)
            first_order = conn.execute(select(func.min(t.orders.c.synced_at))).scalar()
        (run,) = runs
        assert run.license == LICENSE and run.ran_at >= first_order  # after the history came
        report = run.report if isinstance(run.report, dict) else json.loads(run.report)
        assert run.problems == report["problems"] == 0, audit.describe(report, ZoneInfo("UTC"))
        assert report["licenses"][0]["license"] == LICENSE
        # Within the day it does not run again; a day later it does.
        assert audit.run_daily(engine, cfg, clock=lambda: run.ran_at + dt.timedelta(hours=23)) == 0
        assert audit.run_daily(engine, cfg, clock=lambda: run.ran_at + dt.timedelta(hours=25)) == 1
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(t.audit_runs)).scalar_one() == 2
            assert audit.latest(conn)[LICENSE].problems == conn.execute(
                select(t.audit_runs.c.problems).order_by(t.audit_runs.c.ran_at.desc())).scalar()
            newest = conn.execute(select(t.audit_runs.c.problems)
                                  .order_by(t.audit_runs.c.ran_at.desc())).scalar()
        # The newest audit's count is the metric, and the status JSON's audit_problems.
        server = serve(daemon, "127.0.0.1", 0)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                text = resp.read().decode()
        finally:
            server.shutdown()
        [family] = [f for f in text_string_to_metric_families(text) if f.name == "syncer_audit_problems"]
        assert [(s.labels, s.value) for s in family.samples] == [({"license": LICENSE}, newest)]
        [view] = build_status(engine, cfg).licenses
        assert view.audit_problems == newest
    finally:
        engine.dispose()


def test_a_completed_backfill_audits_and_status_shows_the_problems_by_kind(
    db_url: str, tmp_path: Path
) -> None:
    """The end of a backfill is an audit's moment (the history is in): `syncer status`
    then shows its problems by kind and the command that lists them."""
    sim = Simulator(generate(seed=1, orders=600, anomalies=True), licenses={LICENSE: TOKEN})
    sim.start()
    try:
        env = cli_env(db_url, sim.base_url)
        assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
        engine = make_engine(db_url)
        try:
            with engine.connect() as conn:
                [run] = conn.execute(select(t.audit_runs)).all()
        finally:
            engine.dispose()
        listed = run_cli(["audit", "--license", LICENSE, "--json"], env, cwd=tmp_path)
        found = json.loads(listed.stdout)["licenses"][0]
        assert run.problems == found["problems"] > 0
        kinds = run.kinds if isinstance(run.kinds, dict) else json.loads(run.kinds)
        assert kinds == found["kinds"] == {"tickets_payments_off": 1, "tickets_lines_off": 1}
        text = run_cli(["status"], env, cwd=tmp_path).output
        assert (f"2 problem(s): 1 ticket(s) whose payments differ from the total; 1 ticket(s) "
                f"whose lines differ from the total (listed by `syncer audit --license {LICENSE}`)"
                ) in " ".join(text.split())
        report = json.loads(run_cli(["status", "--json"], env, cwd=tmp_path).stdout)
        assert report["licenses"][0]["audit"]["kinds"] == kinds
        assert report["licenses"][0]["history_loading"] is False
    finally:
        sim.stop()


def test_the_daily_audit_and_the_end_of_loading_at_once_audit_once(
    db_url: str, tmp_path: Path
) -> None:
    """The daemon's hourly audit (its first at start-up) and a history job's end of
    loading may look at once: one audit, not two (the whole-suite CI found two rows)."""
    sim = Simulator(generate(seed=1, orders=600), licenses={LICENSE: TOKEN})
    sim.start()
    try:
        env = cli_env(db_url, sim.base_url)
        assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
        cfg = Config(database=DatabaseConfig(url=db_url), api=ApiConfig(base_url=sim.base_url),
                     licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),))
        engine = make_engine(db_url)
        try:
            for _ in range(5):
                with engine.begin() as conn:
                    conn.execute(t.audit_runs.delete())
                start = threading.Barrier(2)
                threads = [threading.Thread(target=at_once, args=(start, call)) for call in (
                    lambda: audit.run_daily(engine, cfg),
                    lambda: audit.after_loading(engine, cfg, LICENSE))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=60)
                with engine.connect() as conn:
                    assert conn.execute(select(func.count()).select_from(t.audit_runs)).scalar_one() == 1
        finally:
            engine.dispose()
    finally:
        sim.stop()


def at_once(start: threading.Barrier, call: Callable[[], object]) -> None:
    start.wait()
    call()
