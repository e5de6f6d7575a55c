"""`--http HOST:PORT`: /healthz and /metrics for the daemon, on a small background server."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from syncer.daemon import Daemon

log = logging.getLogger("syncer.ops")


def serve(daemon: Daemon, host: str, port: int) -> ThreadingHTTPServer:
    """Start the server in a daemon thread and return it (call .shutdown() to stop)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/healthz"):
                ok, reason = daemon.healthy()
                self._send(200 if ok else 503, reason + "\n", "text/plain")
            elif self.path.startswith("/metrics"):
                try:
                    body = daemon.metrics()
                except Exception as exc:  # the database may be down: say so, don't crash
                    self._send(503, f"metrics unavailable: {type(exc).__name__}\n", "text/plain")
                    return
                self._send(200, body, "text/plain; version=0.0.4")
            else:
                self._send(404, "not found: try /healthz or /metrics\n", "text/plain")

        def _send(self, status: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ops-http", daemon=True).start()
    log.info("serving /healthz and /metrics on http://%s:%d", host, server.server_address[1])
    return server
