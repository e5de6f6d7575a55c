"""The CloudPOS API simulator: an HTTP server that answers like cloudpos.be/api/.

It keeps the vendor's rules (a daily request limit per license, an IP block after
five bad logins, modules a license may lack), serves the envelope variants of
docs/api-reading.md, injects the faults a client must survive, and takes changes
through a control API (`/_control/...`) so tests in another process can drive it.
The token is never logged: the server writes no log at all.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hmac
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

from syncer.simulator.data import (
    RENDERERS,
    Dataset,
    IdIndex,
    format_local,
    generate,
    render_credit_top_up,
)

# List functions and the resource each one lists.
LIST_FUNCTIONS: dict[str, str] = {
    "get-categories": "categories",
    "get-products": "products",
    "get-subproducts": "subproducts",
    "get-customers": "customers",
    "get-users": "users",
    "get-tables": "pos_tables",
    "get-payment": "payment_methods",
    "get-printers": "printers",
    "get-orders": "orders",
    "get-invoices": "invoices",
    "get-giftvoucher": "gift_vouchers",
    "get-coupon": "coupons",
    "get-customercredits": "customer_credits",
}
# Signing functions and the document type (invoices.doc_type) each one signs.
SIGN_FUNCTIONS: dict[str, int] = {
    "get-invoicesigned": 1,
    "get-offersigned": 2,
    "get-creditnotesigned": 3,
}
FUNCTIONS: tuple[str, ...] = (
    *LIST_FUNCTIONS,
    "get-confirmedweborder",
    *SIGN_FUNCTIONS,
    "get-reservationpersons",
    "get-reservationhours",
)
NOT_FOUND: dict[str, str] = {
    "get-categories": "No categories found",
    "get-products": "No products found",
    "get-subproducts": "No subproducts found",
    "get-customers": "No customers found",
    "get-users": "No users found",
    "get-tables": "No tables found",
    "get-payment": "No payment found",
    "get-printers": "No printers found",
    "get-orders": "No orders found",
    "get-invoices": "No invoices found",
    "get-giftvoucher": "No vouchers found",
    "get-coupon": "No coupons found",
    "get-customercredits": "No customercredits found",
    "get-invoicesigned": "Document nr not found",
    "get-offersigned": "Document nr not found",
    "get-creditnotesigned": "Document nr not found",
    "get-reservationpersons": "No persons found",
    "get-reservationhours": "No hours found",
}
ENVELOPES = ("list", "data", "named", "keyed")
FAULTS = ("5xx", "html", "truncated", "slow", "hang", "reset")
API_PATHS = ("/api/", "/api", "/")
BAD_LOGINS_BEFORE_BLOCK = 5
BLOCK_DURATION = dt.timedelta(minutes=30)
HANG_SECONDS = 3600.0
# Rendered records kept as JSON text; many licenses asking the same windows hit it.
FRAGMENT_CACHE_SIZE = 20_000

MAINTENANCE_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>CloudPOS - onderhoud</title></head>\n"
    b"<body><h1>Onderhoud</h1><p>CloudPOS is momenteel in onderhoud. "
    b"Probeer het later opnieuw.</p></body></html>\n"
)


class LoggedRequest(NamedTuple):
    """One API request as the simulator saw it; `params` are the filters (no token)."""

    function: str | None
    params: dict[str, str]
    license: str | None
    errorcode: int | None


@dataclass(frozen=True)
class _Request:
    function: str | None
    params: dict[str, str]
    license: str
    token: str
    fault: tuple[str, float] | None


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    errorcode: int | None = None


class _BadRequest(ValueError):
    """A request the simulator refuses with HTTP 400 (not an API error)."""


def _json(value: Any) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8: sent as an escape, "\ud800"
        return json.dumps(value, separators=(",", ":")).encode()


def _api_error(code: int, message: str) -> _Response:
    return _Response(200, _json({"success": 0, "errorcode": code, "message": message}),
                     errorcode=code)


def _http_error(status: int, message: str) -> _Response:
    return _Response(status, _json({"error": message}))


class Simulator:
    """The simulated API: one data set shared by all licenses, served over HTTP."""

    def __init__(
        self,
        dataset: Dataset | None = None,
        *,
        licenses: dict[str, str] | None = None,
        daily_limit: int = 500,
        tz: str = "Europe/Brussels",
        clock: Callable[[], dt.datetime] | None = None,
        envelope: str = "data",
    ) -> None:
        self._tz = ZoneInfo(tz)
        self._clock: Callable[[], dt.datetime] = clock or self._real_clock
        self.dataset = dataset if dataset is not None else generate(
            anchor=self._now().date(), tz=tz, until=self._now())
        self._licenses = dict(licenses) if licenses is not None else {"demo": "demo-token"}
        self._daily_limit = daily_limit
        self._envelope = self._check_envelope(envelope)
        self._lock = threading.RLock()
        self._used: dict[str, tuple[dt.date, int]] = {}  # license -> (day, requests answered)
        self._bad_logins: dict[str, int] = {}  # ip -> bad logins since the last block ended
        self._blocked_until: dict[str, dt.datetime] = {}
        self._unlicensed: set[tuple[str, str]] = set()  # (license or "*", function)
        self._signed: dict[tuple[str, str], str] = {}  # (license, documentnr) -> vatticket
        self._faults: deque[tuple[str, float]] = deque()
        self._cache: dict[tuple[str, str], tuple[object, bytes]] = {}
        self._cache_lock = threading.Lock()
        self.request_log: list[LoggedRequest] = []
        self._stats = self._empty_stats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle ---------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; returns the base URL of the API."""
        if self._server is not None:
            return self.base_url
        self._stopping = threading.Event()
        server = _Server((host, port), _Handler)
        server.simulator = self
        self._server = server
        # A short poll interval: stop() waits for the loop to notice, tests stop often.
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                                        name="cloudpos-simulator", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; hanging and idle keep-alive connections are closed too."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # releases "hang" and "slow" faults
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def serve_forever(self, host: str = "127.0.0.1", port: int = 8080,
                      on_start: Callable[[str], None] | None = None) -> None:
        """Serve until KeyboardInterrupt (the `syncer simulate` command); `on_start`
        gets the base URL once listening (port 0 picks a free port)."""
        url = self.start(host, port)
        try:  # from here on a Ctrl-C stops it cleanly, even while the banner prints
            if on_start is not None:
                on_start(url)
            while not self._stopping.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        address = self._server.server_address
        host, port = str(address[0]), address[1]
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - a wildcard bind is reached locally
            host = "127.0.0.1"
        return f"http://{host}:{port}/api/"

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- controls ----------------------------------------------------------------

    def touch(self, resource: str, ids: list[int]) -> None:
        """Change a visible field of each record (modtime too, where it has one)."""
        with self._lock:
            self.dataset.touch(resource, list(ids), self._now())

    def delete(self, resource: str, ids: list[int]) -> None:
        with self._lock:
            self.dataset.delete(resource, list(ids))

    def add_orders(self, count: int, at: dt.datetime | None = None) -> list[int]:
        """New sales with ids past the highest, ordered at `at` (default: the clock's now)."""
        with self._lock:
            return self.dataset.add_orders(count, at if at is not None else self._now())

    def use_coupons(self, ids: list[int]) -> None:
        with self._lock:
            self.dataset.use_coupons(list(ids))

    def inject_fault(self, kind: str, count: int = 1, delay: float = 2.0) -> None:
        """Make the next `count` API requests fail in the way `kind` says (see FAULTS)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULTS)}")
        with self._lock:
            self._faults.extend([(kind, float(delay))] * count)

    def clear_faults(self) -> None:
        """Drop the faults queued and not yet used."""
        with self._lock:
            self._faults.clear()

    def set_envelope(self, style: str) -> None:
        with self._lock:
            self._envelope = self._check_envelope(style)

    def set_daily_limit(self, limit: int) -> None:
        with self._lock:
            self._daily_limit = int(limit)

    def unlicense(self, function: str, license: str | None = None) -> None:
        """Answer 1005 for `function`, for one license or (None) for all."""
        self._check_function(function)
        with self._lock:
            self._unlicensed.add((license or "*", function))

    def relicense(self, function: str, license: str | None = None) -> None:
        """Undo `unlicense` for the same arguments."""
        with self._lock:
            self._unlicensed.discard((license or "*", function))

    def set_clock(self, clock: Callable[[], dt.datetime] | None) -> None:
        """Use another clock (None: the real one) for days, limits, blocks and new orders."""
        with self._lock:
            self._clock = clock or self._real_clock

    def reset_stats(self) -> None:
        """Forget the counters and the request log (limits and blocks stay)."""
        with self._lock:
            self._stats = self._empty_stats()
            self.request_log = []

    def stats(self) -> dict[str, Any]:
        """Counters since the start (or reset_stats): requests, by function/license, errors."""
        with self._lock:
            return copy.deepcopy(self._stats)

    def used_today(self, license: str) -> int:
        """Requests of `license` counted toward its daily limit on the clock's day."""
        with self._lock:
            day, used = self._used.get(license, (self._now().date(), 0))
            return used if day == self._now().date() else 0

    # --- the API -----------------------------------------------------------------

    def _receive(self, query: str) -> _Request:
        """Parse an API request, count it, and take the next fault, if any."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        function = next((key for key in params if key.startswith("get-")), None)
        licname = params.get("licname", "")
        with self._lock:
            stats = self._stats
            stats["requests"] += 1
            name = function or "(none)"
            stats["by_function"][name] = stats["by_function"].get(name, 0) + 1
            if licname:
                stats["by_license"][licname] = stats["by_license"].get(licname, 0) + 1
            fault = self._faults.popleft() if self._faults else None
            if fault is not None:
                stats["faults_served"] += 1
        filters = {k: v for k, v in params.items() if k not in ("licname", "token", function)}
        return _Request(function, filters, licname, params.get("token", ""), fault)

    def _log(self, request: _Request, errorcode: int | None) -> None:
        with self._lock:
            if errorcode is not None:
                errors = self._stats["errors"]
                errors[errorcode] = errors.get(errorcode, 0) + 1
            self.request_log.append(
                LoggedRequest(request.function, request.params, request.license or None, errorcode))

    def _answer(self, ip: str, request: _Request) -> _Response:
        """The response a healthy API gives: auth, limits, then the function."""
        function, params = request.function, request.params
        with self._lock:
            now = self._now()
            self.dataset.release(now)  # the day's sales made by now join the history
            refused = self._admit(ip, request, now)
            if refused is not None:
                return refused
            assert function is not None
            if function in LIST_FUNCTIONS:
                try:
                    items = self._select(function, params)
                except _BadRequest as exc:
                    return _http_error(400, str(exc))
                style = self._envelope
            else:
                return self._input_function(request.license, function, params)
        # Records are immutable (replaced on change), so rendering needs no lock.
        if not items:
            return _api_error(2000, NOT_FOUND[function])
        return _Response(200, self._list_body(function, items, style))

    def _admit(self, ip: str, request: _Request, now: dt.datetime) -> _Response | None:
        """None when the request may run; else the refusal (1001-1005 or HTTP 400)."""
        until = self._blocked_until.get(ip)
        if until is not None and now >= until:
            # The block is over: the IP starts again with a clean count.
            del self._blocked_until[ip]
            self._bad_logins[ip] = 0
        elif until is not None:
            return _api_error(1004, f"5 bad logins reached, your ip adress is blocked till "
                                    f"'{format_local(until.astimezone(self._tz))}'")
        if not request.license or not request.token:
            return _api_error(1001, "Token and name can not be empty")
        expected = self._licenses.get(request.license)
        if expected is None or not hmac.compare_digest(expected.encode(), request.token.encode()):
            count = self._bad_logins.get(ip, 0) + 1
            self._bad_logins[ip] = count
            self._stats["bad_logins"][ip] = self._stats["bad_logins"].get(ip, 0) + 1
            if count >= BAD_LOGINS_BEFORE_BLOCK:
                self._blocked_until[ip] = now + BLOCK_DURATION
            return _api_error(1002, "Token or name not valid")
        if request.function not in FUNCTIONS:
            return _http_error(400, "unknown function")
        today = now.date()
        day, used = self._used.get(request.license, (today, 0))
        if day != today:
            used = 0
        if used >= self._daily_limit:
            midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time())
            return _api_error(1003, f"Limit of '{self._daily_limit}' requests per day reached, "
                                    f"next request possible '{format_local(midnight)}'")
        self._used[request.license] = (today, used + 1)
        if {(request.license, request.function), ("*", request.function)} & self._unlicensed:
            return _api_error(1005, "No license for this module")
        return None

    def _select(self, function: str, params: dict[str, str]) -> list[tuple[str, str, Any]]:
        """(cache resource, key, record) of what a list function returns, in id order."""
        ds = self.dataset
        resource = LIST_FUNCTIONS[function]
        if function in ("get-orders", "get-invoices", "get-coupon"):
            start, end = _int_param(params, "start"), _int_param(params, "end")
            indexes: dict[str, IdIndex[Any]] = {
                "get-orders": ds.orders, "get-invoices": ds.invoices, "get-coupon": ds.coupons}
            index = indexes[function]
            day = _date_param(params, "date") if function != "get-coupon" else None
            if day is not None:
                records: list[Any] = [
                    r for r in index.on_day(day)
                    if (start is None or r.id >= start) and (end is None or r.id <= end)
                ]
            else:
                records = index.window(start, end)
            if function == "get-orders" and "clockinclockout" in params:
                records = [o for o in records if o.is_labour]
            return [(resource, str(r.id), r) for r in records]
        if function == "get-customercredits":
            customer_id = _int_param(params, "customerid")
            if customer_id is not None:
                return [("credit_top_ups", str(t.id), t)
                        for t in ds.credit_top_ups if t.customer_id == customer_id]
            return [(resource, f"{c.customer_id}-{c.tag_id}", c)
                    for c in ds.customer_credits.values()]
        store: dict[int, Any] = getattr(ds, resource)
        return [(resource, str(key), record) for key, record in store.items()]

    def _list_body(self, function: str, items: list[tuple[str, str, Any]], style: str) -> bytes:
        parts = [self._fragment(resource, key, record) for resource, key, record in items]
        if style == "keyed":
            keyed = b",".join(_json(key) + b":" + part
                              for (_, key, _), part in zip(items, parts, strict=True))
            return b'{"success":1,' + keyed + b"}"
        joined = b"[" + b",".join(parts) + b"]"
        if style == "list":
            return joined
        name = "data" if style == "data" else function.removeprefix("get-")
        return b'{"success":1,"' + name.encode() + b'":' + joined + b"}"

    def _fragment(self, resource: str, key: str, record: object) -> bytes:
        """A record's JSON text, from the cache while the record object is unchanged."""
        cached = self._cache.get((resource, key))
        if cached is not None and cached[0] is record:
            return cached[1]
        renderer: Callable[[Any], dict[str, Any]] = (
            render_credit_top_up if resource == "credit_top_ups" else RENDERERS[resource])
        text = _json(renderer(record))
        with self._cache_lock:
            if len(self._cache) >= FRAGMENT_CACHE_SIZE:
                for old in list(islice(self._cache, FRAGMENT_CACHE_SIZE // 2)):
                    del self._cache[old]
            self._cache[resource, key] = (record, text)
        return text

    def _input_function(self, license: str, function: str, params: dict[str, str]) -> _Response:
        """The functions that take input (web orders, signing, reservations)."""
        if function == "get-confirmedweborder":
            raw = params.get("weborderid", "").strip()
            if not raw:
                return _api_error(2002, "weborderid can not be empty")
            weborder_id = int(raw) if raw.isdigit() else None
            if weborder_id is None or weborder_id not in self.dataset.weborders:
                return _api_error(2003, "weborderid does not exist")
            confirmed = self.dataset.weborders[weborder_id]
            if confirmed is None:
                return _api_error(2001, "weborder not confirmed")
            return _ok({"webordertime": format_local(confirmed)})
        if function in SIGN_FUNCTIONS:
            number = params.get("documentnr", "").strip()
            if not number:
                return _api_error(2001, "Document nr can not be empty")
            document = next((i for i in self.dataset.invoices
                             if i.number == number and i.doc_type == SIGN_FUNCTIONS[function]), None)
            if document is None:
                return _api_error(2000, NOT_FOUND[function])
            # A document made from a VAT ticket was signed when that ticket was.
            if document.from_vat_ticket or (license, number) in self._signed:
                return _api_error(2002, "Document nr already in use")
            ticket = f"NS{len(self._signed) + 1:06d}"
            self._signed[license, number] = ticket
            return _ok({"vatticket": ticket})
        raw_date = params.get("date", "").strip()
        if not raw_date:
            return _api_error(2001, "Date can not be empty")
        if function == "get-reservationhours" and not params.get("persons", "").strip():
            return _api_error(2002, "Persons can not be empty")
        try:
            day = dt.date.fromisoformat(raw_date[:10])
        except ValueError:
            return _api_error(2000, NOT_FOUND[function])
        persons = _reservation_persons(day)
        if function == "get-reservationpersons":
            return _ok({"persons": persons}) if persons else _api_error(2000, NOT_FOUND[function])
        raw_persons = params["persons"].strip()
        if not raw_persons.isdigit() or int(raw_persons) not in persons:
            return _api_error(2000, NOT_FOUND[function])
        return _ok({"hours": _reservation_hours(day, int(raw_persons))})

    # --- helpers -----------------------------------------------------------------

    def _real_clock(self) -> dt.datetime:
        return dt.datetime.now(self._tz)

    def _now(self) -> dt.datetime:
        now = self._clock()
        return now.astimezone(self._tz) if now.tzinfo is not None else now.replace(tzinfo=self._tz)

    @staticmethod
    def _check_envelope(style: str) -> str:
        if style not in ENVELOPES:
            raise ValueError(f"unknown envelope {style!r}; one of {', '.join(ENVELOPES)}")
        return style

    @staticmethod
    def _check_function(function: str) -> None:
        if function not in FUNCTIONS:
            raise ValueError(f"unknown function {function!r}")

    @staticmethod
    def _empty_stats() -> dict[str, Any]:
        return {"requests": 0, "by_function": {}, "by_license": {}, "errors": {},
                "bad_logins": {}, "faults_served": 0}

    def _control(self, method: str, action: str, body: dict[str, Any]) -> _Response:
        """POST /_control/<action> (and GET /_control/stats) for a test in another process."""
        if method == "GET":
            if action != "stats":
                return _http_error(404, f"unknown control {action!r}")
            return _Response(200, _json(self.stats()))
        try:
            result: dict[str, Any] = {"ok": True}
            if action in ("touch", "delete"):
                getattr(self, action)(str(body["resource"]), [int(i) for i in body["ids"]])
            elif action == "add_orders":
                at = body.get("at")
                result["ids"] = self.add_orders(
                    int(body.get("count", 1)), dt.datetime.fromisoformat(at) if at else None)
            elif action == "use_coupons":
                self.use_coupons([int(i) for i in body["ids"]])
            elif action == "fault":
                self.inject_fault(str(body["kind"]), int(body.get("count", 1)),
                                  float(body.get("delay", 2.0)))
            elif action == "envelope":
                self.set_envelope(str(body["style"]))
            elif action == "daily_limit":
                self.set_daily_limit(int(body["limit"]))
            elif action in ("unlicense", "relicense"):
                getattr(self, action)(str(body["function"]), body.get("license"))
            elif action == "reset_stats":
                self.reset_stats()
            elif action == "clock":
                now = body.get("now")
                fixed = dt.datetime.fromisoformat(now) if now else None
                self.set_clock((lambda: fixed) if fixed is not None else None)
            else:
                return _http_error(404, f"unknown control {action!r}")
        except (KeyError, ValueError, TypeError) as exc:
            return _http_error(400, f"{action}: {exc}")
        return _Response(200, _json(result))


def _ok(fields: dict[str, Any]) -> _Response:
    return _Response(200, _json({"success": 1, **fields}))


def _int_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be a whole number, not {raw!r}") from None


def _date_param(params: dict[str, str], name: str) -> dt.date | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be YYYY-MM-DD, not {raw!r}") from None


def _reservation_persons(day: dt.date) -> list[int]:
    """Party sizes still bookable on a day; closed (none) on Mondays."""
    if day.weekday() == 0:
        return []
    return list(range(1, 5 + day.toordinal() % 8))


def _reservation_hours(day: dt.date, persons: int) -> list[str]:
    """Free slots for a party; bigger parties and busier days get fewer."""
    slots = ["18:00", "18:30", "19:00", "19:30", "20:00", "20:30", "21:00", "21:30"]
    if day.weekday() >= 5:
        slots = ["12:00", "12:30", "13:00", *slots]
    return [s for n, s in enumerate(slots) if (n + day.toordinal() + persons) % 4 != 0
            or persons <= 2]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Handler threads may wait on keep-alive sockets or a "hang" fault: never join them.
    block_on_close = False
    # A load test opens hundreds of connections at once; the default backlog is 5.
    request_queue_size = 256
    simulator: Simulator

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-answer are expected here (faults, load
        # tests); the base class would print a traceback, and the simulator prints nothing.
        return

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a Content-Length
    server_version = "CloudPOS-simulator"
    timeout = 300  # an idle keep-alive connection is dropped after this
    # Headers and body go out in two writes; with Nagle on, a keep-alive client
    # waits for the delayed ACK (~40 ms) on every request.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        # Silent on purpose: the request line carries the token.
        return

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/_control/"):
            self._send(self.server.simulator._control("GET", url.path[len("/_control/"):], {}))
        elif url.path in API_PATHS:
            self._api(url.query)
        else:
            self._send(_http_error(404, "not found"))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not url.path.startswith("/_control/"):
            self._send(_http_error(405, "use GET"))
            return
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            self._send(_http_error(400, "the body must be JSON"))
            return
        if not isinstance(body, dict):
            self._send(_http_error(400, "the body must be a JSON object"))
            return
        self._send(self.server.simulator._control("POST", url.path[len("/_control/"):], body))

    def _api(self, query: str) -> None:
        simulator = self.server.simulator
        request = simulator._receive(query)
        fault = request.fault
        kind, delay = fault if fault is not None else ("", 0.0)
        if kind in ("", "slow", "truncated"):
            if kind == "slow":
                simulator._stopping.wait(delay)
            response = simulator._answer(self.client_address[0], request)
            simulator._log(request, response.errorcode)
            if kind == "truncated":
                response = _Response(200, response.body[: len(response.body) // 2])
            self._send(response)
            return
        simulator._log(request, None)
        if kind == "5xx":
            self._send(_Response(503, b"Service Unavailable\n", "text/plain; charset=utf-8"))
        elif kind == "html":
            self._send(_Response(200, MAINTENANCE_PAGE, "text/html; charset=utf-8"))
        elif kind == "hang":
            simulator._stopping.wait(HANG_SECONDS)
            self.close_connection = True
        elif kind == "reset":
            # Linger 0: closing sends RST instead of FIN, the client sees a reset.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.rfile.close()  # the socket closes only when its last file object does
            self.connection.close()

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)


def live(seed: int, orders: int, *, now: dt.datetime | None = None, daily_limit: int = 500,
         tz: str = "Europe/Brussels", anomalies: bool = False) -> Simulator:
    """The simulator `syncer simulate` and `syncer demo` run: `orders` orders of history
    ending at `now` (default: the real time), then the day's sales as its clock passes
    them. Given a `now`, the clock starts there and runs at real speed, so a demo can be
    replayed exactly. `anomalies`: what `syncer audit` must find (`data.plant_anomalies`)."""
    if now is None:
        return Simulator(generate(seed=seed, orders=orders, tz=tz, anomalies=anomalies),
                         daily_limit=daily_limit, tz=tz)
    start = now if now.tzinfo is not None else now.replace(tzinfo=ZoneInfo(tz))
    began = time.monotonic()
    return Simulator(generate(seed=seed, orders=orders, anchor=start.astimezone(ZoneInfo(tz)).date(),
                              tz=tz, until=start, anomalies=anomalies),
                     daily_limit=daily_limit, tz=tz,
                     clock=lambda: start + dt.timedelta(seconds=time.monotonic() - began))
