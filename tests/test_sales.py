"""The sales profile read from stored orders, and the plan's shape in `syncer status`,
on real SQLite and Postgres."""

from __future__ import annotations

import datetime as dt

from pydantic import SecretStr
from sqlalchemy import Engine, insert

from syncer import sales, status
from syncer import tables as t
from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
from syncer.planner import OpeningHours

TZ_NAME = "Europe/Brussels"
TODAY = dt.date(2026, 3, 18)  # a Wednesday


def _orders(engine: Engine, license: str, per_hour: dict[int, int], days: int) -> None:
    rows = []
    next_id = 1
    for back in range(1, days + 1):
        day = TODAY - dt.timedelta(days=back)
        day_utc = dt.datetime.combine(day, dt.time(), dt.UTC)
        for hour, count in per_hour.items():
            for _ in range(count):
                rows.append({"license": license, "id": next_id, "business_date": day,
                             "local_hour": hour, "content_hash": "x" * 32, "synced_at": day_utc,
                             "ordered_at": dt.datetime.combine(day, dt.time(hour), dt.UTC)})
                next_id += 1
    with engine.begin() as conn:
        conn.execute(insert(t.orders), rows)


def test_profile_from_stored_orders_and_the_plan_in_status(engine: Engine) -> None:
    _orders(engine, "bar", {20: 3, 22: 6, 1: 2}, days=14)
    _orders(engine, "other", {12: 1}, days=3)  # another license's sales do not count
    config = Config(database=DatabaseConfig(url=str(engine.url)),
                    api=ApiConfig(base_url="http://127.0.0.1:9", timezone=TZ_NAME),
                    licenses=(LicenseConfig(name="bar", token=SecretStr("token-bar-0001")),
                              LicenseConfig(name="new", token=SecretStr("token-new-0001"))))
    tz = config.api.tz
    hint = OpeningHours.parse("10:00-23:00")
    noon = dt.datetime.combine(TODAY, dt.time(12), tz)
    with engine.connect() as conn:
        found = sales.profiles(conn, ["bar", "new"], noon, tz, hint)
    bar, new = found["bar"], found["new"]
    assert bar.days == 14 and new.days == 0
    assert bar.expected[2][22] == 6 and bar.expected[2][12] == 0
    assert bar.open[2][1] and bar.open[2][22]  # sold in, though not configured
    assert not bar.open[2][12]  # configured, never sold in over 14 days: the history wins
    assert new.open[2][12] and not new.open[2][1]  # nothing learned: the configured hours
    assert not bar.open[2][4]

    built = status.build(engine, config, now=noon)
    shapes = {lic.name: lic.plan_ahead for lic in built.licenses}
    at = {h.start.astimezone(tz).hour: h for h in shapes["bar"]}
    assert at[22].sales == 6 and at[12].sales == 0
    assert at[22].requests > at[12].requests  # the orders poll where the sales are
    assert all(h.sales is None for h in shapes["new"])  # nothing learned yet
    shown = status.plan_shape(shapes["bar"], tz)
    assert "22:00" in shown and "6 orders expected" in shown
    (bar_json,) = [lic for lic in status.to_json(built)["licenses"] if lic["license"] == "bar"]
    assert {"hour": at[22].start.isoformat(), "requests": round(at[22].requests, 1), "open": True,
            "expected_orders": 6.0} in bar_json["plan_ahead"]
