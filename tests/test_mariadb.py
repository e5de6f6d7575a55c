"""MariaDB (and MySQL 8): where its dialect differs most from the others.

The whole suite runs on MariaDB already (conftest's `db_url` and `server_url` include
it); here, the conditional writes under contention: the ledger's spend and the lease
claim are an `UPDATE ... WHERE` under the row lock after a lock-holding insert of the
first row, and many connections at once must neither pass the cap nor deadlock.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from syncer import dialects
from syncer import tables as t
from syncer.leases import JOBS
from tests.conftest import database

NOW = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """Every test of this module runs on a fresh MariaDB database."""
    with database("mariadb", tmp_path) as url:
        yield url


def test_concurrent_spends_never_pass_the_cap(engine: Engine) -> None:
    """Eight processes' worth of connections spend at once: exactly `cap` succeed."""
    cap, tries, workers = 37, 12, 8
    day = NOW.date()
    won: list[int] = []
    guard = threading.Lock()
    start = threading.Barrier(workers)

    errors: list[BaseException] = []

    def spend() -> None:
        start.wait()
        try:
            for _ in range(tries):
                with engine.begin() as conn:
                    got = dialects.of(conn).spend(conn, license="shop", day=day, cap=cap,
                                                  now=NOW, fingerprint="f")
                if got is not None:
                    with guard:
                        won.append(got[0])
        except Exception as exc:  # a deadlock, say: the spend must not raise
            errors.append(exc)

    threads = [threading.Thread(target=spend) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(won) == list(range(1, cap + 1))  # each count handed out once
    with engine.connect() as conn:
        assert conn.execute(select(t.request_budget.c.spent)).scalar_one() == cap


def test_a_stopped_license_spends_nothing_even_on_its_first_request(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(t.license_state.insert().values(
            license="shop", blocked_until=NOW + dt.timedelta(minutes=30), blocked_reason="1004"))
        assert dialects.of(conn).spend(conn, license="shop", day=NOW.date(), cap=5, now=NOW,
                                       fingerprint="f") is None
    with engine.connect() as conn:
        assert conn.execute(select(t.request_budget)).all() == []


def test_one_of_concurrent_claimers_takes_a_lease(engine: Engine) -> None:
    workers = 6
    taken: list[str] = []
    guard = threading.Lock()
    start = threading.Barrier(workers)
    expires = NOW + dt.timedelta(minutes=5)

    errors: list[BaseException] = []

    def claim(owner: str) -> None:
        start.wait()
        try:
            with engine.begin() as conn:
                row = dialects.of(conn).claim(conn, JOBS, ("shop", "orders"), owner, expires,
                                              NOW, due=False)
        except Exception as exc:  # a deadlock, say: the claim must not raise
            errors.append(exc)
            return
        if row is not None:
            with guard:
                taken.append(owner)

    threads = [threading.Thread(target=claim, args=(f"owner-{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(taken) == 1
    with engine.connect() as conn:
        assert conn.execute(select(t.sync_state.c.lease_owner)).scalar_one() == taken[0]
        # expired: another owner takes it; the holder itself may take it again at once
    with engine.begin() as conn:
        later = NOW + dt.timedelta(minutes=6)
        assert dialects.of(conn).claim(conn, JOBS, ("shop", "orders"), "late", later, later,
                                       due=False) is not None
        assert dialects.of(conn).claim(conn, JOBS, ("shop", "orders"), "late", later, later,
                                       due=False) is not None
