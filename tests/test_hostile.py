"""A hostile CloudPOS (tests/hostile.py) against the real CLI, on SQLite and Postgres."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from syncer import tables as t
from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
from syncer.daemon import Daemon
from syncer.db import make_engine, migrate
from syncer.planner import next_midnight
from syncer.simulator import Simulator, generate
from tests.conftest import ANCHOR, CLI_OUTPUTS, LICENSE, TOKEN
from tests.helpers import FakeClock, cli_env
from tests.hostile import Answer, gzip_bomb, hostile, with_extra_id


def syncer(db_url: str, base_url: str, cwd: Path, *args: str,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`syncer ARGS` in a subprocess, as an operator runs it (no terminal: no questions)."""
    done = subprocess.run([sys.executable, "-m", "syncer", *args], check=False,
                          env=cli_env(db_url, base_url, **(env or {})), cwd=cwd,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    CLI_OUTPUTS.append((" ".join(args), done.stdout + done.stderr))  # the leak guard reads it
    return done


def backfill(db_url: str, base_url: str, cwd: Path, *,
             api: str = "") -> subprocess.CompletedProcess[str]:
    """`syncer backfill`; `api`: lines of the config file's [api] table."""
    env = {}
    if api:
        config = cwd / "syncer.toml"
        config.write_text(f"[api]\n{api}\n")
        env["SYNCER_CONFIG"] = str(config)
    return syncer(db_url, base_url, cwd, "backfill", env=env)


def stop_of(db_url: str) -> Any:
    """The license's stored stop (its license_state row)."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(t.license_state).where(
                t.license_state.c.license == LICENSE)).first()
    finally:
        engine.dispose()


def api_error(code: int, message: str) -> bytes:
    return json.dumps({"success": 0, "errorcode": code, "message": message}).encode()


def stored_order_ids(db_url: str) -> list[int]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(select(t.orders.c.id)).scalars())
    finally:
        engine.dispose()


def quarantined_reasons(db_url: str, resource: str) -> dict[str, str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(t.quarantine.c.record_key, t.quarantine.c.reason)
                                .where(t.quarantine.c.resource == resource))
            return {str(key): reason for key, reason in rows}
    finally:
        engine.dispose()


@pytest.mark.parametrize("stray", [1_000_500, 10**12, 2**63 - 1])
def test_an_id_outside_the_window_neither_moves_the_cursor_nor_loads(
        db_url: str, sim: Simulator, tmp_path: Path, stray: int) -> None:
    reference = f"sqlite:///{tmp_path}/reference.db"
    clean = backfill(reference, sim.base_url, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    expected = stored_order_ids(reference)
    assert len(expected) > 100

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        if function == "get-orders" and params.get("start") == "1":
            return with_extra_id(body, stray)
        return None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "Traceback" not in out
    assert stored_order_ids(db_url) == expected  # every order, the stray one not among them
    starts = [int(p["start"]) for f, p in server.seen if f == "get-orders" and "start" in p]
    assert starts and stray + 1 not in starts  # the stray id never became a cursor
    reasons = quarantined_reasons(db_url, "orders")
    assert "outside the window" in reasons[str(stray)]


def test_a_base_url_with_a_fragment_is_refused_before_any_request(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    with hostile(sim.base_url, lambda *_: None) as server:
        run = backfill(db_url, server.base_url + "#shop", tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "api.base_url (from $CLOUDPOS_BASE_URL)" in run.stderr
    assert "a fragment drops the query" in run.stderr
    assert server.seen == []  # no request spent, no credentials stop stored


def clean_orders(sim: Simulator, tmp_path: Path) -> list[int]:
    """The order ids a backfill stores from the well-behaved simulator."""
    reference = f"sqlite:///{tmp_path}/reference.db"
    clean = backfill(reference, sim.base_url, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    return stored_order_ids(reference)


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_dripping_answer_is_cut_at_the_timeout_and_asked_again(
        db_url: str, sim: Simulator, tmp_path: Path, where: str) -> None:
    """`timeout_seconds` bounds the whole request: an answer dripping a byte every 0.2 s
    (each read well within the timeout) is cut at 2 s, and the window is asked again."""
    expected = clean_orders(sim, tmp_path)
    dripped: list[float] = []

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | Answer | None:
        if function == "get-orders" and params.get("start") == "1" and not dripped:
            dripped.append(time.monotonic())
            return Answer(body, drip=0.2) if where == "body" else Answer(body, drip_head=0.2)
        return None

    with hostile(sim.base_url, rewrite) as server:
        started = time.monotonic()
        run = backfill(db_url, server.base_url, tmp_path, api="timeout_seconds = 2")
        took = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert dripped  # the drip was served (and would have taken hours to finish)
    assert stored_order_ids(db_url) == expected
    assert took < 40, out  # one cut attempt of 2 s, then the clean run
    starts = [p.get("start") for f, p in server.seen if f == "get-orders"]
    assert starts.count("1") == 2  # the cut window was asked once more


def test_an_answer_past_the_cap_halves_the_window_and_loses_nothing(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    """A window's answer of 3 MiB with `max_answer_mib = 1`: reading stops at the cap,
    the window is asked again with half the ids, and every order is stored."""
    expected = clean_orders(sim, tmp_path)
    padded: list[str] = []

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | Answer | None:
        if function == "get-orders" and not padded:
            padded.append(params["end"])
            return Answer(b" " * (1 << 20), repeat=3)  # never read past the first MiB
        return None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path, api="max_answer_mib = 1")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "answered too much" in out
    assert stored_order_ids(db_url) == expected
    ends = [(int(p["start"]), int(p["end"])) for f, p in server.seen if f == "get-orders"]
    first, second = ends[0], ends[1]
    assert first[0] == second[0] == 1
    assert second[1] - second[0] + 1 == (first[1] - first[0] + 1) // 2


def test_a_gzip_bomb_is_refused_unread_and_reported(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    """A full list answered with 64 KiB that inflate to 64 MiB, `max_answer_mib = 1`:
    refused as too large every time, reported, and the products already stored stay."""
    bomb = gzip_bomb(64 << 20)
    assert len(bomb) < 100_000

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | Answer | None:
        return Answer(bomb, encoding="gzip") if function == "get-products" else None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path, api="max_answer_mib = 1")
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    assert "answer too large" in out and "max_answer_mib = 1" in out
    assert [f for f, _ in server.seen].count("get-products") == 3  # max_attempts, then reported


def live_products(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return len(conn.execute(select(t.products.c.id).where(
                t.products.c.deleted_at.is_(None))).all())
    finally:
        engine.dispose()


def audit(db_url: str, base_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncer", "audit"], check=False,
                          env=cli_env(db_url, base_url), cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("answer", [b'{"data": null}', b'{"data": ""}', b'{"data": {}}',
                                    b'{"data": [{"id": 1}], "data": []}'],
                         ids=["null", "empty-text", "empty-object", "repeated-key"])
def test_a_full_list_that_is_not_a_list_of_records_deletes_nothing(
        db_url: str, sim: Simulator, tmp_path: Path, answer: bytes) -> None:
    with hostile(sim.base_url, lambda *_: None) as server:
        first = backfill(db_url, server.base_url, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    live = live_products(db_url)
    assert live > 10

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return answer if function == "get-products" else None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    assert ("not a list of records" in out
            or "gives the key(s) 'data' more than once" in out), out
    assert [f for f, _ in server.seen].count("get-products") == 3  # retried, then reported
    assert live_products(db_url) == live


def test_an_empty_full_list_over_many_live_rows_is_kept_and_reported(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    with hostile(sim.base_url, lambda *_: None) as server:
        first = backfill(db_url, server.base_url, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    live = live_products(db_url)
    assert live > 10  # more than the default empty_list_max_deletes

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return b'{"data": []}' if function == "get-products" else None

    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path)
        out = run.stdout + run.stderr
        assert run.returncode == 1, out
        assert f"the API lists none while {live} products are live" in out
        assert "empty_list_max_deletes" in out
        assert [f for f, _ in server.seen].count("get-products") == 1  # a clean answer: not retried
        assert live_products(db_url) == live
        audited = audit(db_url, server.base_url, tmp_path)
    assert audited.returncode == 4, audited.stdout + audited.stderr
    assert "problem: products: the latest answer was refused, the rows kept" in audited.stdout
    # A list the shop did empty: with the threshold raised, the rows are marked deleted.
    with hostile(sim.base_url, rewrite) as server:
        config = tmp_path / "syncer.toml"
        config.write_text(f"[resources.products]\nempty_list_max_deletes = {live}\n")
        run = subprocess.run([sys.executable, "-m", "syncer", "backfill"], check=False,
                             env=cli_env(db_url, server.base_url, SYNCER_CONFIG=str(config)),
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert live_products(db_url) == 0


BRUSSELS = ZoneInfo("Europe/Brussels")


def test_a_far_future_daily_limit_stops_until_the_next_api_day_and_says_it_was_not_believed(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return api_error(1003, "Limit of '500' requests per day reached, next request "
                               "possible '9999-12-31 23:59:59'")

    before = dt.datetime.now(dt.UTC)
    with hostile(sim.base_url, rewrite) as server:
        run = backfill(db_url, server.base_url, tmp_path)
        after = dt.datetime.now(dt.UTC)
        out = run.stdout + run.stderr
        assert run.returncode == 3, out
        assert "Traceback" not in out
        assert "not believed" in out and "9999-12-31" in out
        stop = stop_of(db_url)
        assert before < stop.blocked_until <= next_midnight(after, BRUSSELS) + dt.timedelta(minutes=15)
        status = json.loads(syncer(db_url, server.base_url, tmp_path, "status", "--json").stdout)
        assert not status["licenses"][0]["blocked_until"].startswith("9999")


@pytest.mark.parametrize("given", ["2000-01-01 00:00:00", "9999-12-31 23:59:59"])
def test_an_ip_block_pauses_at_most_its_documented_time_and_an_operator_lifts_it(
        db_url: str, sim: Simulator, tmp_path: Path, given: str) -> None:
    blocked = [True]

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        if blocked[0]:
            return api_error(1004, f"5 bad logins reached, your ip adress is blocked till '{given}'")
        return None

    with hostile(sim.base_url, rewrite) as server:
        started = dt.datetime.now(dt.UTC)
        run = backfill(db_url, server.base_url, tmp_path)
        assert run.returncode == 3, run.stdout + run.stderr
        assert "not believed" in run.stdout + run.stderr
        until = stop_of(db_url).blocked_until
        # Past: still a block (the API just said so), of the documented 30 minutes.
        # Far: at most 30 minutes and the margin.
        low, high = ((dt.timedelta(minutes=29), dt.timedelta(minutes=31)) if given < "2026"
                     else (dt.timedelta(minutes=44), dt.timedelta(minutes=46)))
        assert started + low < until < started + high
        sent = len(server.seen)
        again = backfill(db_url, server.base_url, tmp_path)
        assert again.returncode == 3 and len(server.seen) == sent  # paused: nothing sent

        blocked[0] = False  # the operator found the program with the wrong password
        asked = syncer(db_url, server.base_url, tmp_path, "unblock", "--license", LICENSE)
        assert asked.returncode == 2 and "confirm with --yes" in asked.stderr
        assert stop_of(db_url).blocked_until == until  # not confirmed: nothing changed
        lifted = syncer(db_url, server.base_url, tmp_path, "unblock", "--license", LICENSE, "--yes")
        assert lifted.returncode == 0, lifted.stdout + lifted.stderr
        assert "lifted by" in lifted.stdout and "paused until" in lifted.stdout
        stop = stop_of(db_url)
        assert stop.blocked_until is None and stop.lifted_by and "1004" in stop.lifted_stop
        status = syncer(db_url, server.base_url, tmp_path, "status")
        assert "last stop lifted on purpose" in status.stdout and stop.lifted_by in status.stdout
        resumed = backfill(db_url, server.base_url, tmp_path)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert len(server.seen) > sent
    nothing = syncer(db_url, server.base_url, tmp_path, "unblock", "--license", LICENSE, "--yes")
    assert nothing.returncode == 0 and "not stopped; nothing to lift" in nothing.stdout
    typo = syncer(db_url, server.base_url, tmp_path, "unblock", "--license", "nope", "--yes")
    assert typo.returncode == 2 and "unknown license" in typo.stderr


def test_fixing_the_base_url_lifts_a_credentials_stop(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    with hostile(sim.base_url, lambda *_: None) as server:
        wrong = server.base_url.replace("/api/", "/apiv1/")
        run = backfill(db_url, wrong, tmp_path)
        assert run.returncode == 1, run.stdout + run.stderr
        assert stop_of(db_url).auth_rejected_fingerprint is not None
        assert len(server.seen) == 1  # one bad login, never retried
        refused = backfill(db_url, wrong, tmp_path)  # the same URL stays stopped
        assert refused.returncode == 1 and len(server.seen) == 1
        assert "base_url" in refused.stdout + refused.stderr

        fixed = backfill(db_url, server.base_url, tmp_path)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert len(server.seen) > 1
        assert stop_of(db_url).auth_rejected_fingerprint is None  # the answer cleared it
    assert stored_order_ids(db_url)


def test_a_credentials_stop_is_lifted_by_an_operator_when_the_key_was_fixed_at_the_vendor(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    refusing = [True]

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return api_error(1002, "licname or token not valid") if refusing[0] else None

    with hostile(sim.base_url, rewrite) as server:
        assert backfill(db_url, server.base_url, tmp_path).returncode == 1
        refusing[0] = False  # the vendor re-enabled the token: nothing changed in the config
        assert backfill(db_url, server.base_url, tmp_path).returncode == 1
        assert len(server.seen) == 1
        lifted = syncer(db_url, server.base_url, tmp_path, "unblock", "--license", LICENSE, "--yes")
        assert lifted.returncode == 0 and "credentials refused" in lifted.stdout
        assert backfill(db_url, server.base_url, tmp_path).returncode == 0
        assert len(server.seen) > 1


NESTED = b"[" * 100_000 + b"]" * 100_000  # JSON nested too deep to decode (RecursionError)
UNREADABLE = ("get-tables", "get-customercredits", "get-products", "get-customers")


def test_four_unreadable_list_functions_back_off_and_never_spend_the_day(
        db_url: str, tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime(2026, 10, 27, 8, 0, tzinfo=BRUSSELS))
    sim = Simulator(generate(seed=1, orders=200, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    clock=clock)
    sim.start()
    engine = make_engine(db_url)
    migrate(engine)
    try:
        with hostile(sim.base_url, lambda f, _p, _b: NESTED if f in UNREADABLE else None) as server:
            config = Config(database=DatabaseConfig(url=db_url),
                            api=ApiConfig(base_url=server.base_url, max_attempts=2),
                            licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),))
            daemon = Daemon(engine, config, clock=clock)
            end = clock() + dt.timedelta(days=1)
            while clock() < end:  # a whole API day, the shop open 10:00-23:00
                daemon.run_due()
                clock.advance(minutes=5)
        with engine.connect() as conn:
            ledger = conn.execute(select(t.request_ledger.c.function, t.request_ledger.c.sent_at,
                                         t.request_ledger.c.outcome)
                                  .order_by(t.request_ledger.c.id)).all()
            states = {s.resource: s for s in conn.execute(select(t.sync_state))}
            orders = conn.execute(select(func.count()).select_from(t.orders)).scalar_one()
    finally:
        engine.dispose()
        sim.stop()
    assert all(row.outcome != "pending" for row in ledger)
    assert orders == len(sim.dataset.orders)  # the healthy jobs went on
    for function in UNREADABLE:
        sent = [row.sent_at for row in ledger if row.function == function]
        gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
        # 5, 10, 20 ... minutes, then every 4 hours: a dozen tries, not the day's share.
        assert 6 <= len(sent) <= 14, (function, sent)
        assert max(gaps) >= dt.timedelta(hours=4), gaps
    for job in ("pos_tables", "customer_credits", "products", "customers"):
        assert "RecursionError" in (states[job].last_error or ""), states[job]
        assert states[job].failures >= 6
    assert states["orders"].failures in (None, 0)
    assert len(ledger) <= config.spendable(config.licenses[0])


def test_an_errorcode_that_is_no_number_is_an_unreadable_answer_never_a_pending_row(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return b'{"success": 0, "errorcode": 1e400, "message": "x"}'

    with hostile(sim.base_url, rewrite) as server:
        run = syncer(db_url, server.base_url, tmp_path, "backfill", "--resource", "products")
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out and "errorcode '1E+400' is not an error code" in out
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            outcomes = conn.execute(select(t.request_ledger.c.outcome)).scalars().all()
    finally:
        engine.dispose()
    assert outcomes and set(outcomes) == {"failed"}  # each attempt settled, none pending
    assert len(outcomes) == len(server.seen)


def test_a_bug_outside_any_pull_ends_the_command_with_one_clear_line(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    # A fault no pull can raise today, injected where none is caught: the command's last
    # line of defence (`cli.main`) still speaks in one line, with no traceback.
    crash = ("import sys; from syncer import backfill; from syncer.cli import main\n"
             "def broken(*a, **k): raise OverflowError('int too large to convert')\n"
             "backfill.Backfill.run = broken\nsys.argv = ['syncer', 'backfill']\nmain()\n")
    run = subprocess.run([sys.executable, "-c", crash], check=False, capture_output=True,
                         text=True, env=cli_env(db_url, sim.base_url), cwd=tmp_path, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "unexpected OverflowError: int too large to convert" in run.stderr
    assert "--log-level debug" in run.stderr
