"""Row 7: a hostile CloudPOS with random answers (tests/hostile.py), the real CLI against it.

Each case draws which of a backfill's requests get a bad answer and which: another
envelope (valid or not), a record whose id lies outside the window asked for, an API
errorcode with an odd "next request possible" time, a wrong HTTP status, a cut body,
another encoding, a body made large, a delay past the timeout, a body that echoes the
token. A backfill runs against it; then the fake behaves and a second backfill runs.
After each case the rules hold:

- no exception escapes the command (a traceback), and its exit code is one the
  outcomes table gives (0, 1 or 3);
- the budget is never passed: the fake saw no more requests than the ledger holds, and
  the ledger holds no more than the day's budget;
- a stop is never kept past its cap: a 1003 until at most the next API day (plus a
  margin), a 1004 at most the documented 30 minutes (plus a margin);
- once the fake behaves (and the stop it caused is over: the test moves past it as a
  new API day would, clearing `blocked_until` and the day's budget row), nothing the
  clean reference holds is missing (a record kept in the quarantine with its reason is
  not missing: `audit` shows it), no live row of it is marked deleted, and every row
  equals the reference's (unless a fault sent records of its own);
- no token anywhere (the autouse `leaks` guard reads every output and log record).

The default run is short (a few cases per database); `--slow` runs many more.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from syncer import tables as t
from syncer.client import CloudPosClient
from syncer.db import make_engine
from syncer.ledger import utcnow
from syncer.resources import RESOURCES
from syncer.resume import BackfillProgress
from syncer.simulator import Simulator
from tests.conftest import SUITE_DATABASES, TOKEN, database
from tests.helpers import cli_env, dump, ledger_count, run_cli
from tests.hostile import Answer, api_error, hostile, with_extra_id
from tests.reliability.conftest import Dump, Figures, compare

TZ = ZoneInfo("Europe/Brussels")
TIMEOUT = 1.0  # seconds; a delay past it is a timeout
CONFIG = f"[api]\ntimeout_seconds = {TIMEOUT}\nmax_attempts = 2\n"
BUDGET = 500  # the config's default daily budget
# How far past its documented end a stop may reach: the API's clock may be a little off.
DAILY_LIMIT_MARGIN = dt.timedelta(hours=2)
IP_BLOCK_CAP = dt.timedelta(minutes=30) + dt.timedelta(minutes=30)
FAST_CASES = 3  # per database, in the default run
SLOW_CASES = 50  # per database, with --slow
FIRST_REQUESTS = 30  # faults land on the first this many requests of a backfill
HUGE_ERRORCODE = b'{"errorcode": 1e400, "message": "?"}'

_cases = itertools.count()


# --- the answers ----------------------------------------------------------------------------

Fault = Callable[[str, dict[str, str], bytes], "bytes | Answer | None"]


def _data(body: bytes) -> Any:
    try:
        return json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None


def _envelope(kind: str) -> Fault:
    def answer(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        records = _data(body)
        if not isinstance(records, list):
            return None
        shapes: dict[str, Any] = {
            "list": records,  # accepted envelopes: the same records
            "named": {function.removeprefix("get-"): records},
            "data-null": {"data": None},  # not a list of records: a bad answer
            "data-text": {"data": ""},
            "unknown": {"rows": records, "success": True},
            "nested-deep": {"data": [{"id": 1, "x": json.loads("[" * 500 + "]" * 500)}]},
        }
        return json.dumps(shapes[kind]).encode()
    return answer


def _stray(new_id: int) -> Fault:
    def answer(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return with_extra_id(body, new_id) if "start" in params else None
    return answer


def _next_request_time(kind: str) -> str:
    now = utcnow().astimezone(TZ)
    moments = {
        "past": now - dt.timedelta(hours=3),
        "soon": now + dt.timedelta(minutes=5),
        "tomorrow": (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0),
        "far": dt.datetime(9999, 12, 31, 23, 59, 59),
        "dst": dt.datetime(2026, 10, 25, 2, 35, 0),  # the autumn night's hour that comes twice
    }
    if kind == "garbled":
        return "2026-13-45 25:61:00"
    return f"{moments[kind]:%Y-%m-%d %H:%M:%S}"


def _errorcode(code: int, when: str) -> Fault:
    words = {1003: "Daily limit reached, next request possible '{}'",
             1004: "Too many failed logins, next request possible '{}'",
             2000: "Nothing found", 2001: "Invalid input", 9999: "Unknown error"}

    def answer(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        if code == 2000 and "start" in params:
            # "Nothing found" for an id window is the API's word that those ids do not
            # exist: the walk steps over them by contract (`audit` lists ids it never
            # stored), so a false one is no fault the syncer can tell. Sent to the lists.
            return None
        return api_error(code, words[code].format(_next_request_time(when)))
    return answer


def _raw(payload: bytes, status: int = 200, delay: float = 0.0) -> Fault:
    def answer(function: str, params: dict[str, str], body: bytes) -> Answer:
        return Answer(payload or body, status=status, delay=delay)
    return answer


def _transform(kind: str) -> Fault:
    def answer(function: str, params: dict[str, str], body: bytes) -> bytes | Answer:
        if kind == "truncated":
            return body[: len(body) // 2]
        if kind == "latin-1":  # names like "rosé" in Latin-1: not UTF-8
            return body.decode("utf-8").encode("latin-1", errors="replace")
        if kind == "utf-16":
            return body.decode("utf-8").encode("utf-16")
        if kind == "bom":
            return b"\xef\xbb\xbf" + body
        if kind == "large" and body.startswith(b"{"):
            return body[:-1] + b', "padding": "' + b" " * 2_000_000 + b'"}'
        if kind == "html":
            return Answer(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        return body
    return answer


def _delay(seconds: float) -> Fault:
    def answer(function: str, params: dict[str, str], body: bytes) -> Answer:
        return Answer(body, delay=seconds)
    return answer


def _echo_token(kind: str) -> Fault:
    def answer(function: str, params: dict[str, str], body: bytes) -> bytes | Answer:
        if kind == "4xx":
            return Answer(f"bad request: licname=demo&token={TOKEN}&{function}".encode(), status=400)
        return api_error(9999, f"unknown token {TOKEN[:12]}{TOKEN[12:]}, try again")
    return answer


@dataclass(frozen=True)
class Drawn:
    name: str
    fault: Fault
    # Sends a record of its own in place of the real ones: a record the parser takes is
    # stored as the API said, and an id window is not asked again, so its values may
    # differ from the reference's afterwards (its key is still there).
    fabricates: bool = False

    def __repr__(self) -> str:
        return self.name


def _named(name: str, fault: Fault) -> Drawn:
    return Drawn(name, fault, fabricates=name == "envelope nested-deep")


# "far" is 9999-12-31 23:59:59: the stop is capped at the next API day or 30 minutes.
ODD_TIMES = ["past", "soon", "tomorrow", "dst", "garbled", "far"]

FAULTS = st.one_of(
    st.sampled_from(["list", "named", "data-null", "data-text", "unknown", "nested-deep"]).map(
        lambda kind: _named(f"envelope {kind}", _envelope(kind))),
    st.sampled_from([2_000_000, 10**12, 2**63 - 1, 2**64, -5, 0]).map(
        lambda new_id: _named(f"stray id {new_id}", _stray(new_id))),
    st.tuples(st.sampled_from([1003, 1004]), st.sampled_from(ODD_TIMES)).map(
        lambda c: _named(f"errorcode {c[0]} at {c[1]}", _errorcode(*c))),
    st.sampled_from([2000, 2001, 9999]).map(
        lambda code: _named(f"errorcode {code}", _errorcode(code, "past"))),
    st.just(_named("errorcode 1e400", _raw(HUGE_ERRORCODE))),
    st.sampled_from([500, 502, 201, 204, 302, 404]).map(
        lambda status: _named(f"HTTP {status}", _raw(b"", status=status))),
    st.sampled_from(["truncated", "latin-1", "utf-16", "bom", "large", "html"]).map(
        lambda kind: _named(f"body {kind}", _transform(kind))),
    st.sampled_from([0.2, TIMEOUT * 1.5]).map(
        lambda seconds: _named(f"delay {seconds} s", _delay(seconds))),
    st.sampled_from(["4xx", "message"]).map(lambda kind: _named(f"token echoed ({kind})",
                                                                _echo_token(kind))),
)
SCHEDULES = st.dictionaries(st.integers(0, FIRST_REQUESTS - 1), FAULTS, min_size=1, max_size=4)


class Schedule:
    """The fake's answers: the n-th request of the hostile run gets fault n, if drawn."""

    def __init__(self, faults: dict[int, Drawn]) -> None:
        self.faults = faults
        self.behaving = False
        self.count = 0
        self.served: list[str] = []
        self.fabricated = False
        self.lock = threading.Lock()

    def __call__(self, function: str, params: dict[str, str], body: bytes) -> bytes | Answer | None:
        with self.lock:
            number, self.count = self.count, self.count + 1
        drawn = None if self.behaving else self.faults.get(number)
        if drawn is None:
            return None
        self.served.append(drawn.name)
        self.fabricated |= drawn.fabricates
        return drawn.fault(function, params, body)


# --- the rules ------------------------------------------------------------------------------


def live_keys(url: str) -> tuple[dict[str, set[tuple[Any, ...]]], set[str]]:
    """Per synced table, the primary keys of its rows not marked deleted, with the keys a
    quarantined record stands for (its own and its children's): a record the API sent
    in a shape the parser refused is kept with its reason, and `audit` shows it; that is
    not a silent loss. And the tables where such a key stands in for a row."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            held = {(resource, key) for resource, key in conn.execute(
                select(t.quarantine.c.resource, t.quarantine.c.record_key))}
            out, excused = {}, set()
            for resource in RESOURCES:
                for table in resource.tables:
                    query = select(*table.primary_key.columns)
                    if "deleted_at" in table.c:
                        query = query.where(table.c.deleted_at.is_(None))
                    rows = {tuple(row) for row in conn.execute(query)}
                    stand_in = {key for key in REFERENCE_KEYS.get(table.name, ())
                                if (resource.name, str(key[1])) in held} - rows
                    out[table.name] = rows | stand_in
                    if stand_in:
                        excused.add(table.name)
            return out, excused
    finally:
        engine.dispose()


def pending_ledger_rows(url: str) -> int:
    """Ledger rows still `pending` after the command ended: a request it never settled."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.request_ledger)
                                    .where(t.request_ledger.c.outcome == "pending")).scalar_one())
    finally:
        engine.dispose()


def stop_within_cap(url: str, now: dt.datetime, served: list[str]) -> None:
    """A stored stop reaches no further than the cap of the error that caused it."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            blocked = conn.execute(select(t.license_state.c.blocked_until)).scalars().all()
    finally:
        engine.dispose()
    local = now.astimezone(TZ)
    next_day = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), TZ)
    cap = max(next_day + DAILY_LIMIT_MARGIN, now + IP_BLOCK_CAP)
    for until in blocked:
        if until is not None:
            assert until <= cap, f"stop until {until} after {served}: past its cap {cap}"


def as_a_new_day(url: str) -> None:
    """Move past the stops and the spent day a hostile answer caused, as time would; and
    past the day of an unfinished backfill's resume point: a rerun on its API day trusts
    the full lists it stored that day (a "nothing found" among them), another day asks
    them afresh (`resume.BackfillProgress`)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(update(t.license_state).values(blocked_until=None, blocked_reason=None))
            conn.execute(delete(t.request_budget))
            conn.execute(delete(t.resume_point).where(
                t.resume_point.c.task == BackfillProgress.TASK))
    finally:
        engine.dispose()


def spent(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(t.request_budget.c.spent), 0)))
                       .scalar_one())
    finally:
        engine.dispose()


@contextmanager
def fresh_database(kind: str) -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="hostile-api-") as directory:
        cwd = Path(directory)
        (cwd / "syncer.toml").write_text(CONFIG)
        with database(kind, cwd) as url:
            yield url, cwd


def run_case(kind: str, sim: Simulator, reference: Dump, figures: Figures,
             faults: dict[int, Drawn]) -> None:
    schedule = Schedule(faults)
    with fresh_database(kind) as (url, cwd), hostile(sim.base_url, schedule) as server:
        env = cli_env(url, server.base_url)
        now = utcnow()
        first = run_cli(["backfill"], env, cwd=cwd)
        assert first.exit_code in (0, 1, 3), (schedule.served, first.output)
        engine = make_engine(url)
        try:
            ledger = ledger_count(engine)
        finally:
            engine.dispose()
        assert len(server.seen) <= ledger <= BUDGET, (schedule.served, len(server.seen), ledger)
        assert spent(url) <= BUDGET
        assert pending_ledger_rows(url) == 0, schedule.served
        stop_within_cap(url, now, schedule.served)

        as_a_new_day(url)
        schedule.behaving = True
        second = run_cli(["backfill"], env, cwd=cwd)
        assert second.exit_code == 0, (schedule.served, second.output)
        stored, excused = live_keys(url)
        missing = {name: sorted(keys - stored[name])[:5]
                   for name, keys in REFERENCE_KEYS.items() if keys - stored[name]}
        assert not missing, (schedule.served, missing)
        engine = make_engine(url)
        try:
            # Every other row equal to the reference's, value for value (unless a fault
            # sent records of its own: see `Drawn.fabricates`).
            lost, doubled = compare(dump(engine), reference,
                                    [name for name in reference if name not in excused])
            ledger = ledger_count(engine)
        finally:
            engine.dispose()
        assert lost == 0 or schedule.fabricated, (schedule.served, lost)
        lost = sum(len(keys - stored[name]) for name, keys in REFERENCE_KEYS.items())
        figures.add("7 hostile API", inputs=1, faults=len(schedule.served),
                    sim_requests=len(server.seen), ledger_requests=ledger, rows_lost=lost,
                    rows_doubled=0 if schedule.fabricated else doubled)


REFERENCE_KEYS: dict[str, set[tuple[Any, ...]]] = {}


@pytest.fixture(scope="module")
def reference_keys(shared_sim: Simulator, reference: Dump,
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[tuple[Any, ...]]]:
    """The live keys of a clean backfill from the same simulator."""
    directory = tmp_path_factory.mktemp("hostile-api-reference")
    url = f"sqlite:///{directory}/reference.db"
    assert run_cli(["backfill"], cli_env(url, shared_sim.base_url), cwd=directory).exit_code == 0
    REFERENCE_KEYS.clear()
    REFERENCE_KEYS.update(live_keys(url)[0])
    return REFERENCE_KEYS


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without their pauses: the cases test what is retried, not how long it waits."""
    monkeypatch.setattr(CloudPosClient, "_pause", lambda self, seconds: None)


def _property(kind: str, sim: Simulator, reference: Dump, figures: Figures,
              cases: int) -> None:
    """`cases` random schedules against `kind`; the first that breaks a rule is reported
    as drawn (not shrunk: each case is two backfills, and shrinking would take minutes)."""

    # The same draws every run (tests/conftest.py's profile); a case that breaks a rule
    # is kept as a test of its own below.
    @settings(max_examples=cases, deadline=None,
              phases=[Phase.explicit, Phase.reuse, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(faults=SCHEDULES)
    def check(faults: dict[int, Drawn]) -> None:
        run_case(kind, sim, reference, figures, faults)

    check()


@pytest.mark.parametrize("kind", SUITE_DATABASES)
def test_random_hostile_answers_keep_the_rules(kind: str, quiet_sim: Simulator, reference: Dump,
                                               reference_keys: dict[str, set[tuple[Any, ...]]],
                                               figures: Figures, no_backoff: None) -> None:
    _property(kind, quiet_sim, reference, figures, FAST_CASES)


@pytest.mark.slow
@pytest.mark.parametrize("kind", SUITE_DATABASES)
def test_many_random_hostile_answers_keep_the_rules(
        kind: str, quiet_sim: Simulator, reference: Dump,
        reference_keys: dict[str, set[tuple[Any, ...]]], figures: Figures, no_backoff: None) -> None:
    _property(kind, quiet_sim, reference, figures, SLOW_CASES)


@pytest.mark.parametrize("code", [1003, 1004])
def test_a_stop_far_in_the_future_is_kept_within_its_cap(
        code: int, quiet_sim: Simulator, reference: Dump,
        reference_keys: dict[str, set[tuple[Any, ...]]], figures: Figures, no_backoff: None) -> None:
    run_case("sqlite", quiet_sim, reference, figures,
             {0: Drawn(f"errorcode {code} at far", _errorcode(code, "far"))})


def test_an_errorcode_of_1e400_settles_its_ledger_row(
        quiet_sim: Simulator, reference: Dump, reference_keys: dict[str, set[tuple[Any, ...]]],
        figures: Figures, no_backoff: None) -> None:
    run_case("sqlite", quiet_sim, reference, figures,
             {0: Drawn("errorcode 1e400", _raw(HUGE_ERRORCODE))})


def test_nothing_found_for_a_full_list_then_an_api_error_loses_no_credit(
        quiet_sim: Simulator, reference: Dump, reference_keys: dict[str, set[tuple[Any, ...]]],
        figures: Figures, no_backoff: None) -> None:
    """Found by the property suite: the customer credits' list answered "nothing found"
    (2000), then an id window an API error, so the backfill ended unfinished and kept its
    resume point. The next day's backfill asks the list again and stores every credit
    (the case once failed because its "next day" kept the resume point's day)."""
    run_case("sqlite", quiet_sim, reference, figures,
             {9: _named("errorcode 2000", _errorcode(2000, "past")),
              15: _named("token echoed (message)", _echo_token("message"))})
