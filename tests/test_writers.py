"""The output writers: each format written to standard output and to a file, read back
with a real reader, on SQLite and on Postgres."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlalchemy import Engine

from syncer import reports, writers
from syncer import tables as t
from syncer.config import CsvDialectName
from syncer.db import make_engine
from tests.conftest import ANCHOR, LICENSE, SUITE_DATABASES
from tests.helpers import backfilled, cli_env, run_cli

BRUSSELS = ZoneInfo("Europe/Brussels")


@dataclass
class Shop:
    url: str
    base_url: str
    engine: Engine
    cwd: Path

    def report(self, *args: str) -> Result:
        return run_cli(["report", *args], cli_env(self.url, self.base_url), cwd=self.cwd)


@pytest.fixture(scope="module", params=SUITE_DATABASES)
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """One shop's history, backfilled from the simulator."""
    tmp = tmp_path_factory.mktemp(f"writers-{request.param}")
    with backfilled(request.param, tmp, seed=3, orders=400, anchor=ANCHOR) as (url, sim):
        engine = make_engine(url)
        yield Shop(url, sim.base_url, engine, tmp)
        engine.dispose()


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


def test_every_csv_dialect_the_config_accepts_has_a_writer() -> None:
    assert set(typing.get_args(CsvDialectName)) == set(writers.CSV_DIALECTS)
    for name in writers.CSV_DIALECTS:
        assert writers.get("csv", csv=name).suffix == ".csv"


def test_a_file_suffix_names_its_format() -> None:
    assert [writers.for_path(Path(name)) for name in ("a.csv", "b.JSON", "c.txt", "d.dat")] == [
        writers.get("csv"), writers.get("json"), writers.get("table"), None]


def test_excel_be_csv_is_what_a_belgian_spreadsheet_opens() -> None:
    out = io.BytesIO()
    writers.get("csv", csv="excel-be").write(writers.Extract(LABOR, [SHIFT], BRUSSELS), out)
    assert out.getvalue() == (
        "\ufefflicense;day;user_id;username;clock_in (Europe/Brussels);"
        "clock_out (Europe/Brussels);hours_worked\r\n"
        "shop;25/10/2026;7;Léa;25/10/2026 01:00:00;25/10/2026 09:00:00;9,00\r\n").encode()


# --- spreadsheets: typed cells, the Belgian CSV dialect, LibreOffice ------------------------------

CENT = Decimal("0.01")


def as_decimal(value: Any) -> Decimal:
    """A spreadsheet's number as the report's Decimal (a double holds every cent exactly
    enough: its shortest repr is the amount)."""
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    return Decimal(repr(value))


def test_xlsx_cells_are_typed_and_equal_the_report_to_the_cent(shop: Shop, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    path = tmp_path / "tickets.xlsx"
    result = shop.report("tickets", "--license", LICENSE, "--from", "2026-10-20", "--to", "2026-10-26",
                         "--out", str(path))
    assert result.exit_code == 0, result.output
    expected = reports.fetch(shop.engine, reports.get("tickets"), license=LICENSE,
                             since=dt.date(2026, 10, 20), until=dt.date(2026, 10, 26))
    assert expected
    sheet = load_workbook(path).active
    assert sheet is not None
    block = {row[0]: row[1] for row in sheet.iter_rows(min_row=1, max_row=5, max_col=2, values_only=True)}
    with shop.engine.connect() as conn:
        synced_at = conn.execute(sa.select(t.sync_state.c.last_success_at).where(
            t.sync_state.c.license == LICENSE, t.sync_state.c.resource == "orders")).scalar_one()
    assert block["license(s)"] == LICENSE
    assert block["period"] == "business days 2026-10-20 to 2026-10-26, inclusive"
    assert str(block["made at"]).endswith("(Europe/Brussels)")
    assert block["data as fresh as"] == (
        f"{LICENSE}: orders last synced {synced_at.astimezone(BRUSSELS):%Y-%m-%d %H:%M %Z}")
    headings = [c.value for c in sheet[7]]
    assert headings[:6] == ["license", "day", "order_id", "register_id", "user_id",
                            "ordered_at (Europe/Brussels)"]
    assert sheet.freeze_panes == "A8"
    assert sheet.auto_filter.ref == f"A7:Q{7 + len(expected)}"
    assert sheet.max_row == 7 + len(expected)
    names = [c.name for c in reports.get("tickets").view.columns]
    for cells, row in zip(sheet.iter_rows(min_row=8), expected, strict=True):
        got = dict(zip(names, cells, strict=True))
        assert got["license"].value == LICENSE and got["license"].data_type == "s"
        assert got["day"].is_date and got["day"].value.date() == row["day"]
        assert got["ordered_at"].is_date
        assert got["ordered_at"].value == row["ordered_at"].astimezone(BRUSSELS).replace(tzinfo=None)
        for name in ("total", "lines_total", "base", "vat", "difference", "paid", "payment_difference"):
            assert got[name].number_format == "#,##0.00"
            assert as_decimal(got[name].value) == row[name], (name, row)
        assert as_decimal(got["items_sold"].value) == row["items_sold"]
        assert got["order_id"].value == row["order_id"]


def test_excel_be_is_the_configured_default_and_plain_csv_stays_for_scripts(
        shop: Shop, tmp_path: Path) -> None:
    config = tmp_path / "syncer.toml"
    config.write_text('[reports]\ncsv = "excel-be"\n')
    env = cli_env(shop.url, shop.base_url)
    result = run_cli(["--config", str(config), "report", "vat", "--format", "csv"], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b"\xef\xbb\xbflicense;day;tax_rate;base;vat;total\r\n")
    rows = list(csv.DictReader(io.StringIO(result.stdout_bytes.decode("utf-8-sig"), newline=""),
                               delimiter=";"))
    expected = reports.fetch(shop.engine, reports.get("vat"))
    assert [(dt.datetime.strptime(r["day"], "%d/%m/%Y").date(), Decimal(r["total"].replace(",", ".")))
            for r in rows] == [(r["day"], r["total"]) for r in expected]
    assert any("," in r["total"] for r in rows) and not any("." in r["total"] for r in rows)
    plain = run_cli(["--config", str(config), "report", "vat", "--csv", "rfc4180"], env, cwd=tmp_path)
    assert plain.exit_code == 0, plain.output
    assert plain.stdout_bytes == shop.report("vat", "--format", "csv").stdout_bytes
    assert plain.stdout.startswith("license,day,tax_rate,base,vat,total\n")


def test_unknown_csv_dialect_in_the_config_names_the_key_and_the_file(shop: Shop, tmp_path: Path) -> None:
    config = tmp_path / "syncer.toml"
    config.write_text('[reports]\ncsv = "excel"\n')
    result = run_cli(["--config", str(config), "report", "vat"], cli_env(shop.url, shop.base_url),
                     cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert f"invalid config in {config}: reports.csv:" in result.output
    assert "'rfc4180' or 'excel-be'" in result.output


def test_a_workbook_needs_a_file_and_a_csv_dialect_needs_csv(shop: Shop, tmp_path: Path) -> None:
    result = shop.report("vat", "--format", "xlsx")
    assert result.exit_code == 2
    assert "--format xlsx writes a file: add --out FILE" in result.output
    result = shop.report("vat", "--format", "json", "--csv", "excel-be")
    assert result.exit_code == 2
    assert "--csv excel-be applies to CSV, not to --format json" in result.output


def soffice() -> str:
    """LibreOffice's command; a test that needs it fails without it, unless
    SYNCER_TEST_NO_OFFICE=1 says this machine has none (then it is skipped)."""
    found = shutil.which("soffice") or shutil.which("libreoffice")
    if found is None:
        if os.environ.get("SYNCER_TEST_NO_OFFICE") == "1":
            pytest.skip("no LibreOffice (SYNCER_TEST_NO_OFFICE=1); apt-get install libreoffice-calc-nogui")
        pytest.fail("LibreOffice (soffice) is not on PATH: apt-get install libreoffice-calc-nogui, "
                    "or set SYNCER_TEST_NO_OFFICE=1 to skip")
    return found


def convert(office: str, source: Path, out_dir: Path, profile: Path, *filter_options: str) -> Path:
    """`source` converted to xlsx by LibreOffice headless, in a profile of its own."""
    subprocess.run([office, f"-env:UserInstallation={profile.as_uri()}", "--headless",
                    *filter_options, "--convert-to", "xlsx", "--outdir", str(out_dir), str(source)],
                   check=True, capture_output=True, timeout=120)
    converted = out_dir / f"{source.stem}.xlsx"
    assert converted.exists(), f"LibreOffice wrote no {converted.name}"
    return converted


def test_libreoffice_in_nl_be_opens_excel_be_csv_and_sums_the_amounts_to_the_cent(
        shop: Shop, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    office = soffice()
    path = tmp_path / "vat.csv"
    result = shop.report("vat", "--csv", "excel-be", "--out", str(path))
    assert result.exit_code == 0, result.output
    expected = reports.fetch(shop.engine, reports.get("vat"))
    # The import as a double-click in a Belgian LibreOffice does it: `;` separated, `"`
    # quoted, the character set left to the file (its BOM), locale nl-BE (2067), special
    # numbers (dates) detected.
    opened = convert(office, path, tmp_path / "opened", tmp_path / "profile",
                     "--infilter=CSV:59,34,,1,,2067,false,true")
    book = load_workbook(opened)
    sheet = book.active
    assert sheet is not None
    assert [c.value for c in sheet[1]] == ["license", "day", "tax_rate", "base", "vat", "total"]
    last = sheet.max_row
    assert last == 1 + len(expected)
    for cells, row in zip(sheet.iter_rows(min_row=2), expected, strict=True):
        assert cells[1].is_date and cells[1].value.date() == row["day"]  # day first, not month
        assert as_decimal(cells[5].value) == row["total"]
    # LibreOffice's own SUM over the column, recalculated by LibreOffice.
    sheet.cell(last + 2, 6, f"=SUM(F2:F{last})")
    book.save(tmp_path / "summed.xlsx")
    summed = convert(office, tmp_path / "summed.xlsx", tmp_path / "recalculated", tmp_path / "profile")
    total = load_workbook(summed, data_only=True).active.cell(last + 2, 6).value
    assert as_decimal(total).quantize(CENT) == sum(r["total"] for r in expected)
