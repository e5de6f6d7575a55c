"""The `syncer` command line as a user meets it: exit codes, messages, budgets, secrets.

Commands that touch a database run on SQLite and on Postgres (`db_url`); the API is
the in-process simulator over real HTTP (`sim`, license "demo" with TOKEN).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select as io_select
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result
from sqlalchemy import func, inspect, select

from syncer import resources as res
from syncer import tables as t
from syncer.db import make_engine
from syncer.ledger import utcnow
from syncer.planner import next_midnight
from syncer.simulator import Simulator
from tests.conftest import CLI_OUTPUTS, LICENSE, TOKEN
from tests.helpers import (
    before_opening,
    cli_env,
    finish,
    run_cli,
    signal_after,
    spawn_cli,
    synced_at_by_table,
)

WRONG_TOKEN = "wrong-token-5b8d1e0c9a41"  # as unusual as TOKEN, so a leak is easy to find
BRUSSELS = ZoneInfo("Europe/Brussels")


def syncer(db_url: str, sim: Simulator, tmp_path: Path, *args: str, token: str = TOKEN) -> Result:
    """`syncer ARGS` in this process, against the simulator, with cwd = tmp_path."""
    return run_cli(list(args), cli_env(db_url, sim.base_url, token=token), cwd=tmp_path)


def said(result: Result) -> str:
    """Everything the command wrote (stdout and stderr), with rich's line wrapping undone."""
    return " ".join(result.output.split())


def requests_sent(sim: Simulator) -> int:
    return int(sim.stats()["requests"])


def table_counts(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return {r.name: conn.execute(select(func.count()).select_from(r.table)).scalar_one()
                    for r in res.RESOURCES}
    finally:
        engine.dispose()


def ledger_rows(db_url: str) -> list[Any]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            led = t.request_ledger.c
            return list(conn.execute(select(led.purpose, led.function, led.params, led.outcome,
                                            led.error_code).order_by(led.id)))
    finally:
        engine.dispose()


def sync_states(db_url: str) -> list[Any]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            c = t.sync_state.c
            return list(conn.execute(select(c.license, c.resource, c.cursor).order_by(c.resource)))
    finally:
        engine.dispose()


def license_state(db_url: str) -> Any:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(t.license_state)
                                .where(t.license_state.c.license == LICENSE)).one()
    finally:
        engine.dispose()


# --- syncer demo --------------------------------------------------------------------------------


def summary_rows(output: str) -> dict[str, dict[str, str]]:
    """The "Backfill summary" table of a run: resource -> {column: cell}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "Backfill summary" in line)
    header: list[str] = []
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 1:]:
        if line.startswith("└"):
            break
        cells = [c.strip() for c in re.split("[│┃]", line)[1:-1]]
        if not cells:
            continue
        if cells[0] == "license":
            header = cells
        elif header and cells[0]:
            rows[cells[1]] = dict(zip(header, cells, strict=True))
    assert header, output
    return rows


def run_demo(tmp_path: Path, now: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    env["COLUMNS"] = "200"  # a wide table, so its cells can be read back
    proc = spawn_cli(["demo", "--orders", "300", "--now", now], env, tmp_path)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    return output


def test_demo_syncs_into_a_local_file_and_a_second_run_writes_nothing(tmp_path: Path) -> None:
    # The shop grows with the day: pinned before opening time (10:00), and once for both
    # runs, they see the same history whatever the time (even across midnight).
    now = before_opening()
    first = run_demo(tmp_path, now)

    database = tmp_path / "cloudpos-demo.db"
    assert database.is_file()
    assert "Sales per day" in first
    assert "license demo:" in first and "requests used today" in first
    rows = summary_rows(first)
    assert set(rows) == {r.name for r in res.RESOURCES}
    assert all(r["status"] == "done" for r in rows.values()), rows
    assert rows["orders"]["inserted"] == "300"
    assert all(int(r["inserted"]) > 0 for r in rows.values()), rows
    engine = make_engine(f"sqlite:///{database}")
    written = synced_at_by_table(engine)
    assert sum(len(v) for v in written.values()) > 1000

    second = run_demo(tmp_path, now)

    again = summary_rows(second)
    assert all(r["status"] == "done" for r in again.values()), again
    for name, row in again.items():
        assert (row["inserted"], row["updated"], row["deleted"]) == ("0", "0", "0"), (name, row)
        if res.get(name).pull is res.Pull.FULL_LIST:
            assert row["unchanged"] == rows[name]["inserted"], (name, row)
    assert synced_at_by_table(engine) == written
    engine.dispose()


# --- migrate / status -----------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_a_second_run_is_a_no_op(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    for _ in range(2):
        result = syncer(db_url, sim, tmp_path, "migrate")
        assert result.exit_code == 0, result.output
        assert "schema is up to date" in result.stdout
    engine = make_engine(db_url)
    assert set(t.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()
    assert requests_sent(sim) == 0


def test_status_after_a_backfill_reports_requests_rows_and_cursors(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert syncer(db_url, sim, tmp_path, "backfill").exit_code == 0
    sent = requests_sent(sim)

    result = syncer(db_url, sim, tmp_path, "status", "--json")

    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)["licenses"]
    assert report["license"] == LICENSE
    assert report["requests_used_today"] == sent
    assert report["requests_left_today"] == 450 - sent
    assert (report["daily_budget"], report["reserve"]) == (500, 50)
    assert report["auth_rejected"] is None and report["blocked_until"] is None
    counts = table_counts(db_url)
    assert all(counts.values()), counts
    synced = [r for r in report["resources"] if r["resource"] in counts]
    assert {r["resource"]: r["rows"] for r in synced} == counts
    assert all(r["rows"] is None for r in report["resources"] if r not in synced)  # jobs, not tables
    cursors = {r["resource"]: r["cursor"] for r in synced if r["cursor"] is not None}
    assert cursors == {"orders": sim.dataset.orders.max_id, "invoices": sim.dataset.invoices.max_id,
                       "coupons": sim.dataset.coupons.max_id}
    assert all(r["last_success_at"] for r in synced)
    assert requests_sent(sim) == sent  # status spends nothing

    text = syncer(db_url, sim, tmp_path, "status")
    assert text.exit_code == 0, text.output
    assert f"license {LICENSE}: {sent} requests used today, {450 - sent} left" in said(text)
    assert re.search(rf"│ orders +│ {counts['orders']} +│ {sim.dataset.orders.max_id} +│", text.stdout)


# --- check ------------------------------------------------------------------------------------------


def test_check_passes_with_a_good_config_without_sending_anything(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert syncer(db_url, sim, tmp_path, "migrate").exit_code == 0

    result = syncer(db_url, sim, tmp_path, "check")

    assert result.exit_code == 0, result.output
    assert "config: defaults: ok (1 license(s))" in said(result)
    assert ": ok (revision " in said(result)
    assert requests_sent(sim) == 0


def test_check_on_an_unmigrated_database_says_to_migrate(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).touch()  # there, but empty
    result = syncer(db_url, sim, tmp_path, "check")
    assert result.exit_code == 1, result.output
    assert "run `syncer migrate`" in said(result)
    # --online too: a check writes no schema, and its request needs one to be recorded.
    online = syncer(db_url, sim, tmp_path, "check", "--online")
    assert online.exit_code == 1, online.output
    assert "no schema yet; run `syncer migrate` (then check --online again" in said(online)
    assert "run `syncer migrate` (then check --online again" in said(online)
    assert requests_sent(sim) == 0
    engine = make_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_check_does_not_create_a_sqlite_file_at_a_mistyped_path(
    sim: Simulator, tmp_path: Path
) -> None:
    missing = tmp_path / "typo.db"
    result = syncer(f"sqlite:///{missing}", sim, tmp_path, "check")
    assert result.exit_code == 1, result.output
    assert f"no database at {missing}" in said(result)
    assert "($SYNCER_DATABASE_URL)" in said(result)  # where the path came from
    assert not missing.exists()


def test_check_online_refuses_a_missing_sqlite_file_like_check_and_creates_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    missing = tmp_path / "typo.db"
    plain = syncer(f"sqlite:///{missing}", sim, tmp_path, "check")
    online = syncer(f"sqlite:///{missing}", sim, tmp_path, "check", "--online")

    assert (online.exit_code, online.output) == (plain.exit_code, plain.output) == (
        1, plain.output)
    assert f"no database at {missing}" in said(online)
    assert not missing.exists()
    assert requests_sent(sim) == 0


def test_check_on_a_new_sqlite_file_says_to_migrate_and_creates_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    """The first step on a new database: check says how to make it, not to backfill (a
    backfill would skip the credential check)."""
    new = tmp_path / "cloudpos.db"
    result = syncer(f"sqlite:///{new}", sim, tmp_path, "check", "--online")
    assert result.exit_code == 1, result.output
    assert "create it with `syncer migrate`, then check again" in said(result)
    assert "backfill" not in said(result)
    assert not new.exists()
    assert requests_sent(sim) == 0


def test_check_online_without_a_license_verifies_nothing_and_says_so(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env(sqlite_url, sim.base_url).items()
           if k not in ("CLOUDPOS_LICNAME", "CLOUDPOS_TOKEN")}
    assert run_cli(["migrate"], env, cwd=tmp_path).exit_code == 0
    plain = run_cli(["check"], env, cwd=tmp_path)
    assert plain.exit_code == 0, plain.output  # a config may be written before its license
    online = run_cli(["check", "--online"], env, cwd=tmp_path)
    assert online.exit_code == 1, online.output
    assert "--online: no license configured, so no credentials were verified" in said(online)
    assert requests_sent(sim) == 0


def test_check_names_the_license_whose_token_is_empty(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert syncer(db_url, sim, tmp_path, "migrate").exit_code == 0

    result = syncer(db_url, sim, tmp_path, "check", token="")

    assert result.exit_code == 1, result.output
    assert f"license {LICENSE}: no token ($CLOUDPOS_TOKEN is empty)" in said(result)
    online = syncer(db_url, sim, tmp_path, "check", "--online", token="")
    assert online.exit_code == 1
    assert requests_sent(sim) == 0  # an empty token is never sent


def test_check_online_spends_one_request_and_accepts_good_credentials(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    # --online records its request in the ledger: on a current database (after migrate).
    assert syncer(db_url, sim, tmp_path, "migrate").exit_code == 0
    result = syncer(db_url, sim, tmp_path, "check", "--online")

    assert result.exit_code == 0, result.output
    assert f"license {LICENSE}: credentials accepted" in said(result)
    assert requests_sent(sim) == 1
    assert [(r.purpose, r.outcome) for r in ledger_rows(db_url)] == [("check", "ok")]


def test_check_online_with_a_wrong_token_stops_the_license_until_the_token_changes(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert syncer(db_url, sim, tmp_path, "migrate").exit_code == 0
    result = syncer(db_url, sim, tmp_path, "check", "--online", token=WRONG_TOKEN)

    assert result.exit_code == 1, result.output
    assert f"license {LICENSE}: get-printers: 1002" in said(result)
    assert WRONG_TOKEN not in result.output
    assert requests_sent(sim) == 1

    refused = syncer(db_url, sim, tmp_path, "--log-level", "warning", "backfill", token=WRONG_TOKEN)

    assert refused.exit_code == 1, refused.output
    assert requests_sent(sim) == 1
    assert "credentials were refused" in said(refused)
    assert "1002" in said(refused)

    fixed = syncer(db_url, sim, tmp_path, "backfill")

    assert fixed.exit_code == 0, fixed.output
    assert requests_sent(sim) > 1
    assert license_state(db_url).auth_rejected_fingerprint is None


# --- call ----------------------------------------------------------------------------------------------


def test_call_prints_the_orders_asked_for_and_is_counted_as_call(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    result = syncer(db_url, sim, tmp_path, "call", "get-orders", "start=1", "end=3")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["success"] == 1
    assert [int(o["id"]) for o in body["data"]] == [o.id for o in sim.dataset.orders.window(1, 3)]
    assert len(body["data"]) == 3
    assert requests_sent(sim) == 1
    [row] = ledger_rows(db_url)
    assert (row.purpose, row.function, row.params, row.outcome) == (
        "call", "get-orders", {"start": "1", "end": "3"}, "ok")


def test_call_may_spend_the_reserve_that_backfill_keeps(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    (tmp_path / "syncer.toml").write_text("[api]\ndaily_budget = 20\nreserve = 5\n")

    first = syncer(db_url, sim, tmp_path, "backfill")
    assert first.exit_code == 3, first.output
    assert requests_sent(sim) == 15

    call = syncer(db_url, sim, tmp_path, "call", "get-orders", "start=1", "end=3")
    assert call.exit_code == 0, call.output
    assert len(json.loads(call.stdout)["data"]) == 3
    assert requests_sent(sim) == 16

    printers = syncer(db_url, sim, tmp_path, "backfill", "--resource", "printers")
    assert printers.exit_code == 3, printers.output
    assert "run again to continue" in said(printers)
    assert requests_sent(sim) == 16

    status = json.loads(syncer(db_url, sim, tmp_path, "status", "--json").stdout)["licenses"][0]
    assert (status["requests_used_today"], status["requests_left_today"]) == (16, 0)


def test_call_with_an_api_error_exits_1_naming_the_error_code(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    result = syncer(db_url, sim, tmp_path, "call", "get-confirmedweborder", "weborderid=")

    assert result.exit_code == 1, result.output
    assert "error: get-confirmedweborder: 2002 weborderid can not be empty" in said(result)
    assert [(r.purpose, r.outcome, r.error_code) for r in ledger_rows(db_url)] == [
        ("call", "api_error", 2002)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["get-orders", "start"], "start needs a value: `start=VALUE`"),
        (["get-orders", "start=1", "end"], "end needs a value: `end=VALUE`"),
        (["get-order", "start=1", "end=3"], "unknown function 'get-order'"),
        (["get-orders", "stat=1"], "get-orders takes no filter 'stat'; it takes: start= end= date= "
                                   "clockinclockout"),
        (["get-printers", "clockinclockout=1"], "get-printers takes no filter 'clockinclockout'"),
        (["get-orders", "clockinclockout=1"], "clockinclockout is a flag and takes no value"),
    ],
    ids=["missing-equals", "missing-equals-later", "unknown-function", "unknown-filter",
         "filter-of-another-function", "flag-with-value"],
)
def test_call_refuses_what_the_api_does_not_list_before_sending(
    sqlite_url: str, sim: Simulator, tmp_path: Path, args: list[str], expected: str
) -> None:
    """`call get-orders start` would send start="" and print the whole order history."""
    result = syncer(sqlite_url, sim, tmp_path, "call", *args)
    assert result.exit_code == 2, result.output
    assert expected in said(result)
    assert "call [OPTIONS] FUNCTION [PARAMS]..." in result.output  # the usage
    assert "nothing was sent" in said(result)
    assert "get-orders start= end= date= clockinclockout" in said(result)  # the known functions
    assert "get-reservationhours date= persons=" in said(result)
    assert requests_sent(sim) == 0
    assert not (tmp_path / "syncer.db").exists()  # refused before the database, too


def test_call_sends_a_listed_flag_bare_and_an_unlisted_function_only_with_raw(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    labour = syncer(sqlite_url, sim, tmp_path, "call", "get-orders", "clockinclockout")
    assert labour.exit_code == 0, labour.output
    labour_ids = [o.id for o in sim.dataset.orders.window() if o.is_labour]
    assert labour_ids
    assert [int(o["id"]) for o in json.loads(labour.stdout)["data"]] == labour_ids
    raw = syncer(sqlite_url, sim, tmp_path, "call", "--raw", "get-stock", "warehouse=1")
    assert raw.exit_code == 1, raw.output  # sent on purpose; the simulator does not know it
    assert requests_sent(sim) == 2
    assert [(r.function, r.params) for r in ledger_rows(sqlite_url)] == [
        ("get-orders", {"clockinclockout": ""}), ("get-stock", {"warehouse": "1"})]


# --- bad usage and config: exit 2 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "args", "expected"),
    [
        (None, ["backfill", "--resource", "nope"], ["Invalid value for '--resource'", "'nope'"]),
        (None, ["backfill", "--license", "othershop"], ["unknown license ['othershop']"]),
        (None, ["--config", "missing.toml", "status"], ["config file not found: missing.toml"]),
        ("[api]\ndaily_budjet = 400\n", ["--config", "shop.toml", "status"],
         ["invalid config in shop.toml:", "api.daily_budjet: unknown key; did you mean "
                                          "daily_budget?"]),
        ("[[licenses]]\nname = 'x'\ntokenenv = 'X'\n", ["--config", "shop.toml", "check"],
         ["licenses.0.tokenenv: unknown key; did you mean token_env?"]),
        ("[databse]\nurl = 'sqlite:///x.db'\n", ["--config", "shop.toml", "check"],
         ["databse: unknown key; did you mean database?"]),
        ("[api]\nspeed = 3\n", ["--config", "shop.toml", "check"],
         ["api.speed: unknown key; known here: base_url, daily_budget, max_answer_mib, max_attempts, "
          "reserve, timeout_seconds, timezone"]),
        ("[api]\nreserve = 'plenty'\n", ["--config", "shop.toml", "backfill"],
         ["invalid config in shop.toml:", "api.reserve: Input should be a valid integer"]),
        ("[resources.order]\nwindow = 100\n", ["--config", "shop.toml", "check"],
         ["invalid config in shop.toml:", "resources: unknown resource ['order']"]),
        ("[api\n", ["--config", "shop.toml", "migrate"], ["shop.toml: not valid TOML"]),
    ],
    ids=["unknown-resource", "unknown-license", "missing-config", "unknown-key",
         "unknown-license-key", "unknown-section", "unknown-key-nothing-close", "bad-value",
         "unknown-resource-section", "invalid-toml"],
)
def test_bad_usage_or_config_exits_2_and_says_what_and_where(
    sqlite_url: str, sim: Simulator, tmp_path: Path, config: str | None, args: list[str],
    expected: list[str],
) -> None:
    if config is not None:
        (tmp_path / "shop.toml").write_text(config)

    result = syncer(sqlite_url, sim, tmp_path, *args)

    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in said(result)
    assert requests_sent(sim) == 0


# --- the API's stop signs ------------------------------------------------------------------------------


def test_bad_token_sends_exactly_one_request_in_ten_backfills(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    codes = [syncer(db_url, sim, tmp_path, "backfill", token=WRONG_TOKEN).exit_code for _ in range(10)]

    assert codes == [1] * 10
    assert requests_sent(sim) == 1
    assert sum(sim.stats()["bad_logins"].values()) == 1
    state = license_state(db_url)
    assert state.auth_rejected_fingerprint is not None
    assert "1002" in state.auth_rejected_reason


def test_daily_limit_from_the_api_stops_the_backfill_until_the_time_it_gave(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    sim.set_daily_limit(4)

    before = utcnow()
    result = syncer(db_url, sim, tmp_path, "backfill")
    after = utcnow()  # the API's "tomorrow" is one of these two days' midnights

    assert result.exit_code == 3, result.output
    assert requests_sent(sim) == 5  # four answered, the fifth refused with 1003
    assert "1003 Limit of '4' requests per day reached" in said(result)
    assert sim.stats()["errors"] == {1003: 1}
    state = license_state(db_url)
    assert state.blocked_until in {next_midnight(before, BRUSSELS), next_midnight(after, BRUSSELS)}
    assert "1003" in state.blocked_reason

    again = syncer(db_url, sim, tmp_path, "backfill")

    assert again.exit_code == 3, again.output
    assert requests_sent(sim) == 5
    [report] = json.loads(syncer(db_url, sim, tmp_path, "status", "--json").stdout)["licenses"]
    assert report["blocked_until"] == state.blocked_until.isoformat()
    assert report["requests_left_today"] == 0


# --- secrets -----------------------------------------------------------------------------------------------


def test_the_token_never_shows_in_output_or_debug_logs(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    # Used by no other test: no earlier client in this process has registered it for masking,
    # so whatever this process prints with it is printed as it would be by a fresh one.
    unseen = "leak-check-token-8c6a2f0e93d7"
    good = cli_env(db_url, sim.base_url)
    bad = cli_env(db_url, sim.base_url, token=unseen)
    debug = ["--log-level", "debug"]

    backfill_good = run_cli([*debug, "backfill", "--resource", "printers"], good, cwd=tmp_path)
    assert backfill_good.exit_code == 0, backfill_good.output
    proc = spawn_cli([*debug, "backfill"], bad, tmp_path)
    backfill_bad, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, backfill_bad
    status_text = run_cli([*debug, "status"], bad, cwd=tmp_path)
    assert status_text.exit_code == 0, status_text.output
    status_json = run_cli([*debug, "status", "--json"], bad, cwd=tmp_path)
    assert status_json.exit_code == 0, status_json.output

    assert "GET get-printers" in backfill_good.output and "DEBUG" in backfill_good.output
    assert "get-categories: 1002 Token or name not valid" in backfill_bad
    assert "stopped: API error 1002" in said(status_text)
    assert json.loads(status_json.stdout)["licenses"][0]["auth_rejected"].startswith("API error 1002")
    for output in (backfill_good.output, backfill_bad, status_text.output, status_json.output):
        assert TOKEN not in output
        assert unseen not in output
    params = [row.params for row in ledger_rows(db_url)]
    assert len(params) == 2
    assert TOKEN not in json.dumps(params) and unseen not in json.dumps(params)



def test_json_logs_are_one_object_per_line_without_the_token(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    """`--log-format json` for log shippers: every stderr line parses, DEBUG included
    (each request is logged there), and none carries the token."""
    done = subprocess.run(
        [sys.executable, "-m", "syncer", "--log-format", "json", "--log-level", "debug",
         "backfill", "--resource", "printers"],
        env=cli_env(sqlite_url, sim.base_url), cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(set(rec) >= {"time", "level", "logger", "message"} for rec in lines)
    loggers = {rec["logger"] for rec in lines}
    assert {"syncer.client", "syncer.backfill"} <= loggers, loggers
    assert all(rec["time"].endswith("+00:00") for rec in lines)  # aware UTC times
    assert TOKEN not in done.stderr and TOKEN not in done.stdout


def test_call_refuses_credentials_as_parameters(sqlite_url: str, sim: Simulator,
                                                tmp_path: Path) -> None:
    """`call get-printers token=x` would make the API check x and stop a good license."""
    for param in ("token=evil", "licname=other", "TOKEN=evil"):
        result = run_cli(["call", "get-printers", param], cli_env(sqlite_url, sim.base_url),
                         cwd=tmp_path)
        assert result.exit_code == 2, result.output
        assert "cannot be a parameter" in result.output
    assert sim.stats()["requests"] == 0


def test_reading_commands_refuse_a_sqlite_path_that_is_not_there(sim: Simulator,
                                                                 tmp_path: Path) -> None:
    """A typo in the path must not answer "no rows" from a new, empty database."""
    typo = tmp_path / "cloudpos-dmeo.db"
    for command in (["status"], ["report", "vat"]):
        result = run_cli(command, cli_env(f"sqlite:///{typo}", sim.base_url), cwd=tmp_path)
        assert result.exit_code == 1, result.output
        assert f"nodatabaseat{typo}" in "".join(result.output.split())  # rich wraps paths
    assert not typo.exists()


def test_a_database_that_refuses_writes_is_one_line_not_a_traceback(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    assert run_cli(["migrate"], cli_env(sqlite_url, sim.base_url), cwd=tmp_path).exit_code == 0
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    done = subprocess.run([sys.executable, "-m", "syncer", "backfill", "--resource", "printers"],
                          env=cli_env(read_only, sim.base_url), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "error: database: attempt to write a readonly database" in done.stderr
    assert "run the command again" in done.stderr
    # `check` finds it before a backfill does.
    checked = run_cli(["check"], cli_env(read_only, sim.base_url), cwd=tmp_path)
    assert checked.exit_code == 1, checked.output
    assert "cannot write: attempt to write a readonly database" in checked.output
    # Reading it is fine: a URI path is a path like any other.
    assert run_cli(["status"], cli_env(read_only, sim.base_url), cwd=tmp_path).exit_code == 0
    missing = f"sqlite:///file:{path}.typo?mode=ro&uri=true"
    refused = run_cli(["status"], cli_env(missing, sim.base_url), cwd=tmp_path)
    assert refused.exit_code == 1 and f"no database at {path}.typo " in refused.output
    assert run_cli(["check"], cli_env(sqlite_url, sim.base_url), cwd=tmp_path).exit_code == 0


def test_run_with_a_port_in_use_says_so_and_leaves_no_daemon(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["run", "--http", f"127.0.0.1:{port}"],
                         cli_env(sqlite_url, sim.base_url), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "cannot listen there" in result.output
    assert sim.stats()["requests"] == 0
    for bad in ("127.0.0.1:99999", "127.0.0.1:0"):
        result = run_cli(["run", "--http", bad], cli_env(sqlite_url, sim.base_url), cwd=tmp_path)
        assert result.exit_code == 2 and "port from 1 to 65535" in result.output
    # No lease left behind: a daemon may start at once.
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.job_lease)
                            .where(t.job_lease.c.owner.is_not(None))).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(t.sync_state)
                            .where(t.sync_state.c.lease_owner.is_not(None))).scalar_one() == 0
    engine.dispose()


def test_no_license_message_shows_the_config_syntax(sqlite_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env(sqlite_url, "http://127.0.0.1:1/api/").items()
           if k not in ("CLOUDPOS_LICNAME", "CLOUDPOS_TOKEN")}
    result = run_cli(["backfill"], env, cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "[[licenses]]" in result.output


def test_logs_keep_the_upgrades_and_warnings_are_one_line(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "syncer.toml").write_text(
        "[[licenses]]\nname = 'shop'\ntoken = 'a-token-in-the-file'\n")
    (tmp_path / "syncer.toml").chmod(0o644)

    def migrate() -> str:
        env = {k: v for k, v in cli_env(sqlite_url, "http://127.0.0.1:1/api/").items()
               if not k.startswith("CLOUDPOS_")}
        done = subprocess.run([sys.executable, "-m", "syncer", "migrate"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stderr

    first, second = migrate(), migrate()
    assert "Running upgrade" in first and "Running upgrade" not in second
    assert "Context impl" not in first + second
    warning = [line for line in second.splitlines() if "readable by other users" in line]
    assert warning == ["warning: syncer.toml holds a token and is readable by other users; "
                       "run: chmod 600 syncer.toml"], second
    assert "UserWarning" not in second and "warnings.warn" not in second


# --- the console script as a user's shell runs it -----------------------------------------------


def test_ctrl_c_exits_130_from_any_command(sqlite_url: str, sim: Simulator, tmp_path: Path) -> None:
    """Not click's "Aborted!" and 1: the shell's code for an interrupted command."""
    sim.inject_fault("hang", count=3)
    proc = spawn_cli(["call", "get-printers"], cli_env(sqlite_url, sim.base_url), tmp_path)
    _, out = signal_after(proc, sim, 1, signal.SIGINT)
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Aborted" not in out and "Traceback" not in out


def answer_on_a_terminal(args: list[str], env: dict[str, str], cwd: Path, answer: str
                         ) -> tuple[int, str]:
    """The CLI on a pseudo-terminal (its questions are asked only there), answering its
    question with `answer`: exit code and everything it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "syncer", *args], env=env, cwd=cwd,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out, answered = b"", False
    try:
        while True:
            ready, _, _ = io_select.select([master], [], [], 30)
            assert ready, out.decode(errors="replace")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"Go on?" in out:
                os.write(master, answer.encode())
                answered = True
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    text = out.decode(errors="replace")
    CLI_OUTPUTS.append((" ".join(args), text))
    assert answered, text
    return code, text


def test_no_at_a_confirmation_is_cancelled_changes_nothing_and_exits_1(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    """Not "interrupted ... run again to continue" and 130: nothing began."""
    env = cli_env(sqlite_url, sim.base_url)
    assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
    sent, rows, state = requests_sent(sim), table_counts(sqlite_url), sync_states(sqlite_url)
    for args in (["reset", "products", "--drop-rows"], ["doctor", "--fresh"]):
        code, text = answer_on_a_terminal(args, env, tmp_path, "n\n")
        assert code == 1, text
        assert "cancelled, nothing changed" in text
        assert "interrupted" not in text and "Traceback" not in text
    assert (requests_sent(sim), table_counts(sqlite_url), sync_states(sqlite_url)) == (
        sent, rows, state)
    assert not list(tmp_path.glob("syncer-doctor-*.json"))
    code, text = answer_on_a_terminal(["reset", "printers"], env, tmp_path, "y\n")
    assert code == 0, text
    assert "printers: state forgotten" in " ".join(text.split())


def test_simulate_on_port_0_says_the_port_it_listens_on(tmp_path: Path) -> None:
    proc = spawn_cli(["simulate", "--port", "0", "--orders", "10"], {**os.environ}, tmp_path)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:(\d+)/api/)", banner)
        assert found and found[2] != "0", banner
        url = f"{found[1]}?get-printers&licname=demo&token=demo-token"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert json.loads(resp.read())["success"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        finish(proc, timeout=20)
    assert proc.returncode == 0
