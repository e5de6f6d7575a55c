"""A hostile CloudPOS for tests: a threaded HTTP server on loopback in front of the
bundled simulator, whose answers a test rewrites.

Every request is passed on to the simulator as sent; a test's `rewrite(function,
params, body)` then returns the body to answer instead (or None: the simulator's
answer as is), or an `Answer` that also says how to send it: its own HTTP status,
headers and delay, dripping its headers or its body a byte at a time, repeated into a
huge answer without holding it, or with a `Content-Encoding` (a gzip bomb). The
simulator stays the source of truth for what a well-behaved API holds, so a test
compares what was stored with it.

Only `/api/` is the API: a request to another path (a mistyped `base_url`) is
refused as the API refuses credentials it does not know (1002), and never passed on.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Answer:
    """What the hostile server sends, and how: a body, its status, its headers, after a
    delay; dripped, repeated or encoded."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    content_type: str = "application/json; charset=utf-8"
    drip: float = 0.0  # seconds before each byte of the body
    drip_head: float = 0.0  # seconds before each byte of the status line and headers
    repeat: int = 1  # the body sent this many times over (a huge answer, never held)
    encoding: str | None = None  # its Content-Encoding (the body is already encoded)
    head: bytes = b""  # sent once before the repeated body (e.g. `{"data": [`)
    tail: bytes = b""  # and once after it
    length: bool = True  # say its Content-Length (False: the end of the connection ends it)

    @property
    def size(self) -> int:
        return len(self.head) + len(self.body) * self.repeat + len(self.tail)


# (function, the request's parameters without licname/token, the simulator's body) -> answer
Rewrite = Callable[[str, dict[str, str], bytes], "bytes | Answer | None"]


def gzip_bomb(inflated: int, piece: int = 1 << 20) -> bytes:
    """A gzip body of `inflated` zero bytes (1 GiB packs into about 1 MB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(piece)
    parts = [packer.compress(zeros) for _ in range(inflated // piece)]
    parts.append(packer.compress(bytes(inflated % piece)))
    parts.append(packer.flush())
    return b"".join(parts)


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, rewrite: Rewrite) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.split("?", 1)[0]
        self.rewrite = rewrite
        self.seen: list[tuple[str, dict[str, str]]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/"


class _Handler(BaseHTTPRequestHandler):
    server: HostileServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # the request line carries the token

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        function = next((key for key in params if key.startswith("get-")), "")
        if url.path != "/api/":
            self.server.seen.append((f"{url.path} {function}", {}))
            self._answer(json.dumps({"success": 0, "errorcode": 1002,
                                     "message": "licname or token not valid"}).encode())
            return
        with urllib.request.urlopen(f"{self.server.upstream}?{url.query}", timeout=30) as up:
            body: bytes = up.read()
        shown = {k: v for k, v in params.items() if k not in ("licname", "token", function)}
        self.server.seen.append((function, shown))
        replaced = self.server.rewrite(function, shown, body)
        self._answer(replaced if isinstance(replaced, Answer) else Answer(
            body if replaced is None else replaced))

    def _answer(self, answer: Answer | bytes) -> None:
        if not isinstance(answer, Answer):
            answer = Answer(answer)
        if answer.delay:
            time.sleep(answer.delay)
        headers = [("Content-Type", answer.content_type)]
        if answer.length:
            headers.append(("Content-Length", str(answer.size)))
        if answer.encoding:
            headers.append(("Content-Encoding", answer.encoding))
        headers += answer.headers.items()
        reason = next((s.phrase for s in HTTPStatus if s.value == answer.status), "")
        head = (f"HTTP/1.1 {answer.status} {reason}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n")
        try:
            self._send(head.encode(), answer.drip_head)
            self._send(answer.head, answer.drip)
            for _ in range(answer.repeat):
                self._send(answer.body, answer.drip)
            self._send(answer.tail, answer.drip)
        except OSError:
            return  # the client stopped reading (as it should past a cap or a deadline)
        self.close_connection = True

    def _send(self, data: bytes, drip: float) -> None:
        if not data:
            return
        if not drip:
            self.wfile.write(data)
            return
        for i in range(len(data)):
            time.sleep(drip)
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()


@contextmanager
def hostile(upstream: str, rewrite: Rewrite) -> Iterator[HostileServer]:
    """A hostile server in front of `upstream` (the simulator's base URL) while in use."""
    server = HostileServer(upstream, rewrite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def records_of(body: bytes) -> tuple[dict[str, Any], str] | None:
    """A `data`-envelope answer's object and its list's key, or None for another shape."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if isinstance(answer, dict) and isinstance(answer.get("data"), list):
        return answer, "data"
    return None


def with_extra_id(body: bytes, new_id: int) -> bytes | None:
    """The answer with one more record: a copy of its first, with id `new_id`."""
    found = records_of(body)
    if found is None or not found[0]["data"]:
        return None
    answer, key = found
    answer[key] = [*answer[key], {**answer[key][0], "id": new_id}]
    return json.dumps(answer).encode()


def with_values(body: bytes, change: Callable[[str, Any], Any]) -> bytes | None:
    """The answer with every value of every object replaced by `change(key, value)`
    (nested objects and lists too); None for a body that is not JSON."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None

    def walk(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(key, v) for v in value]
        return change(key, value)

    return json.dumps(walk("", answer), ensure_ascii=False).encode()


def api_error(code: int, message: str) -> bytes:
    """An API error answer (HTTP 200 with an errorcode), as CloudPOS sends one."""
    return json.dumps({"errorcode": code, "message": message}, ensure_ascii=False).encode()
