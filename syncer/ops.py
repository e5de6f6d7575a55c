"""`--http HOST:PORT`: the status page at `/`, `/healthz` and `/metrics`, on a small
background server. All three read the one read model (syncer.status).

The server is waitress (`StatusServer`), chosen because its one event loop reads each
request whole before a worker thread sees it: a slow or silent client holds a socket,
never a thread, and `connection_limit` caps those sockets (past it, connections wait in
the listen backlog, in the kernel, not in the process), so the page can never take the
file descriptors the sync needs. On top of waitress: at the cap, the oldest connection
that has not sent a whole request for a second is closed to make room (a slowloris
cannot keep `/healthz` out), and a request not received whole within
`REQUEST_SECONDS` is dropped however slowly it drips (waitress's own timeout counts
only silence).

`/metrics` is prometheus_client's exposition of `SyncerCollector`, which turns a fresh
`Status` into metric families on every scrape (counters as counters, gauges as gauges).
When the database does not answer, the scrape still succeeds with `syncer_up 0`, so an
alert can tell "daemon down" from "database down".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from waitress import wasyncore
from waitress.server import TcpWSGIServer

from syncer import page
from syncer import status as read_model
from syncer.daemon import Daemon
from syncer.db import error_summary

log = logging.getLogger("syncer.ops")

# The classic text format, which generate_latest writes for names like ours and every
# Prometheus 2.x reads (prometheus_client's own default names version 1.0.0).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_REFRESH = 30  # seconds between the page's reloads (?refresh=N: 1 to 3600)

# The status server's bounds (see the module's docstring and docs/operations.md).
THREADS = 4  # requests served at once (each may hold one database connection)
CONNECTION_LIMIT = 64  # open connections; more wait in the backlog
BACKLOG = 1024  # connections the kernel queues for us (capped by net.core.somaxconn)
IDLE_SECONDS = 10  # a connection silent this long is closed
REQUEST_SECONDS = 10  # a request not received whole within this is dropped
EVICT_AFTER = 0.5  # at the cap: a connection without a whole request, silent this long, goes
# waitress says "reached the connection limit" each time it stops accepting, which under
# a flood is many times a second; the server says it at most once a minute instead.
_waitress_log = logging.getLogger("syncer.ops.waitress")
_waitress_log.setLevel(logging.ERROR)


def families(status: read_model.Status | None, written: dict[tuple[str, str], int],
             up: bool, stalled: Collection[tuple[str, str]] = ()) -> Iterator[Metric]:
    """The metric families of one status (None: the database did not answer);
    `stalled`: the (license, job) runs going on past their bound."""
    syncer_up = GaugeMetricFamily("syncer_up", "1 when the scheduler runs and the database answers.")
    syncer_up.add_metric([], 1 if up and status is not None else 0)
    yield syncer_up
    rows_written = CounterMetricFamily(
        "syncer_rows_written", "Rows inserted, updated or marked deleted by this process.",
        labels=["license", "sync_job"])
    for (license, job_name), count in sorted(written.items()):
        rows_written.add_metric([license, job_name], count)
    yield rows_written
    if status is None:
        return

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ("license",)) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=list(labels))

    spent = gauge("syncer_requests_spent_today", "Requests spent in the license's API day (any purpose).")
    left = gauge("syncer_requests_left_today", "Requests left for scheduled work today "
                 "(daily_budget - reserve - spent).")
    planned = gauge("syncer_requests_planned_today", "Requests the plan expects for the rest of the day.")
    needed = gauge("syncer_requests_needed_today", "Requests the rest of the day costs with every "
                   "job at its longest interval.")
    budget = gauge("syncer_requests_daily_budget", "The license's daily_budget.")
    reserve = gauge("syncer_requests_reserve", "Requests kept for `syncer call` (reserve).")
    refused = gauge("syncer_license_credentials_refused", "1 while the API's refusal of the "
                    "credentials stops the license (until they change in the config).")
    paused = gauge("syncer_license_paused", "1 while a 1003/1004 from the API pauses the license.")
    paused_until = gauge("syncer_license_paused_until_timestamp_seconds",
                         "Until when a paused license waits (only while paused).")
    configured = gauge("syncer_license_configured", "1 for a license in the config, 0 for one "
                       "known only from the database.")
    shop_open = gauge("syncer_shop_open", "1 during opening hours ([schedule] opening_hours).")
    quarantine = gauge("syncer_quarantine_records", "Records kept in the quarantine.")
    audited = gauge("syncer_audit_problems", "Problems the latest daily audit found (syncer audit; "
                    "only once an audit has run).")
    requests = CounterMetricFamily(
        "syncer_requests", "Requests in the ledger by function and outcome (ok, retried, failed, "
        "auth, 1003, 1004, 1005, api_error, pending).", labels=["license", "function", "outcome"])
    # Not `job`: Prometheus keeps that for the scrape job (and would rename ours exported_job).
    job_labels = ("license", "sync_job")
    success = gauge("syncer_last_success_timestamp_seconds", "Last successful run of a job.", job_labels)
    lag = gauge("syncer_job_lag_seconds", "Seconds since a job last succeeded.", job_labels)
    next_run = gauge("syncer_job_next_run_timestamp_seconds", "When a job runs next.", job_labels)
    failing = gauge("syncer_job_failing", "1 while a job's last run ended in an error.", job_labels)
    stuck = gauge("syncer_job_stalled", "1 while a run of the job has gone on past what its "
                  "requests may take (see /healthz).", job_labels)
    job_planned = gauge("syncer_job_planned_requests_today", "Requests a job is planned to spend "
                        "for the rest of the day.", job_labels)
    stored = gauge("syncer_table_rows", "Rows of the license in a resource's table "
                   "(counted at most once a minute).", job_labels)
    catching_up = gauge("syncer_job_catching_up", "1 while a history job (orders, invoices, "
                        "coupons) is still catching up on its history.", job_labels)
    days_left = gauge("syncer_job_catch_up_days_left", "Days of history still to load while a job "
                      "catches up (orders and invoices).", job_labels)
    catch_up_end = gauge("syncer_job_catch_up_end_timestamp_seconds", "When a catching-up job "
                         "should be in, at its pace so far (once it has one).", job_labels)
    for lic in status.licenses:
        key = [lic.name]
        spent.add_metric(key, lic.spent)
        left.add_metric(key, lic.left)
        planned.add_metric(key, lic.planned)
        needed.add_metric(key, lic.needed)
        budget.add_metric(key, lic.daily_budget)
        reserve.add_metric(key, lic.reserve)
        refused.add_metric(key, 1 if lic.credentials_refused else 0)
        paused.add_metric(key, 1 if lic.paused_until else 0)
        if lic.paused_until is not None:
            paused_until.add_metric(key, lic.paused_until.timestamp())
        configured.add_metric(key, 1 if lic.configured else 0)
        shop_open.add_metric(key, 1 if lic.shop_open else 0)
        quarantine.add_metric(key, lic.quarantined)
        if lic.audit_problems is not None:
            audited.add_metric(key, lic.audit_problems)
        for asked in lic.requests:
            if asked.total:  # (a request still pending is counted once it has its answer)
                requests.add_metric([lic.name, asked.function, asked.outcome], asked.total)
        for job in lic.jobs:
            labels = [lic.name, job.job]
            if job.last_success_at is not None and job.lag_seconds is not None:
                success.add_metric(labels, round(job.last_success_at.timestamp()))
                lag.add_metric(labels, round(job.lag_seconds))
            if job.next_run_at is not None:
                next_run.add_metric(labels, round(job.next_run_at.timestamp()))
            failing.add_metric(labels, 1 if job.failing else 0)
            stuck.add_metric(labels, 1 if (lic.name, job.job) in stalled else 0)
            job_planned.add_metric(labels, job.planned_requests)
            if job.table_rows is not None:
                stored.add_metric(labels, job.table_rows)
            history = job.catching_up
            catching_up.add_metric(labels, 0 if history is None else 1)
            if history is not None and history.days_left is not None:
                days_left.add_metric(labels, history.days_left)
            if history is not None and history.expected_end is not None:
                catch_up_end.add_metric(labels, round(history.expected_end.timestamp()))
    bad_logins = GaugeMetricFamily("syncer_bad_logins", "Bad logins (any license) in the last "
                                   "30 minutes; at 3, new credentials wait.")
    bad_logins.add_metric([], status.bad_logins)
    yield from (spent, left, planned, needed, budget, reserve, requests, refused, paused,
                paused_until, configured, shop_open, quarantine, audited, success, lag, next_run, failing,
                stuck, job_planned, stored, catching_up, days_left, catch_up_end, bad_logins)


class SyncerCollector(Collector):
    """The daemon's state, read fresh from the database on every scrape."""

    def __init__(self, daemon: Daemon, cache: read_model.Cache) -> None:
        self.daemon = daemon
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        healthy, _ = self.daemon.healthy()
        try:
            status = read_model.build(self.daemon.engine, self.daemon.config, now=self.daemon.clock(),
                                      totals=True, cache=self.cache)
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", error_summary(exc))
            status = None
        yield from families(status, self.daemon.rows_written(), healthy, self.daemon.stalled())


def registry_for(daemon: Daemon, cache: read_model.Cache) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyncerCollector(daemon, cache))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, ...
    return registry


class StatusServer(TcpWSGIServer):  # type: ignore[misc]  # waitress ships no types
    """waitress, bounded against slow and many clients; runs in a thread of its own."""

    logger = _waitress_log
    _full_said_at = 0.0

    def __init__(self, app: Callable[..., Iterable[bytes]], host: str, port: int, *,
                 threads: int = THREADS, connection_limit: int = CONNECTION_LIMIT,
                 idle_seconds: int = IDLE_SECONDS, request_seconds: float = REQUEST_SECONDS,
                 ) -> None:
        super().__init__(app, map={}, host=host, port=port, threads=threads,
                         connection_limit=connection_limit, backlog=BACKLOG,
                         channel_timeout=idle_seconds, cleanup_interval=1,
                         ident="syncer", expose_tracebacks=False)
        self.request_seconds = request_seconds
        self._stopping = threading.Event()
        # The loop closes the map (the trigger's pipe with it) as it ends; shutdown and
        # the worker threads pull the trigger to wake it. Under one lock, so that no pull
        # writes to a closed descriptor, or to whatever file has since been given its number.
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ops-http", daemon=True)

    @property
    def server_address(self) -> tuple[str, int]:
        return str(self.effective_host), int(self.effective_port)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wasyncore.loop(timeout=0.5, map=self._map, count=1)
        self.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
        with self._closing:
            wasyncore.close_all(self._map)
            self._closed = True

    def pull_trigger(self) -> None:
        """Wake the loop from its wait; once the loop has closed, nothing is left to wake."""
        with self._closing:
            if not self._closed:
                super().pull_trigger()

    def shutdown(self) -> None:
        """Stop listening, close every connection, end the threads (a second call, or one
        after the loop has ended, only waits for the thread)."""
        self._stopping.set()
        self.pull_trigger()
        self._thread.join(timeout=5)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # closes connections silent for idle_seconds
        for channel in list(self.active_channels.values()):
            if (channel.request is not None and not channel.requests
                    and now - channel.creation_time > self.request_seconds):
                channel.will_close = True  # a request dripping in past its time

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            self._evict(time.time())
        return bool(super().readable())

    def _evict(self, now: float) -> None:
        """At the cap: close the oldest connection that has sent no whole request and
        nothing for EVICT_AFTER, so a new one (a health check) gets in."""
        waiting = [c for c in self.active_channels.values()
                   if not c.requests and not c.will_close and not c.total_outbufs_len
                   and now - c.last_activity >= EVICT_AFTER]
        if waiting:
            min(waiting, key=lambda c: c.creation_time).will_close = True
        if now - self._full_said_at >= 60:
            self._full_said_at = now
            log.warning("status server: %d connections open (the limit); the oldest without a "
                        "whole request are closed to make room", len(self.active_channels))


def app_for(daemon: Daemon) -> Callable[..., Iterable[bytes]]:
    """The WSGI application of `/`, `/healthz` and `/metrics`."""
    cache = read_model.Cache()  # shared by the page and the scrapes
    registry = registry_for(daemon, cache)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def send(status: int, body: str, ctype: str) -> list[bytes]:
            data = body.encode()
            start_response(f"{status} {_REASONS[status]}", [
                ("Content-Type", ctype), ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store")])
            return [data] if environ.get("REQUEST_METHOD") != "HEAD" else []

        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return send(405, "only GET\n", "text/plain; charset=utf-8")
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok, reason = daemon.healthy()
            return send(200 if ok else 503, reason + "\n", "text/plain; charset=utf-8")
        if path == "/metrics":
            return send(200, generate_latest(registry).decode(), METRICS_CONTENT_TYPE)
        if path in ("/", "/index.html"):
            refresh = _refresh(parse_qs(environ.get("QUERY_STRING", "")).get("refresh", []))
            try:
                status = read_model.build(daemon.engine, daemon.config, now=daemon.clock(),
                                          requests=False, cache=cache)
            except SQLAlchemyError as exc:  # the database may be down: say so, don't crash
                return send(503, f"status unavailable: the database did not answer "
                            f"({type(exc).__name__}); /healthz says more\n", "text/plain")
            return send(200, page.render(with_stalled(status, daemon), refresh_seconds=refresh),
                        "text/html; charset=utf-8")
        return send(404, "not found: try /, /healthz or /metrics\n", "text/plain")

    return app


def with_stalled(status: read_model.Status, daemon: Daemon) -> read_model.Status:
    """The status with a sign for each run going on past its bound (the daemon knows
    what runs; the database does not)."""
    stalled = daemon.stalled()
    if not stalled:
        return status
    bound = daemon.stall_bound.total_seconds()
    signs = tuple(read_model.StopSign(
        "stalled", "warning",
        f"{lic}/{job} has been running for {seconds:.0f} s (a run may take {bound:.0f} s)",
        "the log says what it waits on; a restart ends it, and it goes on from its last commit")
        for (lic, job), seconds in sorted(stalled.items()))
    return replace(status, stop_signs=(*status.stop_signs, *signs))


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def serve(daemon: Daemon, host: str, port: int, **bounds: Any) -> StatusServer:
    """Start the server in a daemon thread and return it (call .shutdown() to stop);
    `bounds`: StatusServer's keywords (tests)."""
    server = StatusServer(app_for(daemon), host, port, **bounds)
    server.start()
    log.info("serving the status page, /healthz and /metrics on http://%s:%d", host,
             server.server_address[1])
    return server


def _refresh(values: list[str]) -> int:
    try:
        return min(max(int(values[-1]), 1), 3600) if values else DEFAULT_REFRESH
    except ValueError:
        return DEFAULT_REFRESH


def metrics_text(daemon: Daemon) -> str:
    """What /metrics serves, as text (for tests and the secrets guard)."""
    return generate_latest(registry_for(daemon, read_model.Cache())).decode()
