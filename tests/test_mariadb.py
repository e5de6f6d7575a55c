"""MariaDB (and MySQL 8) through the dialect seam: the suites of the loader, the ledger,
the schema, the backfill and the accounting views, run on a real MariaDB server.

The test functions are those of their own modules, collected here a second time with
`db_url` pointing at a fresh MariaDB database (conftest's `engine` and the modules'
fixtures build on it): one test, three databases, no copy. The concurrent spend and
lease claim are tested here, where they differ most (an `UPDATE ... WHERE` under the
row lock, an `INSERT IGNORE` for the first row).
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
from tests.test_accounting import (  # noqa: F401 - collected here, on MariaDB
    books,
    test_a_rate_without_an_unambiguous_box_has_none,
    test_documents_say_which_count_and_a_credit_note_counts_negative,
    test_the_receipts_book_is_turnover_per_rate_and_payments_per_method,
    test_tickets_plus_documents_count_every_sale_once,
    test_vat_per_month_and_quarter_names_the_boxes_it_feeds,
)
from tests.test_backfill import (  # noqa: F401 - collected here, on MariaDB
    test_second_backfill_writes_nothing,
)
from tests.test_daemon import (  # noqa: F401 - collected here, on MariaDB
    db,
    test_replicas_and_a_backfill_share_one_budget_and_never_run_a_job_twice_at_once,
    test_run_once_exits_1_when_the_credentials_are_refused_and_3_on_a_budget_stop,
    test_ten_restarts_with_a_bad_token_send_exactly_one_request,
)
from tests.test_ledger import (  # noqa: F401 - collected here, on MariaDB
    test_a_stopped_license_spends_nothing_and_is_told_why,
    test_the_spend_stops_at_the_cap_and_knows_a_stored_refusal,
)
from tests.test_load import (  # noqa: F401 - collected here, on MariaDB (not its Postgres ways)
    test_a_failed_transaction_leaves_nothing_behind,
    test_a_full_list_keeps_the_rows_of_listed_records_that_failed_to_parse,
    test_a_key_sent_twice_in_one_load_keeps_the_last,
    test_an_empty_full_list_marks_everything_deleted_once,
    test_changed_order_is_updated_and_only_its_children_replaced,
    test_first_load_inserts_parents_and_children_and_counts_them,
    test_full_list_marks_the_missing_deleted_and_clears_the_mark_when_they_return,
    test_new_and_changed_orders_in_one_window_are_counted_apart,
    test_rows_stored_by_a_plain_insert_are_not_rewritten,
    test_the_quarantine_keeps_numbers_as_the_api_sent_them,
    test_the_quarantine_keeps_records_with_a_nul_or_a_lone_surrogate_losslessly,
    test_two_loads_in_one_transaction,
    test_unchanged_reload_writes_nothing,
)
from tests.test_schema import (  # noqa: F401 - collected here, on MariaDB
    empty_engine,
    test_downgrade_to_base_then_upgrade_to_head,
    test_migrate_twice_changes_nothing_and_keeps_the_data,
    test_migrated_database_matches_the_table_definitions,
    test_money_and_times_come_back_exact_and_timezone_aware,
)

NOW = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """Every test of this module runs on a fresh MariaDB database."""
    with database("mariadb", tmp_path) as url:
        yield url


@pytest.fixture
def pg_url(db_url: str) -> str:
    """The tests written for a server database (replicas sharing one, where SQLite has
    one writer) take MariaDB here."""
    return db_url


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
