"""The status server under load: a slowloris and a burst, against the real daemon and
the real server (syncer.ops), on SQLite and Postgres."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from syncer import tables as t
from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig, load_config
from syncer.daemon import Daemon
from syncer.db import make_engine, migrate
from syncer.jobs import DEFAULT_JOBS
from syncer.ledger import utcnow
from syncer.ops import CONNECTION_LIMIT, StatusServer, serve
from syncer.simulator import Simulator
from tests.conftest import LICENSE, TOKEN
from tests.helpers import cli_env, finish, run_cli, spawn_serving_daemon
from tests.hostile import Answer, hostile

FD_LIMIT = 256  # the daemon's soft limit of open files in the slowloris test
SLOW_CLIENTS = 400  # more than the daemon may open


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextmanager
def slowloris(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that each send half a request line and then nothing."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(0.5)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError:
                sock.close()
                continue
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_slowloris_neither_silences_healthz_nor_starves_the_sync(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    """400 half-open connections against a daemon allowed 256 open files: the server
    holds at most its connection limit, /healthz answers while they are held, and every
    job's first run (slowed, so it runs while they are held) succeeds."""
    sim.inject_fault("slow", count=10_000, delay=0.1)
    limited = (sys.executable, "-c",
               "import resource, runpy, sys; "
               f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT})); "
               "sys.argv[0] = 'syncer'; runpy.run_module('syncer', run_name='__main__')")
    proc, port = spawn_serving_daemon(cli_env(db_url, sim.base_url), tmp_path, command=limited)
    try:
        with slowloris(port, SLOW_CLIENTS) as held:
            assert len(held) > CONNECTION_LIMIT  # the rest wait in the backlog
            started = time.monotonic()
            status, body = get(f"http://127.0.0.1:{port}/healthz", timeout=20)
            answered = time.monotonic() - started
            assert (status, body) == (200, "ok\n")
            assert answered < 10
            assert open_files(proc.pid) < FD_LIMIT - 64
            engine = make_engine(db_url)
            try:
                deadline = time.monotonic() + 90
                while True:
                    with engine.connect() as conn:
                        states = conn.execute(select(t.sync_state.c.resource,
                                                     t.sync_state.c.last_success_at,
                                                     t.sync_state.c.last_error)).all()
                    done = [s for s in states if s.last_success_at is not None]
                    if len(done) >= 10 or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            finally:
                engine.dispose()
            assert len(done) >= 10, states
            assert [s for s in states if s.last_error] == []
            assert get(f"http://127.0.0.1:{port}/healthz", timeout=20) == (200, "ok\n")
    finally:
        proc.terminate()
        out = finish(proc, timeout=30)
    assert "Too many open files" not in out
    assert "Traceback" not in out


def test_a_burst_of_200_page_loads_is_answered_in_full(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
    engine = make_engine(db_url)
    daemon = Daemon(engine, load_config(environ=env, path=None))
    server = serve(daemon, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    results: list[int] = []
    lock = threading.Lock()
    gate = threading.Barrier(200)

    def load(path: str) -> None:
        gate.wait()
        try:
            status, _ = get(base + path, timeout=60)
        except OSError as exc:
            status = -1
            print(f"{path}: {exc}")
        with lock:
            results.append(status)

    try:
        paths = ["/", "/metrics", "/healthz", "/"] * 50
        threads = [threading.Thread(target=load, args=(p,)) for p in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        server.shutdown()
        engine.dispose()
    # /healthz says 503 (the daemon's scheduler is not started here); every load answered.
    assert len(results) == 200
    assert sorted(set(results)) == [200, 503]
    assert results.count(503) == 50


def test_a_run_past_its_bound_shows_as_stalled_on_healthz_the_metrics_and_the_page(
        db_url: str, sim: Simulator) -> None:
    """The products job's request hangs (its headers drip; the 3 s timeout cuts it);
    while it is in flight the daemon's clock moves past the run's bound: /healthz says
    503 and which job, syncer_job_stalled is 1 for it, the page shows a sign. Once the
    run ends, all is well again."""
    asked = threading.Event()

    def rewrite(function: str, params: dict[str, str], body: bytes) -> bytes | Answer | None:
        if function == "get-products":
            asked.set()
            return Answer(body, drip_head=0.3)
        return None

    offset = [dt.timedelta(0)]
    engine = make_engine(db_url)
    migrate(engine)
    with hostile(sim.base_url, rewrite) as server:
        config = Config(database=DatabaseConfig(url=db_url),
                        api=ApiConfig(base_url=server.base_url, timeout_seconds=3, max_attempts=1),
                        licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),))
        jobs = [spec for spec in DEFAULT_JOBS if spec.name == "products"]
        daemon = Daemon(engine, config, clock=lambda: utcnow() + offset[0], jobs=jobs)
        assert daemon.stall_bound == dt.timedelta(seconds=2 * 3 + 60)
        http = serve(daemon, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{http.server_address[1]}"
        daemon.start()
        try:
            assert asked.wait(20)
            assert get(f"{base}/healthz") == (200, "ok\n")  # running, within its bound
            offset[0] = daemon.stall_bound + dt.timedelta(seconds=5)
            status, body = get(f"{base}/healthz")
            assert status == 503
            assert body.startswith(f"stalled: {LICENSE}/products running for 7")
            assert body.rstrip().endswith("(a run may take 66 s)")
            metrics_text = get(f"{base}/metrics")[1]
            assert f'syncer_job_stalled{{license="{LICENSE}",sync_job="products"}} 1.0' in metrics_text
            page = get(f"{base}/")[1]
            assert 'data-kind="stalled"' in page and f"{LICENSE}/products has been running" in page
            deadline = time.monotonic() + 20
            while daemon.stalled() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert get(f"{base}/healthz") == (200, "ok\n")
            metrics_text = get(f"{base}/metrics")[1]
            assert f'syncer_job_stalled{{license="{LICENSE}",sync_job="products"}} 0.0' in metrics_text
        finally:
            http.shutdown()
            daemon.stop()
            engine.dispose()


def test_stopping_a_server_whose_loop_has_ended_writes_to_no_file() -> None:
    """The loop closes its trigger's pipe as it ends, and the number goes back to the
    process: a shutdown that comes after (a race between the loop's last wait and the
    call, seen in CI as EBADF) must not pull that trigger, or it writes into whatever
    file got the number since."""
    def app(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "0")])
        return []

    server = StatusServer(app, "127.0.0.1", 0)
    server.start()
    pulled_fd = server.trigger.trigger  # the pipe's writing end, pulled by shutdown
    server._stopping.set()  # the loop sees the flag after its wait, as on a late shutdown
    server._thread.join(timeout=5)
    assert not server._thread.is_alive()
    pipe = os.pipe()  # may itself be given the freed number: moved above it
    read_end, write_end = (fcntl.fcntl(fd, fcntl.F_DUPFD, pulled_fd + 1) for fd in pipe)
    for fd in pipe:
        os.close(fd)
    os.set_blocking(read_end, False)
    os.dup2(write_end, pulled_fd)  # another file now has the closed trigger's number
    try:
        server.shutdown()
        server.shutdown()  # twice: the CLI's paths may both stop it
        server.pull_trigger()  # what a worker thread finishing a late answer calls
        with pytest.raises(BlockingIOError):
            os.read(read_end, 16)  # nothing was written to it
    finally:
        for fd in (read_end, write_end, pulled_fd):
            os.close(fd)
