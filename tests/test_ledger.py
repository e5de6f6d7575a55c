"""The ledger's spend: one statement that counts a request only for a license that is
not stopped, on both databases (conftest's `engine`: migrated, per `db_url`)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from syncer import tables as t
from syncer.client import BudgetExhausted, LicenseStopped, Outcome, RequestInfo
from syncer.db import upsert
from syncer.ledger import Ledger
from tests.conftest import LICENSE

BRUSSELS = ZoneInfo("Europe/Brussels")
INFO = RequestInfo(LICENSE, "get-orders", {}, 1)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 10, 27, 14, 0, tzinfo=BRUSSELS)

    def __call__(self) -> dt.datetime:
        return self.now


def spent(engine: Engine, day: dt.date) -> int | None:
    budget = t.request_budget.c
    with engine.connect() as conn:
        return conn.execute(select(budget.spent).where(budget.license == LICENSE,
                                                       budget.day == day)).scalar()


def set_state(engine: Engine, clock: Clock, **values: object) -> None:
    with engine.begin() as conn:
        upsert(conn, t.license_state, {"license": LICENSE, "updated_at": clock(), **values})


def accepted_ledger(engine: Engine, clock: Clock, cap: int = 3) -> Ledger:
    """A ledger whose credentials the API accepted once (its first request, spent), so
    its next requests take the one-statement spend, not the probe's checks."""
    ledger = Ledger(engine, LICENSE, fingerprint="f" * 16, tz=BRUSSELS, cap=cap, purpose="run",
                    clock=clock)
    ledger.after_response(ledger.before_send(INFO), Outcome("ok", None, 200, 5))
    return ledger


def test_a_stopped_license_spends_nothing_and_is_told_why(engine: Engine) -> None:
    clock = Clock()
    ledger = accepted_ledger(engine, clock)
    today = clock().date()
    assert spent(engine, today) == 1

    set_state(engine, clock, blocked_until=clock() + dt.timedelta(minutes=30),
              blocked_reason="the API blocked this IP (1004)")
    with pytest.raises(LicenseStopped, match=r"blocked this IP .*waiting until 2026-10-27 14:30 CET"):
        ledger.before_send(INFO)
    assert spent(engine, today) == 1

    clock.now += dt.timedelta(minutes=31)  # the block is over: the next request counts
    ledger.after_response(ledger.before_send(INFO), Outcome("ok", None, 200, 5))
    assert spent(engine, today) == 2 and ledger.last_spent == (today, 2)

    set_state(engine, clock, auth_rejected_fingerprint=ledger.fingerprint,
              auth_rejected_reason="API error 1002: wrong token")
    with pytest.raises(LicenseStopped, match="credentials were refused"):
        ledger.before_send(INFO)
    clock.now += dt.timedelta(days=1)  # the day's first request: no budget row is made either
    with pytest.raises(LicenseStopped, match="credentials were refused"):
        ledger.before_send(INFO)
    assert spent(engine, today) == 2 and spent(engine, clock().date()) is None
    with engine.connect() as conn:
        assert len(conn.execute(select(t.request_ledger.c.id)).all()) == 2


def test_the_spend_stops_at_the_cap_and_knows_a_stored_refusal(engine: Engine) -> None:
    clock = Clock()
    ledger = accepted_ledger(engine, clock, cap=3)
    # A refusal of other credentials (the token changed since): this one may send, and
    # its ticket says a refusal is stored, so an accepted answer clears it.
    set_state(engine, clock, auth_rejected_fingerprint="0" * 16,
              auth_rejected_reason="API error 1002: wrong token")
    ledger.after_response(ledger.before_send(INFO), Outcome("ok", None, 200, 5))
    with engine.connect() as conn:
        assert conn.execute(select(t.license_state.c.auth_rejected_fingerprint)).scalar() is None
    ledger.before_send(INFO)
    assert spent(engine, clock().date()) == 3
    with pytest.raises(BudgetExhausted, match="3 requests spent today"):
        ledger.before_send(INFO)
    assert spent(engine, clock().date()) == 3
