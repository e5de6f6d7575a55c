"""A hostile CloudPOS for tests: a threaded HTTP server on loopback in front of the
bundled simulator, whose answers a test rewrites.

Every request is passed on to the simulator as sent; a test's `rewrite(function,
params, body)` then returns the body to answer instead, an `Answer` (a body with its
own HTTP status, headers and delay), or None: the simulator's answer as is. The
simulator stays the source of truth for what a well-behaved API holds, so a test
compares what was stored with it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Answer:
    """What the hostile server sends: a body, its status, its headers, after a delay."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    content_type: str = "application/json; charset=utf-8"


# (function, the request's parameters without licname/token, the simulator's body) -> answer
Rewrite = Callable[[str, dict[str, str], bytes], "bytes | Answer | None"]


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
        with urllib.request.urlopen(f"{self.server.upstream}?{url.query}", timeout=30) as up:
            body: bytes = up.read()
        shown = {k: v for k, v in params.items() if k not in ("licname", "token", function)}
        self.server.seen.append((function, shown))
        replaced = self.server.rewrite(function, shown, body)
        answer = (Answer(body) if replaced is None
                  else replaced if isinstance(replaced, Answer) else Answer(replaced))
        if answer.delay:
            time.sleep(answer.delay)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)


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
