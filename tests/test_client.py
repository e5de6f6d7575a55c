"""The client over real HTTP against the simulator: functions, envelopes, errors, faults, secrets."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import threading
import time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncer.client import (
    AnswerTooLarge,
    AuthRejected,
    BadResponse,
    Cancelled,
    CloudPosClient,
    DailyLimitReached,
    EmptyCredentials,
    InputRejected,
    InvalidCredentials,
    IpBlocked,
    ModuleNotLicensed,
    OpenDoor,
    Outcome,
    RequestInfo,
    RequestRefused,
    ResponseTimeout,
    ServerError,
    TransportFailed,
    UnknownApiError,
    parse_api_datetime,
    raise_for_api_error,
    records_from,
)
from syncer.resources import RESOURCES
from syncer.simulator import Simulator
from tests.conftest import LICENSE, TOKEN
from tests.hostile import Answer, gzip_bomb, hostile

BRUSSELS = ZoneInfo("Europe/Brussels")
LIST_FUNCTIONS = [resource.function for resource in RESOURCES]


class CountingDoor:
    """Records what the door saw; refuses after `limit` requests when given one."""

    def __init__(self, limit: int | None = None) -> None:
        self.seen: list[RequestInfo] = []
        self.outcomes: list[Outcome] = []
        self.limit = limit

    def before_send(self, info: RequestInfo) -> object:
        if self.limit is not None and len(self.seen) >= self.limit:
            raise RequestRefused("limit")
        self.seen.append(info)
        return len(self.seen)

    def after_response(self, ticket: object, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def record_key(record: dict[str, Any]) -> str:
    if "customerid" in record and "id" not in record:  # customer credits
        return f"{record['customerid']}/{record.get('tagid')}"
    return str(record["id"])


def make_client(sim: Simulator, token: str = TOKEN, **kwargs: Any) -> CloudPosClient:
    kwargs.setdefault("sleep", lambda _s: None)
    kwargs.setdefault("door", OpenDoor())
    return CloudPosClient(sim.base_url, LICENSE, token, tz=BRUSSELS, **kwargs)


def requests_seen(sim: Simulator) -> int:
    return int(sim.stats()["requests"])


# --- functions and envelopes ---------------------------------------------------


@pytest.mark.parametrize("style", ["list", "data", "named", "keyed"])
def test_every_list_function_in_every_envelope(sim: Simulator, style: str) -> None:
    sim.set_envelope("data")
    with make_client(sim) as client:
        reference = {fn: client.fetch(fn).records for fn in LIST_FUNCTIONS}
    sim.set_envelope(style)
    with make_client(sim) as client:
        for fn in LIST_FUNCTIONS:
            records = client.fetch(fn).records
            assert records, fn
            assert all(isinstance(r, dict) for r in records), fn
            assert sorted(map(record_key, records)) == sorted(map(record_key, reference[fn])), fn


def test_every_function_answers_through_the_one_generic_call(sim: Simulator) -> None:
    with make_client(sim) as client:
        for resource in RESOURCES:
            assert client.fetch(resource.function).records, resource.function
        window = client.fetch("get-orders", {"start": 1, "end": 50}).records
        assert window and all(1 <= int(o["id"]) <= 50 for o in window)
        day = str(window[0]["ordertime"])[:10]
        by_date = client.fetch("get-orders", {"date": day}).records
        assert by_date and all(str(o["ordertime"]).startswith(day) for o in by_date)
        labour = client.fetch("get-orders", {"clockinclockout": None}).records
        assert all(not o.get("orderdetail") for o in labour)
        customer = int(client.fetch("get-customercredits").records[0]["customerid"])
        detail = client.fetch("get-customercredits", {"customerid": customer}).records
        assert all(int(d["customerid"]) == customer for d in detail)
        # Functions taking input answer one object (what `syncer call` prints).
        persons = client.request("get-reservationpersons", {"date": "2026-12-01"}).body
        assert isinstance(persons["persons"], list)
        hours = client.request("get-reservationhours", {"date": "2026-12-01", "persons": 4}).body
        assert isinstance(hours["hours"], list)
        with pytest.raises(InputRejected) as empty_id:
            client.request("get-confirmedweborder", {"weborderid": ""})
        assert empty_id.value.code == 2002
        with pytest.raises(InputRejected) as unknown:
            client.request("get-confirmedweborder", {"weborderid": "999999"})
        assert unknown.value.code == 2003
        with pytest.raises(InputRejected) as empty_doc:
            client.request("get-invoicesigned", {"documentnr": ""})
        assert empty_doc.value.code == 2001
        with pytest.raises(InputRejected):
            client.request("get-reservationhours", {"date": "2026-12-01", "persons": ""})
        assert client.request("get-offersigned", {"documentnr": "NO-SUCH-DOC"}).empty


def test_id_windows_are_inclusive_and_2000_is_an_empty_list(sim: Simulator) -> None:
    with make_client(sim) as client:
        ids = sorted(int(o["id"]) for o in client.fetch("get-orders", {"start": 1, "end": 10_000}).records)
        first, last = ids[0], ids[-1]
        exact = client.fetch("get-orders", {"start": first, "end": first}).records
        assert [int(o["id"]) for o in exact] == [first]
        page = client.fetch("get-orders", {"start": last + 1, "end": last + 500})
        assert page.empty and page.records == []


def test_numbers_as_strings_stay_exact(sim: Simulator) -> None:
    with make_client(sim) as client:
        products = client.fetch("get-products").records
    prices = [p["price"] for p in products]
    # Whatever form the API chose, no binary float ever appears.
    assert all(not isinstance(p, float) for p in prices)
    assert any(isinstance(p, str) for p in prices)


# --- errors ---------------------------------------------------------------------


def test_empty_token_sends_nothing(sim: Simulator) -> None:
    door = CountingDoor()
    with make_client(sim, token="", door=door) as client, pytest.raises(EmptyCredentials):
        client.fetch("get-products")
    with make_client(sim, token="   ", door=door) as client, pytest.raises(EmptyCredentials):
        client.fetch("get-products")
    assert requests_seen(sim) == 0
    assert door.seen == []


def test_bad_token_raises_auth_rejected_after_one_request(sim: Simulator) -> None:
    with make_client(sim, token="wrong-token-123") as client, pytest.raises(AuthRejected) as err:
        client.fetch("get-products")
    assert isinstance(err.value, InvalidCredentials) and err.value.code == 1002
    assert requests_seen(sim) == 1  # 1002 is never retried


def test_daily_limit_gives_retry_time(sim: Simulator) -> None:
    clock = dt.datetime(2026, 10, 27, 15, 0, tzinfo=BRUSSELS)
    sim.set_clock(lambda: clock)
    sim.set_daily_limit(2)
    with make_client(sim) as client:
        client.fetch("get-printers")
        client.fetch("get-printers")
        with pytest.raises(DailyLimitReached) as err:
            client.fetch("get-printers")
    assert err.value.retry_at == dt.datetime(2026, 10, 28, 0, 0, tzinfo=BRUSSELS)
    assert err.value.retry_at.utcoffset() is not None
    assert requests_seen(sim) == 3


def test_ip_block_after_five_bad_logins(sim: Simulator) -> None:
    clock = dt.datetime(2026, 10, 27, 15, 0, tzinfo=BRUSSELS)
    sim.set_clock(lambda: clock)
    with make_client(sim, token="wrong-token-123") as client:
        for _ in range(5):
            with pytest.raises(InvalidCredentials):
                client.fetch("get-printers")
    with make_client(sim) as client, pytest.raises(IpBlocked) as err:
        client.fetch("get-printers")
    assert err.value.until == dt.datetime(2026, 10, 27, 15, 30, tzinfo=BRUSSELS)


def test_module_not_licensed(sim: Simulator) -> None:
    sim.unlicense("get-giftvoucher")
    with make_client(sim) as client, pytest.raises(ModuleNotLicensed):
        client.fetch("get-giftvoucher")
    with make_client(sim) as client:
        assert client.fetch("get-printers").records


def test_api_error_bodies_map_to_types() -> None:
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"errorcode": 1001, "message": "Token and name can not be empty"}, EmptyCredentials),
        ({"errorcode": "1002", "error": "Token or name not valid"}, InvalidCredentials),
        ({"errorcode": 1005}, ModuleNotLicensed),
        ({"errorcode": 2003, "message": "weborderid does not exist"}, InputRejected),
        ({"errorcode": 4242}, UnknownApiError),
        ({"errorcode": "x"}, BadResponse),
    ]
    for body, kind in cases:
        with pytest.raises(kind):
            raise_for_api_error(body, "get-x", BRUSSELS)
    assert raise_for_api_error({"errorcode": 2000}, "get-x", BRUSSELS) is True
    with pytest.raises(IpBlocked) as blocked:
        raise_for_api_error({"errorcode": 1004, "message":
                             "5 bad logins reached, your ip adress is blocked till '2026-03-29 02:30:00'"},
                            "get-x", BRUSSELS)
    assert blocked.value.until is not None and blocked.value.until.tzinfo is BRUSSELS


def test_envelope_shapes_without_a_server() -> None:
    assert records_from([{"id": 1}], "get-products") == [{"id": 1}]
    assert records_from({"success": 1, "data": [{"id": 1}]}, "get-products") == [{"id": 1}]
    assert records_from({"success": "1", "products": [{"id": 1}]}, "get-products") == [{"id": 1}]
    assert records_from({"success": 1, "7": {"name": "x"}}, "get-products") == [{"id": "7", "name": "x"}]
    assert records_from({"success": 1, "data": {"7": {"id": 7}}}, "get-products") == [{"id": 7}]
    assert records_from({"success": 1, "data": []}, "get-products") == []
    with pytest.raises(BadResponse):  # would otherwise read as "everything was deleted"
        records_from({"success": 1}, "get-products")
    with pytest.raises(BadResponse):
        records_from({"success": 1, "count": 5}, "get-products")
    with pytest.raises(BadResponse):
        records_from({"success": 1, "a": 1, "b": 2}, "get-products")


# --- faults and retries -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["5xx", "html", "truncated", "reset", "hang"])
def test_fault_is_retried_once_and_heals(sim: Simulator, kind: str) -> None:
    sim.inject_fault(kind, count=1)
    door = CountingDoor()
    # A short timeout only where it is the fault: a loaded machine may answer slowly.
    with make_client(sim, door=door, timeout=0.5 if kind == "hang" else 5) as client:
        assert client.fetch("get-printers").records
    assert requests_seen(sim) == 2
    assert [i.attempt for i in door.seen] == [1, 2]
    assert door.outcomes[0].outcome == "failed" and door.outcomes[1].outcome == "ok"


def test_slow_answer_within_timeout_is_not_retried(sim: Simulator) -> None:
    sim.inject_fault("slow", count=1, delay=0.3)
    with make_client(sim, timeout=5) as client:
        assert client.fetch("get-printers").records
    assert requests_seen(sim) == 1


@pytest.mark.parametrize(("kind", "error"), [("5xx", ServerError), ("html", BadResponse),
                                             ("truncated", BadResponse), ("reset", TransportFailed),
                                             ("hang", ResponseTimeout)])
def test_retry_bound_counts_every_attempt(sim: Simulator, kind: str, error: type[Exception]) -> None:
    sim.inject_fault(kind, count=10)
    door = CountingDoor()
    timeout = 0.3 if kind == "hang" else 5
    with make_client(sim, door=door, max_attempts=3, timeout=timeout) as client, pytest.raises(error):
        client.fetch("get-printers")
    assert requests_seen(sim) == 3
    assert len(door.seen) == 3


def test_closing_the_client_ends_a_retry_wait_and_sends_nothing_more(sim: Simulator) -> None:
    """A stopping daemon closes its clients: a job waiting out a backoff ends at once."""
    sim.inject_fault("5xx", count=10)
    closed_at: list[float] = []

    class ClosingDoor(CountingDoor):
        """Closes the client 0.1 s after the first answer: during the backoff wait."""

        def after_response(self, ticket: object, outcome: Outcome) -> None:
            super().after_response(ticket, outcome)
            if len(self.outcomes) == 1:
                def close() -> None:
                    closed_at.append(time.monotonic())
                    client.close()
                threading.Timer(0.1, close).start()

    door = ClosingDoor()
    client = CloudPosClient(sim.base_url, LICENSE, TOKEN, tz=BRUSSELS, door=door,
                            max_attempts=5, backoff_max=30.0)  # the real, interruptible wait
    with pytest.raises(Cancelled, match="not sent"):
        client.fetch("get-printers")
    assert time.monotonic() - closed_at[0] < 1  # the 0.5 s + 1 s backoff was cut short
    assert requests_seen(sim) == len(door.seen) == 1  # nothing after close passed the door
    with pytest.raises(Cancelled):
        client.fetch("get-printers")
    assert len(door.seen) == requests_seen(sim)


def test_api_errors_are_not_retried(sim: Simulator) -> None:
    sim.unlicense("get-printers")
    with make_client(sim, max_attempts=5) as client, pytest.raises(ModuleNotLicensed):
        client.fetch("get-printers")
    assert requests_seen(sim) == 1


def test_door_sees_every_attempt_before_it_is_sent(sim: Simulator) -> None:
    door = CountingDoor(limit=1)
    sim.inject_fault("5xx", count=1)
    with make_client(sim, door=door) as client, pytest.raises(RequestRefused):
        client.fetch("get-printers")
    # The first attempt went out and failed; the door refused the retry: it never left.
    assert requests_seen(sim) == 1
    assert door.seen[0].params == {} and door.seen[0].function == "get-printers"


def test_door_params_never_hold_the_token(sim: Simulator) -> None:
    door = CountingDoor()
    with make_client(sim, door=door) as client:
        client.fetch("get-orders", {"start": 1, "end": 5})
    assert door.seen[0].params == {"start": "1", "end": "5"}
    assert TOKEN not in repr(door.seen) and TOKEN not in repr(client)


# --- secrets ---------------------------------------------------------------------


def test_no_token_in_debug_logs_or_errors(sim: Simulator, debug_logs: pytest.LogCaptureFixture) -> None:
    texts: list[str] = []
    with make_client(sim, timeout=5) as client:
        for fn in LIST_FUNCTIONS:
            client.fetch(fn)
        inputs: list[tuple[str, dict[str, str | int | None]]] = [
            ("get-confirmedweborder", {"weborderid": ""}), ("get-invoicesigned", {"documentnr": ""}),
            ("get-reservationhours", {"date": "2026-12-01", "persons": 2})]
        for function, params in inputs:
            try:
                client.request(function, params)
            except Exception as exc:
                texts.append(str(exc))
                texts.append(repr(exc))
        failed: list[str] = []
        for kind in ("5xx", "html", "truncated", "reset", "hang"):
            sim.clear_faults()
            sim.inject_fault(kind, count=5)
            try:
                if kind == "hang":
                    with make_client(sim, timeout=0.3) as hung:
                        hung.fetch("get-printers")
                else:
                    client.fetch("get-printers")
            except Exception as exc:
                failed.append(type(exc).__name__)
                texts.append(str(exc))
                texts.append(repr(exc))
                texts.append(repr(exc.__cause__) + repr(exc.__context__))
        texts.append(repr(client))
    assert failed == ["ServerError", "BadResponse", "BadResponse", "TransportFailed",
                      "ResponseTimeout"]
    sim.clear_faults()
    with make_client(sim, token=TOKEN + "-bad") as bad:
        try:
            bad.fetch("get-printers")
        except Exception as exc:
            texts.append(str(exc))
    logged = [r.getMessage() for r in debug_logs.records] + [debug_logs.text]
    assert any("get-orders" in line for line in logged), "DEBUG logging captured nothing"
    assert any("HTTP Request" in line for line in logged), "httpx's own URL logging was not captured"
    for text in texts + logged:
        assert TOKEN not in text
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)


def test_the_client_as_a_library_keeps_the_token_out_of_httpx_debug_logs(sim: Simulator) -> None:
    """A fresh interpreter (no CLI, no test hooks) that logs httpx and httpcore at DEBUG."""
    script = (
        "import logging, sys\n"
        "from syncer.client import CloudPosClient, OpenDoor\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout)\n"
        "with CloudPosClient(sys.argv[1], sys.argv[2], sys.argv[3], door=OpenDoor()) as client:\n"
        "    print(len(client.fetch('get-printers').records), 'printers')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, sim.base_url, LICENSE, TOKEN],
                          capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "printers" in output and "httpx" in output  # it did log the request
    assert TOKEN not in output


def test_amounts_in_json_numbers_are_decimal(sim: Simulator) -> None:
    sim.set_envelope("list")
    with make_client(sim) as client:
        page = client.fetch("get-products")
    numbers = [v for r in page.records for v in r.values() if isinstance(v, (int, Decimal, float))]
    assert not any(isinstance(v, float) for v in numbers)


@pytest.mark.parametrize("where", ["headers", "body"])
def test_the_timeout_bounds_the_whole_request(sim: Simulator, where: str) -> None:
    """Each byte comes well within the 1 s timeout, yet the attempt ends at 1 s: the
    timeout is the whole request's, not each read's."""
    drip = {"headers": Answer(b"{}", drip_head=0.1),
            "body": Answer(b'{"data": []}' + b" " * 100, drip=0.1)}[where]
    with hostile(sim.base_url, lambda *_: drip) as server:
        client = CloudPosClient(server.base_url, LICENSE, TOKEN, door=OpenDoor(), timeout=1,
                                max_attempts=1)
        started = time.monotonic()
        with pytest.raises(ResponseTimeout, match="within timeout_seconds = 1"):
            client.fetch("get-products")
        took = time.monotonic() - started
        client.close()
    assert 0.9 < took < 1.6


@pytest.mark.parametrize("kind", ["announced", "streamed", "gzip bomb"])
def test_an_answer_past_the_cap_is_refused_without_reading_it_whole(
        sim: Simulator, kind: str) -> None:
    cap = 256 * 1024
    answer = {"announced": Answer(b" " * 1024, repeat=4096),
              "streamed": Answer(b" " * 1024, repeat=4096, length=False),
              "gzip bomb": Answer(gzip_bomb(64 << 20), encoding="gzip")}[kind]
    seen: list[Outcome] = []

    class Door(OpenDoor):
        def after_response(self, ticket: object, outcome: Outcome) -> None:
            seen.append(outcome)

    with hostile(sim.base_url, lambda *_: answer) as server:
        client = CloudPosClient(server.base_url, LICENSE, TOKEN, door=Door(), max_attempts=2,
                                max_answer_bytes=cap, sleep=lambda _s: None)
        with pytest.raises(AnswerTooLarge, match=r"max_answer_mib = 0\.25") as caught:
            client.fetch("get-products")
        client.close()
    assert [o.outcome for o in seen] == ["failed", "failed"]  # retried once, then reported
    # An announced size is refused before the body; otherwise reading stops at the cap.
    said = "announces 4,194,304 bytes" if kind == "announced" else "more than 262,144 bytes"
    assert said in str(caught.value)


@pytest.mark.parametrize(("local", "utc"), [
    # The autumn night: 02:35 comes twice (CEST, then CET); the block lasts to the later.
    ("2026-10-25 02:35:00", dt.datetime(2026, 10, 25, 1, 35, tzinfo=dt.UTC)),
    # The spring gap: 02:30 never comes; read with the offset before the jump (the later).
    ("2026-03-29 02:30:00", dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)),
    ("2026-07-01 12:00", dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.UTC)),
    ("2026-02-30 10:00:00", None),  # no such day: unreadable, not a crash
])
def test_a_stop_time_the_api_gives_is_read_so_that_the_block_is_not_over_early(
        local: str, utc: dt.datetime | None) -> None:
    parsed = parse_api_datetime(f"your ip adress is blocked till '{local}'", BRUSSELS)
    # In UTC: a time of the repeated hour never equals one of another zone (PEP 495).
    assert (parsed and parsed.astimezone(dt.UTC)) == utc
    if parsed is not None:
        assert parsed.tzinfo is BRUSSELS
