"""The output writers: each format written to standard output and to a file, read back
with a real reader, on SQLite and on Postgres."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result
from sqlalchemy import Engine

from syncer import reports, writers
from syncer.db import make_engine
from syncer.simulator import Simulator, generate
from tests.conftest import ANCHOR, LICENSE, TOKEN
from tests.helpers import cli_env, run_cli
from tests.test_reports import backfill, database

BRUSSELS = ZoneInfo("Europe/Brussels")


@dataclass
class Shop:
    url: str
    base_url: str
    engine: Engine
    cwd: Path

    def report(self, *args: str) -> Result:
        return run_cli(["report", *args], cli_env(self.url, self.base_url), cwd=self.cwd)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """One shop's history, backfilled from the simulator."""
    tmp = tmp_path_factory.mktemp(f"writers-{request.param}")
    sim = Simulator(generate(seed=3, orders=400, anchor=ANCHOR), licenses={LICENSE: TOKEN})
    with database(request.param, tmp) as url:
        sim.start()
        try:
            backfill(url, sim, tmp, LICENSE)
            engine = make_engine(url)
            yield Shop(url, sim.base_url, engine, tmp)
            engine.dispose()
        finally:
            sim.stop()


# --- every format to a file, as standard output shows it --------------------------------------


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_out_writes_the_file_that_standard_output_shows(shop: Shop, tmp_path: Path, fmt: str) -> None:
    shown = shop.report("vat", "--format", fmt)
    assert shown.exit_code == 0, shown.output
    path = tmp_path / f"vat.{fmt}"
    written = shop.report("vat", "--format", fmt, "--out", str(path))
    assert written.exit_code == 0, written.output
    assert written.stdout == ""  # the rows went to the file, not to the screen
    rows = len(reports.fetch(shop.engine, reports.get("vat")))
    assert f"report_vat: {rows} row(s) written to {path}" in written.stderr
    assert path.read_bytes() == shown.stdout_bytes
    assert list(tmp_path.iterdir()) == [path]  # no partial file left beside it


def test_out_suffix_chooses_the_format(shop: Shop, tmp_path: Path) -> None:
    result = shop.report("payments", "--out", str(tmp_path / "payments.json"))
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "payments.json").read_text(encoding="utf-8"))
    expected = reports.fetch(shop.engine, reports.get("payments"))
    assert [(r["day"], r["method"], Decimal(r["amount"])) for r in rows] == [
        (r["day"].isoformat(), r["method"], r["amount"]) for r in expected]
    result = shop.report("payments", "--out", str(tmp_path / "payments.csv"))
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO((tmp_path / "payments.csv").read_text(encoding="utf-8"))))
    assert [Decimal(r["amount"]) for r in table] == [r["amount"] for r in expected]


def test_out_into_a_missing_folder_is_a_usage_error(shop: Shop, tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "vat.csv"
    result = shop.report("vat", "--format", "csv", "--out", str(path))
    assert result.exit_code == 2, result.output
    assert f"--out {path}: cannot write it" in result.output
    assert list(tmp_path.iterdir()) == []


# --- the writers on hand-made rows --------------------------------------------------------------


LABOR = reports.get("report_labor")
SHIFT = {"license": "shop", "day": dt.date(2026, 10, 25), "user_id": 7, "username": "Léa",
         "clock_in": dt.datetime(2026, 10, 24, 23, 0, tzinfo=dt.UTC),   # 01:00 summer time
         "clock_out": dt.datetime(2026, 10, 25, 8, 0, tzinfo=dt.UTC),   # 09:00 winter time
         "hours_worked": Decimal("9.00")}


def written(fmt: str, rows: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    writers.get(fmt).write(writers.Extract(LABOR, rows, BRUSSELS), out)
    return out.getvalue()


def test_csv_is_rfc_4180_with_iso_days_and_local_times_with_their_offset() -> None:
    assert written("csv", [SHIFT, {**SHIFT, "username": 'Jan "de; baas", jr', "clock_out": None}]) == (
        "license,day,user_id,username,clock_in,clock_out,hours_worked\n"
        "shop,2026-10-25,7,Léa,2026-10-25T01:00:00+02:00,2026-10-25T09:00:00+01:00,9.00\n"
        'shop,2026-10-25,7,"Jan ""de; baas"", jr",2026-10-25T01:00:00+02:00,,9.00\n'
    ).encode()


def test_json_keeps_amounts_as_strings_and_counts_as_numbers() -> None:
    assert json.loads(written("json", [SHIFT])) == [{
        "license": "shop", "day": "2026-10-25", "user_id": 7, "username": "Léa",
        "clock_in": "2026-10-25T01:00:00+02:00", "clock_out": "2026-10-25T09:00:00+01:00",
        "hours_worked": "9.00"}]


def test_a_table_names_the_zone_of_every_time_and_says_when_it_is_empty() -> None:
    text = written("table", [SHIFT]).decode("utf-8")
    assert "report_labor, license shop" in text
    assert "2026-10-25 01:00 CEST" in text and "2026-10-25 09:00 CET" in text
    assert "no rows" in written("table", []).decode("utf-8")


def test_a_failed_write_keeps_the_file_that_was_there(tmp_path: Path) -> None:
    path = tmp_path / "labor.csv"
    path.write_text("yesterday's report\n")

    def half_then_fail(extract: writers.Extract, out: BinaryIO) -> None:
        writers.write_csv(extract, out)
        raise OSError(28, "No space left on device")

    broken = writers.Writer("csv", ".csv", half_then_fail, "CSV that fails half-way")
    with pytest.raises(OSError, match="No space"):
        writers.write(broken, writers.Extract(LABOR, [SHIFT], BRUSSELS), path)
    assert path.read_text() == "yesterday's report\n"
    assert list(tmp_path.iterdir()) == [path]


def test_a_file_suffix_names_its_format() -> None:
    assert [writers.for_path(Path(name)) for name in ("a.csv", "b.JSON", "c.txt", "d.dat")] == [
        writers.get("csv"), writers.get("json"), writers.get("table"), None]
