"""What the planner learns from a license's stored orders: its sales profile, and its
sales of the last hour.

The profile (`planner.SalesProfile`) is orders per local weekday and hour over the last
`planner.PROFILE_WEEKS` weeks, grouped in SQL by the local date and hour each order
was stored with (one query for any number of licenses, on the orders' (license,
business_date) index). It changes once a day: a process keeps it per license and API day
(`ProfileCache`). The last hour's sales are one indexed count, read after each orders
pull. Nothing is stored: no table, no migration.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from syncer import tables as t
from syncer.ledger import api_day
from syncer.planner import PROFILE_WEEKS, RECENT_SPAN, OpeningHours, SalesProfile, learn_profile


def hourly_orders(conn: Connection, names: Sequence[str], first: dt.date,
                  until: dt.date) -> dict[str, dict[tuple[dt.date, int], int]]:
    """Orders per license and local (date, hour) of the days [first, until): the local
    date and hour each order was stored with (`business_date`, `local_hour`)."""
    orders = t.orders.c
    rows = conn.execute(
        select(orders.license, orders.business_date, orders.local_hour, func.count())
        .where(orders.license.in_(list(names)), orders.business_date >= first,
               orders.business_date < until, orders.local_hour.is_not(None))
        .group_by(orders.license, orders.business_date, orders.local_hour))
    out: dict[str, dict[tuple[dt.date, int], int]] = defaultdict(dict)
    for license, day, hour, count in rows:
        out[license][(day, int(hour))] = int(count)
    return out


def profiles(conn: Connection, names: Sequence[str], now: dt.datetime, tz: ZoneInfo,
             hint: OpeningHours) -> dict[str, SalesProfile]:
    """Each license's profile as of `now`'s API day, from the weeks before it."""
    today = api_day(now, tz)
    counts = hourly_orders(conn, names, today - dt.timedelta(days=7 * PROFILE_WEEKS), today)
    return {name: learn_profile(counts.get(name, {}), today=today, hint=hint, tz=tz)
            for name in names}


def recent_sales(conn: Connection, names: Sequence[str], now: dt.datetime) -> dict[str, int]:
    """Orders per license with `ordered_at` in the last `RECENT_SPAN`."""
    orders = t.orders.c
    rows = conn.execute(
        select(orders.license, func.count())
        .where(orders.license.in_(list(names)), orders.ordered_at > now - RECENT_SPAN,
               orders.ordered_at <= now)
        .group_by(orders.license))
    found = {license: int(count) for license, count in rows}
    return {name: found.get(name, 0) for name in names}


class ProfileCache:
    """Profiles kept for their API day: learned again the first time a new day asks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[dt.date, str, str] | None = None
        self._kept: dict[str, SalesProfile] = {}

    def get(self, conn: Connection, names: Sequence[str], now: dt.datetime, tz: ZoneInfo,
            hint: OpeningHours) -> dict[str, SalesProfile]:
        key = (api_day(now, tz), tz.key, repr(hint))
        with self._lock:
            if key != self._key:
                self._key, self._kept = key, {}
            missing = [name for name in names if name not in self._kept]
        if missing:
            learned = profiles(conn, missing, now, tz, hint)
            with self._lock:
                if key == self._key:
                    self._kept.update(learned)
        with self._lock:
            kept = dict(self._kept)
        if any(name not in kept for name in names):  # the day turned meanwhile
            kept = {**profiles(conn, names, now, tz, hint), **kept}
        return {name: kept[name] for name in names}
