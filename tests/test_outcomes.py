"""The outcome table: one meaning per way a request can end, read by every command."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from syncer import outcomes
from syncer import tables as t
from syncer.client import (
    API_ERRORS,
    BudgetExhausted,
    Cancelled,
    LicenseStopped,
    NotFound,
    ServerError,
    UnknownApiError,
)
from syncer.client import DailyLimitReached as Limit
from syncer.client import EmptyCredentials as Empty
from syncer.client import InputRejected as Input
from syncer.client import InvalidCredentials as Invalid
from syncer.client import IpBlocked as Blocked
from syncer.client import ModuleNotLicensed as Unlicensed
from syncer.db import make_engine
from syncer.ledger import utcnow
from syncer.outcomes import Kept, Scope
from tests.helpers import cli_env, run_cli

BRUSSELS = ZoneInfo("Europe/Brussels")
NOW = dt.datetime(2026, 10, 27, 14, 0, tzinfo=BRUSSELS)


def test_the_errorcode_map_is_built_from_the_exception_classes() -> None:
    by_code = dict(API_ERRORS)
    assert by_code == {1001: Empty, 1002: Invalid, 1003: Limit, 1004: Blocked, 1005: Unlicensed,
                       2000: NotFound, 2001: Input, 2002: Input, 2003: Input}
    assert UnknownApiError not in API_ERRORS.values()


@pytest.mark.parametrize(("error", "scope", "exit_code", "again"), [
    (BudgetExhausted("spent"), Scope.LICENSE, 3, dt.datetime(2026, 10, 28, tzinfo=BRUSSELS)),
    (LicenseStopped("waits", NOW + dt.timedelta(hours=2)), Scope.LICENSE, 3, NOW + dt.timedelta(hours=2)),
    (LicenseStopped("refused before"), Scope.LICENSE, 1, NOW + dt.timedelta(days=1)),
    (Invalid("x: 1002 no", 1002), Scope.LICENSE, 1, NOW + dt.timedelta(days=1)),
    (Limit("x: 1003", 1003), Scope.LICENSE, 3, dt.datetime(2026, 10, 28, tzinfo=BRUSSELS)),
    (Blocked("x: 1004", 1004), Scope.LICENSE, 3, NOW + dt.timedelta(minutes=30)),
    (Blocked("x: 1004", 1004, until=NOW + dt.timedelta(minutes=7)), Scope.LICENSE, 3,
     NOW + dt.timedelta(minutes=7)),
    (Unlicensed("x: 1005", 1005), Scope.RESOURCE, 0, NOW + dt.timedelta(days=1)),
    (Input("x: 2002", 2002), Scope.PULL, 1, NOW + dt.timedelta(minutes=5)),
    (ServerError("x: HTTP 503"), Scope.PULL, 1, NOW + dt.timedelta(minutes=5)),
    (Cancelled("closed"), Scope.PULL, 1, NOW + dt.timedelta(minutes=5)),
])
def test_each_outcome_has_one_meaning(error: Exception, scope: Scope, exit_code: int,
                                      again: dt.datetime) -> None:
    meaning = outcomes.of(error)
    assert (meaning.scope, meaning.exit_code) == (scope, exit_code)
    assert outcomes.retry_at(error, NOW, BRUSSELS) == again


@pytest.mark.parametrize(("error", "again"), [
    # Believed within the next API day (+ 15 min) for a 1003, 30 (+ 15) min for a 1004.
    (Limit("x", 1003, until=NOW + dt.timedelta(hours=3)), NOW + dt.timedelta(hours=3)),
    (Limit("x", 1003, until=dt.datetime(9999, 12, 31, 23, 59, tzinfo=BRUSSELS)),
     dt.datetime(2026, 10, 28, 0, 15, tzinfo=BRUSSELS)),
    (Limit("x", 1003, until=NOW - dt.timedelta(hours=1)), dt.datetime(2026, 10, 28, tzinfo=BRUSSELS)),
    (Blocked("x", 1004, until=dt.datetime(9999, 12, 31, 23, 59, tzinfo=BRUSSELS)),
     NOW + dt.timedelta(minutes=45)),
    (Blocked("x", 1004, until=NOW - dt.timedelta(minutes=5)), NOW + dt.timedelta(minutes=30)),
    (Blocked("x", 1004, until=NOW), NOW + dt.timedelta(minutes=30)),
])
def test_a_time_the_api_gives_is_believed_up_to_a_cap(error: Exception, again: dt.datetime) -> None:
    assert outcomes.retry_at(error, NOW, BRUSSELS) == again


def test_the_ledger_reads_the_same_table_by_errorcode() -> None:
    assert outcomes.of_answer("api_error", 1002).kept is Kept.CREDENTIALS
    assert outcomes.of_answer("api_error", 1003).kept is Kept.BLOCKED
    assert outcomes.of_answer("empty", 2000).kept is Kept.CLEARS_CREDENTIALS
    assert outcomes.of_answer("failed", None) is outcomes.FAILED
    assert outcomes.of_answer("api_error", 4242) is outcomes.FAILED
    proving = {code for code in (*API_ERRORS, 4242) if outcomes.of_answer("api_error", code).proves_login}
    assert proving == {1005, 2000, 2001, 2002, 2003}  # answers only a good login gets
    assert outcomes.BAD_LOGIN_CODES == (1001, 1002)


class _NestedJson(http.server.BaseHTTPRequestHandler):
    """A careless vendor: every answer is JSON nested 100,000 deep (RecursionError)."""

    def do_GET(self) -> None:
        body = b"[" * 100_000 + b"]" * 100_000
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_unexpected_error_is_a_stored_failure_the_planner_paces(db_url: str, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NestedJson)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = cli_env(db_url, f"http://127.0.0.1:{server.server_address[1]}/api/")
    try:
        backfill = run_cli(["backfill", "--resource", "products"], env, cwd=tmp_path)
        assert backfill.exit_code == 1, backfill.output
        assert "RecursionError" in backfill.output and "Traceback" not in backfill.output
        started = utcnow()
        ran = run_cli(["run", "--once"], env, cwd=tmp_path)
        assert ran.exit_code == 1, ran.output
        status = json.loads(run_cli(["status", "--json"], env, cwd=tmp_path).output)
    finally:
        server.shutdown()
        server.server_close()
    jobs = {j["resource"]: j for lic in status["licenses"] for j in lic["resources"]}
    assert "RecursionError" in jobs["products"]["last_error"]
    engine = make_engine(db_url)
    with engine.connect() as conn:
        states = conn.execute(select(t.sync_state.c.resource, t.sync_state.c.next_run_at,
                                     t.sync_state.c.last_error)).all()
    engine.dispose()
    failed = [s for s in states if s.last_error and "RecursionError" in s.last_error]
    assert failed, states
    # Planned (never sooner than the outcome's 5 minutes), not left due for a retry behind
    # the planner's back.
    for state in failed:
        assert state.next_run_at >= started + dt.timedelta(minutes=5), state
