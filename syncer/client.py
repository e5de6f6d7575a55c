"""The CloudPOS HTTP client: one door for every request, typed errors, tolerant envelopes.

The client knows nothing of tables. It sends `GET base_url?licname&token&function&filters`,
passes every attempt through the door (`before_send` is where the ledger spends the
budget, *before* the request leaves), retries only what can heal by itself
(transport faults, 5xx, HTML or truncated bodies), and turns API error codes into
exceptions that say what to do.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import httpcore
import httpx
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from syncer.redact import install_log_redaction, printable, redact, register_secret

log = logging.getLogger("syncer.client")

# --- errors ------------------------------------------------------------------


class CloudPosError(Exception):
    """Anything the API or the way to it refused.

    `code` is the API's errorcode if any: a subclass that stands for codes declares them
    (`code`, or `codes` for a range), and `API_ERRORS` is built from those declarations.
    `until`: when the API takes requests again, where its answer said (1003, 1004).
    The message is redacted and made one line here (it quotes the API's words, and
    goes to logs, the terminal, `sync_state.last_error` and the status page).
    """

    code: int | None = None
    codes: tuple[int, ...] = ()

    def __init__(self, message: str, code: int | None = None, *,
                 until: dt.datetime | None = None) -> None:
        super().__init__(printable(redact(message)))
        if code is not None:
            self.code = code
        self.until = until


class AuthRejected(CloudPosError):
    """1001/1002: the credentials are empty or wrong. Stop the license; never retry."""


class EmptyCredentials(AuthRejected):
    code = 1001


class InvalidCredentials(AuthRejected):
    code = 1002


class DailyLimitReached(CloudPosError):
    """1003: the license's daily request limit is spent; `retry_at` says when it resets."""

    code = 1003

    @property
    def retry_at(self) -> dt.datetime | None:
        return self.until


class IpBlocked(CloudPosError):
    """1004: too many bad logins from this IP; `until` says when the block ends."""

    code = 1004


class ModuleNotLicensed(CloudPosError):
    """1005: the license does not include this function's module."""

    code = 1005


class InputRejected(CloudPosError):
    """2001-2003: the input of an input-taking function was refused."""

    codes = (2001, 2002, 2003)


class NotFound(CloudPosError):
    """2000 from a function that returns one object rather than a list."""

    code = 2000


class UnknownApiError(CloudPosError):
    """An errorcode the API page does not list."""


class Retriable(CloudPosError):
    """A fault that may heal on a new attempt: transport, 5xx, broken body."""


class TransportFailed(Retriable):
    """The request did not get an HTTP answer (connect, reset, timeout)."""


class ResponseTimeout(TransportFailed):
    """No complete answer within the timeout."""


class AnswerTooLarge(Retriable):
    """An answer past `max_answer_mib`, on the wire or inflated: reading stopped there.
    An id window is asked again with half the ids, as after a timeout."""


class ServerError(Retriable):
    """HTTP 5xx."""


class BadResponse(Retriable):
    """An answer that is not the API's JSON: HTML, truncated, or of unknown shape."""


class SuspiciousAnswer(CloudPosError):
    """An answer that reads well but would do too much harm applied unchecked: a full
    list answered empty while many of its rows are live. Nothing is applied; the job
    fails with this message (and is tried again as the planner says)."""


class Cancelled(CloudPosError):
    """The client was closed (the process is stopping): nothing more is sent or retried."""


class HttpError(CloudPosError):
    """An HTTP status that retrying will not fix (4xx)."""


class RequestRefused(Exception):
    """The door refused to send (budget spent, license stopped); nothing was sent.
    `until`: when it may send again, if known."""

    def __init__(self, message: str, until: dt.datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


class BudgetExhausted(RequestRefused):
    """The license's requests for today (or this run's cap) are spent."""


class LicenseStopped(RequestRefused):
    """The license may not send now: credentials refused, limit reached or IP blocked
    (`until` None: until the credentials change)."""


def _declared(cls: type[CloudPosError]) -> tuple[int, ...]:
    own = cls.__dict__.get("code")
    return (*cls.__dict__.get("codes", ()), *((own,) if isinstance(own, int) else ()))


def _subclasses(cls: type[CloudPosError]) -> list[type[CloudPosError]]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


# The API's errorcodes and the class each one raises, from the classes' declarations.
API_ERRORS: dict[int, type[CloudPosError]] = {
    code: cls for cls in _subclasses(CloudPosError) for code in _declared(cls)}


# --- the functions -------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    """What one API function takes, as the vendor's page lists it: filters with a value
    (`start=1`) and bare flags (`clockinclockout`)."""

    values: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    def shown(self, name: str) -> str:
        taken = [f"{v}=" for v in self.values] + list(self.flags)
        return f"{name} {' '.join(taken)}" if taken else name


FUNCTIONS: dict[str, Function] = {
    **{name: Function() for name in (
        "get-categories", "get-products", "get-subproducts", "get-customers", "get-users",
        "get-tables", "get-payment", "get-printers", "get-giftvoucher")},
    "get-customercredits": Function(("customerid",)),
    "get-orders": Function(("start", "end", "date"), ("clockinclockout",)),
    "get-invoices": Function(("start", "end", "date")),
    "get-coupon": Function(("start", "end")),
    "get-confirmedweborder": Function(("weborderid",)),
    "get-invoicesigned": Function(("documentnr",)),
    "get-offersigned": Function(("documentnr",)),
    "get-creditnotesigned": Function(("documentnr",)),
    "get-reservationpersons": Function(("date",)),
    "get-reservationhours": Function(("date", "persons")),
}


def unlisted_use(function: str, params: Mapping[str, str | None]) -> str | None:
    """Why a request is not one the API lists (an unknown function, a filter it does not
    take, a filter without its `=value` or a flag with one), or None. `params` maps each
    key to its value, None for a bare key."""
    known = FUNCTIONS.get(function)
    if known is None:
        return f"unknown function {function!r}"
    for key, value in params.items():
        if key in known.flags and value is not None:
            return f"{key} is a flag and takes no value: give it as `{key}`"
        if key in known.values and value is None:
            return f"{key} needs a value: `{key}=VALUE`"
        if key not in known.flags and key not in known.values:
            return f"{function} takes no filter {key!r}; it takes: " + (
                known.shown(function).partition(" ")[2] or "none")
    return None


# --- the door ----------------------------------------------------------------


@dataclass(frozen=True)
class RequestInfo:
    """What the door sees of a request: never the token."""

    license: str
    function: str
    params: Mapping[str, str]
    attempt: int


@dataclass(frozen=True)
class Outcome:
    outcome: str  # ok, empty, api_error, failed
    error_code: int | None = None
    http_status: int | None = None
    duration_ms: int = 0
    until: dt.datetime | None = None  # from 1003/1004: when the API takes requests again


class Door(Protocol):
    """Called around every attempt; `before_send` may raise RequestRefused."""

    def before_send(self, info: RequestInfo) -> object: ...

    def after_response(self, ticket: object, outcome: Outcome) -> None: ...


class OpenDoor:
    """A door that lets everything through, for tests against the simulator. Every
    command passes its license's ledger (`runtime.Runtime` wires it)."""

    def before_send(self, info: RequestInfo) -> object:
        return None

    def after_response(self, ticket: object, outcome: Outcome) -> None:
        return None


# --- envelopes ---------------------------------------------------------------

_META_KEYS = frozenset({"success", "errorcode", "message", "error", "errormessage", "msg",
                        "count", "total"})
_DATETIME_IN_MESSAGE = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2})?)")


def _resource_key(function: str) -> str:
    return function.removeprefix("get-")


def records_from(body: Any, function: str, *, whole_list: bool = False) -> list[Any]:
    """The records of a list function's successful body, whatever envelope it came in.

    The records must be there as records: `"data": null`, `""` or `{}` is a bad answer
    (retried, then reported), never "nothing here". For a full list (`whole_list`) it
    would be an empty shop, every row marked deleted; for an id window an empty window,
    which the walk steps over (the API says "nothing found" with 2000, or `[]`)."""
    if isinstance(body, list):
        return body
    if not isinstance(body, dict):
        raise BadResponse(f"{function}: expected a JSON object or list, got {type(body).__name__}")
    for key in ("data", _resource_key(function)):
        if key in body:
            value = body[key]
            if not isinstance(value, list) and not (isinstance(value, dict) and value):
                kind = "the full list's" if whole_list else "the answer's"
                raise BadResponse(f"{function}: {kind} {key!r} is {_shown_value(value)}, "
                                  "not a list of records")
            return _records_in(value, function)
    rest = {k: v for k, v in body.items() if k not in _META_KEYS}
    if not rest:
        # The API says "nothing" with 2000. A success without records is malformed, and
        # read as an empty list it would mark a whole full list deleted.
        raise BadResponse(f"{function}: a success without records (keys {sorted(body)[:8]})")
    lists = [v for v in rest.values() if isinstance(v, list)]
    if len(rest) == 1 and lists:
        return lists[0]
    if all(isinstance(v, dict) for v in rest.values()):
        return _keyed(rest)
    if "id" in rest and not any(isinstance(v, dict) for v in rest.values()):
        return [rest]  # a single record sent as the object itself
    raise BadResponse(f"{function}: unknown envelope with keys {sorted(rest)[:8]}")


def _shown_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "an empty text" if not value else "a text"
    return f"an empty {type(value).__name__}" if not value else f"a {type(value).__name__}"


def _records_in(value: Any, function: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) for v in value.values()):
            return _keyed(value)
        return [value] if value else []
    if value in (None, ""):
        return []
    raise BadResponse(f"{function}: records are a {type(value).__name__}, not a list")


def _keyed(mapping: Mapping[str, Any]) -> list[Any]:
    """Records keyed by id; the key fills in a missing `id`."""
    out = []
    for key, record in mapping.items():
        if isinstance(record, dict) and "id" not in record and str(key).isdigit():
            out.append({"id": key, **record})
        else:
            out.append(record)
    return out


def parse_api_datetime(message: str, tz: ZoneInfo) -> dt.datetime | None:
    """The first `YYYY-MM-DD HH:MM[:SS]` in an API message, as an aware datetime in tz.

    It is the end of a stop (1003, 1004): a local time that is ambiguous (the autumn
    night's repeated hour) or missing (the spring gap) is read as the later of its two
    readings, so that a block is never taken as over before it is. None for a time
    that cannot be read (no such day, or past the calendar's edge in UTC).
    """
    match = _DATETIME_IN_MESSAGE.search(message)
    if not match:
        return None
    text = f"{match.group(1)} {match.group(2)}"
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    try:
        naive = dt.datetime.strptime(text, fmt)
        latest = max(naive.replace(tzinfo=tz, fold=fold).astimezone(dt.UTC) for fold in (0, 1))
        return latest.astimezone(tz)
    except (ValueError, OverflowError):
        return None


_MAX_CODE = 2**31  # an error code fits the ledger's INTEGER column


def _error_message(body: Mapping[str, Any]) -> str:
    for key in ("message", "error", "errormessage", "msg"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


# How much of a refused answer's body a message quotes.
BODY_SHOWN = 200


def body_excerpt(content: bytes) -> str:
    """What a message shows of a refused answer's body: decoded and redacted whole
    (the token as the request sent it may be in it, in any of its spellings), and only
    then cut, so a cut never leaves a secret's head unrecognised."""
    text = redact(content.decode("utf-8", errors="replace"))
    if len(text) <= BODY_SHOWN:
        return text
    return f"{text[:BODY_SHOWN]}… ({len(content):,} bytes)"


def raise_for_api_error(body: Any, function: str, tz: ZoneInfo) -> bool:
    """Raise the typed error for an API errorcode; True for 2000 (nothing found)."""
    if not isinstance(body, dict) or "errorcode" not in body:
        return False
    raw_code = body["errorcode"]
    try:
        code = int(raw_code)
        # `1e400` reads as a Decimal whose int has 401 digits; `1.5` is no code either. The
        # ledger keeps the code in an INTEGER column: what cannot be one is a broken answer.
        if (code != raw_code and str(code) != str(raw_code).strip()) or not 0 <= code < _MAX_CODE:
            raise ValueError(raw_code)
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        raise BadResponse(f"{function}: errorcode {str(raw_code)[:20]!r} is not an error "
                          "code") from None
    if code == 0:
        return False
    message = _error_message(body) or f"errorcode {code}"
    if code == NotFound.code:
        return True
    kind = API_ERRORS.get(code, UnknownApiError)
    until = parse_api_datetime(message, tz)
    text = f"{function}: {code} {message}"
    if until is not None:
        # The API gives a local time without its zone (1003, 1004); a person reading it
        # must not have to guess which (the logs are in UTC).
        text += f" ({until:%Z}, {tz.key})"
    raise kind(text, code, until=until)


def decode_json(content: bytes) -> Any:
    """An answer's JSON, numbers with a fraction or an exponent as exact Decimals (never
    a float). Raises ValueError (or UnicodeDecodeError) for text that is not JSON."""
    return json.loads(content, parse_float=Decimal)


def decode_body(function: str, content: bytes, *, whole_list: bool = False) -> Any:
    """A JSON body as the client reads it (exact Decimals); the rebuild reads archived
    bodies with it too, so both see the same values.

    `whole_list`: a full list, where JSON's "the last of a repeated key wins" could
    swap the records for an empty list (`{"data": [...], "data": []}`): a top-level key
    given twice is a bad answer. (Checked for full lists only: it triples the decoding
    time, and a window read short is asked again, never applied as deletions.)"""
    repeated: list[tuple[dict[str, Any], list[str]]] = []  # (object, its repeated keys)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            keys = [key for key, _ in items]
            repeated.append((obj, sorted({key for key in keys if keys.count(key) > 1})))
        return obj

    try:
        if not whole_list:
            return decode_json(content)
        body = json.loads(content, parse_float=Decimal, object_pairs_hook=pairs)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadResponse(f"{function}: body is not complete JSON ({exc})") from None
    for obj, keys in repeated:
        if obj is body:
            raise BadResponse(f"{function}: the full list's answer gives the key(s) "
                              f"{', '.join(map(repr, keys[:5]))} more than once")
    return body


def page_records(function: str, content: bytes, tz: ZoneInfo) -> list[Any]:
    """The records of a list function's successful body as `fetch` unwraps them
    (2000: none)."""
    body = decode_body(function, content)
    return [] if raise_for_api_error(body, function, tz) else records_from(body, function)


def _attempt_note(number: int, of: int) -> str:
    """The log's attempt note, e.g. ' (attempt 2/3)', when the client retries; none when
    its caller retries instead (the backfill's windows log their own tries)."""
    return f" (attempt {number}/{of})" if of > 1 else ""


# --- the whole request's deadline ---------------------------------------------------

# httpx's timeouts bound each network operation, not a request: a body dripping a byte
# a second never trips a 5 s read timeout. The client sets a deadline for each attempt
# (connect, request, headers and body); every socket operation of that attempt waits at
# most the time left, and none starts past it.
_DEADLINE: ContextVar[float | None] = ContextVar("cloudpos_deadline", default=None)


def _left(timeout: float | None, late: type[Exception]) -> float | None:
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every operation bounded by the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _bound_by_deadline(client: httpx.Client) -> None:
    """Put the deadline under every network transport of `client` (its own and those
    mounted for proxies); a transport a test hands in is left as it is. httpx has no
    public seam for this: tests/test_hostile.py proves a dripping body and dripping
    headers are both cut at the deadline, so an httpx that moves it fails there."""
    for transport in (client._transport, *client._mounts.values()):
        pool = getattr(transport, "_pool", None)
        if isinstance(transport, httpx.HTTPTransport) and pool is not None:
            pool._network_backend = _DeadlineBackend(pool._network_backend)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


# --- the client ----------------------------------------------------------------


@dataclass
class Page:
    """One successful answer: its records (or object), size and timing."""

    body: Any
    records: list[Any] = field(default_factory=list)
    nbytes: int = 0
    elapsed: float = 0.0
    empty: bool = False  # the API said 2000
    # The body's bytes as received (the archive keeps them, whatever decoded them) and
    # the door's ticket of the request that got them (the ledger row; never the token).
    content: bytes = b""
    ticket: object = None


class CloudPosClient:
    """A client for one license of the CloudPOS API."""

    def __init__(
        self,
        base_url: str,
        licname: str,
        token: SecretStr | str,
        *,
        tz: ZoneInfo | str = "Europe/Brussels",
        timeout: float = 30.0,
        max_attempts: int = 3,
        door: Door,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        backoff_max: float = 8.0,
        max_answer_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.base_url = base_url
        self.licname = licname
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        register_secret(self._token.get_secret_value())
        # httpx and httpcore log full URLs (token included) at INFO/DEBUG: redact every
        # log record of the process, also when the client is used as a library.
        install_log_redaction()
        self.tz = ZoneInfo(tz) if isinstance(tz, str) else tz
        self.max_attempts = max_attempts
        self.door = door
        self._closed = threading.Event()
        # Backoff waits end early when the client is closed, so a stopping daemon
        # never sits out a retry delay.
        self._sleep: Callable[[float], None] = sleep or self._pause
        self._backoff_max = backoff_max
        # `timeout` bounds a whole attempt (connect, headers, body), not each read.
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout), transport=transport, follow_redirects=False
        )
        if transport is None:
            _bound_by_deadline(self._http)

    def __repr__(self) -> str:
        return f"CloudPosClient(base_url={self.base_url!r}, licname={self.licname!r})"

    def _pause(self, seconds: float) -> None:
        self._closed.wait(seconds)

    def close(self) -> None:
        """Close the connections; a request in flight fails and nothing more is sent."""
        self._closed.set()
        self._http.close()

    def __enter__(self) -> CloudPosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one door ---------------------------------------------------------

    def request(
        self,
        function: str,
        params: Mapping[str, str | int | None] | None = None,
        *,
        max_attempts: int | None = None,
        unwrap: bool = False,
        whole_list: bool = False,
    ) -> Page:
        """Send one logical request (with bounded retries) and return its page.

        `unwrap`: a list function; its records are taken out of the envelope inside
        the attempt, so an unknown envelope is retried like any other broken body.
        `whole_list`: a full list (see `records_from`).
        """
        if not self.licname.strip() or not self._token.get_secret_value().strip():
            # The API would answer 1001; nothing is sent for something fixable locally.
            raise EmptyCredentials(
                f"{function}: license name or token is empty; set it in the config"
            )
        clean = {k: "" if v is None else str(v) for k, v in (params or {}).items()}
        attempts = max_attempts or self.max_attempts
        for attempt in self.retrying(attempts):
            with attempt:
                number = attempt.retry_state.attempt_number
                return self._attempt(function, clean, number, attempts, unwrap, whole_list)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True raises the last

    def retrying(self, attempts: int | None = None, *,
                 before_sleep: Callable[[RetryCallState], None] | None = None) -> Retrying:
        """The one retry policy: only `Retriable` faults, `attempts` in all (default
        `max_attempts`), exponential backoff that a close() cuts short, the last fault
        re-raised. Callers that retry a step of their own (the id-window walk) use it
        too, with `before_sleep` to adapt the next attempt."""
        return Retrying(
            retry=retry_if_exception_type(Retriable),
            stop=stop_after_attempt(attempts or self.max_attempts),
            wait=wait_exponential(multiplier=0.5, max=self._backoff_max),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _attempt(self, function: str, params: dict[str, str], number: int, of: int,
                 unwrap: bool = False, whole_list: bool = False) -> Page:
        if self._closed.is_set():
            raise Cancelled(f"{function}: not sent; the client is closed")
        info = RequestInfo(self.licname, function, dict(params), number)
        ticket = self.door.before_send(info)
        url = self._url(function, params)
        shown = " ".join([function, *(f"{k}={v}" if v else k for k, v in params.items())])
        started = time.perf_counter()
        status: int | None = None
        try:
            try:
                response, content = self._get(function, url)
            except (httpx.TransportError, RuntimeError) as exc:
                if self._closed.is_set():
                    raise Cancelled(f"{function}: abandoned in flight; the client was closed") from None
                if isinstance(exc, httpx.TimeoutException):
                    raise ResponseTimeout(f"{function}: no complete answer within timeout_seconds "
                                          f"= {self.timeout:g}") from None
                if isinstance(exc, httpx.TransportError):
                    raise TransportFailed(f"{function}: {type(exc).__name__}: {exc}") from None
                raise
            status = response.status_code
            body = self._decode(function, response, content, whole_list)
            empty = raise_for_api_error(body, function, self.tz)
            records = (records_from(body, function, whole_list=whole_list)
                       if unwrap and not empty else [])
        except CloudPosError as exc:
            duration = int((time.perf_counter() - started) * 1000)
            outcome = "api_error" if exc.code is not None else "failed"
            self.door.after_response(ticket, Outcome(outcome, exc.code, status, duration,
                                                     exc.until))
            level = logging.WARNING if isinstance(exc, Retriable) else logging.INFO
            # Only a fault that is retried is "attempt n of m": a refused login, a limit or
            # an input error is final, and a note promising more tries would mislead.
            note = _attempt_note(number, of) if isinstance(exc, Retriable) else ""
            # The error's text begins with the function, which the line has just named.
            said = str(exc).removeprefix(f"{function}: ")
            log.log(level, "GET %s -> %s%s", shown, said, note,
                    extra={"function": function, "error_code": exc.code, "attempt": number})
            raise
        except BaseException:  # a bug or Ctrl-C: the door still hears of the attempt
            duration = int((time.perf_counter() - started) * 1000)
            self.door.after_response(ticket, Outcome("failed", None, status, duration))
            raise
        duration = int((time.perf_counter() - started) * 1000)
        result = Outcome("empty" if empty else "ok", 2000 if empty else None, status, duration)
        self.door.after_response(ticket, result)
        log.debug("GET %s -> %s, %d bytes in %d ms%s", shown,
                  "empty" if empty else "ok", len(content), duration, _attempt_note(number, of))
        return Page(body=body, records=records, nbytes=len(content), elapsed=duration / 1000,
                    empty=empty, content=content, ticket=ticket)

    def _get(self, function: str, url: str) -> tuple[httpx.Response, bytes]:
        """One GET within the deadline, its body read up to `max_answer_bytes` on the wire
        and inflated (a gzip bomb stops there, unread)."""
        cap = self.max_answer_bytes
        with _deadline(self.timeout), self._http.stream("GET", url) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise self._too_large(function, f"it announces {int(declared):,} bytes")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap or response.num_bytes_downloaded > cap:
                    raise self._too_large(function, f"more than {cap:,} bytes")
                chunks.append(chunk)
            # A transport without the deadline under it (one a test hands in) is
            # checked once the body is in.
            _left(None, httpx.ReadTimeout)
        return response, b"".join(chunks)

    def _too_large(self, function: str, what: str) -> AnswerTooLarge:
        return AnswerTooLarge(
            f"{function}: answer too large ({what}; [api] max_answer_mib = "
            f"{self.max_answer_bytes / (1024 * 1024):g}); reading stopped")

    def _url(self, function: str, params: Mapping[str, str]) -> str:
        # The function and flag filters are bare keys (`&get-orders&clockinclockout`),
        # as on the API page; httpx's params would add a trailing `=`.
        parts = [urlencode({"licname": self.licname, "token": self._token.get_secret_value()}),
                 quote(function, safe="-")]
        for key, value in params.items():
            parts.append(urlencode({key: value}) if value else quote(key, safe="-"))
        separator = "&" if "?" in self.base_url else "?"
        return self.base_url + separator + "&".join(parts)

    def _decode(self, function: str, response: httpx.Response, content: bytes,
                whole_list: bool = False) -> Any:
        status = response.status_code
        if status >= 500:
            raise ServerError(f"{function}: HTTP {status}", None)
        if status >= 400:
            # The body as text (a proxy's page, a JSON error), redacted, not a bytes literal.
            shown = " ".join(body_excerpt(content).split())
            raise HttpError(f"{function}: HTTP {status}" + (f": {shown}" if shown else ""))
        if status != 200:
            # A 201, a 204 or a redirect (never followed: it would resend the token) is not
            # the API's answer, whatever its body holds: only a 200 is.
            raise BadResponse(f"{function}: HTTP {status} instead of 200; its body is not "
                              "read as an answer")
        ctype = response.headers.get("content-type", "")
        head = content.lstrip()[:1]
        if "html" in ctype or head == b"<":
            raise BadResponse(f"{function}: got an HTML page instead of JSON")
        return decode_body(function, content, whole_list=whole_list)

    # -- list functions ---------------------------------------------------------

    def fetch(
        self,
        function: str,
        params: Mapping[str, str | int | None] | None = None,
        *,
        max_attempts: int | None = None,
        whole_list: bool = False,
    ) -> Page:
        """A list function's page with its records unwrapped from any envelope
        (`whole_list`: a full list, see `records_from`)."""
        return self.request(function, params, max_attempts=max_attempts, unwrap=True,
                            whole_list=whole_list)
