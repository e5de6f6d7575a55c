"""`syncer export`: the pack read back with openpyxl, every sheet's rows and totals equal to
the report views to the cent, on SQLite and on Postgres, through the real CLI."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Engine, delete

from syncer import audit, load, reports
from syncer import tables as t
from syncer.config import load_config
from syncer.db import make_engine
from tests.conftest import LICENSE, SUITE_DATABASES
from tests.helpers import backfilled, cli_env, run_cli
from tests.test_writers import BRUSSELS, as_decimal

# Data from 27 October to 2 November: two months, one quarter.
ANCHOR = dt.date(2026, 11, 2)
OCTOBER = (dt.date(2026, 10, 1), dt.date(2026, 10, 31))
Q4 = (dt.date(2026, 10, 1), dt.date(2026, 12, 31))
SHEETS = ["summary", "receipts book", "VAT per rate", "payments", "register days", "documents",
          "tickets"]
# The sheets that are a view's rows as they are.
VIEW_SHEETS = {"payments": "payments", "register days": "register_day",
               "documents": "documents", "tickets": "tickets"}
CLOSED = '[schedule]\nopening_hours = "closed"\n'


@dataclass
class Shop:
    url: str
    base_url: str
    engine: Engine
    cwd: Path

    def export(self, *args: str, cwd: Path | None = None) -> Result:
        return run_cli(["export", *args], cli_env(self.url, self.base_url), cwd=cwd or self.cwd)

    def view(self, name: str, since: dt.date, until: dt.date) -> list[dict[str, Any]]:
        return reports.fetch(self.engine, reports.get(name), since=since, until=until,
                             license=LICENSE)


@pytest.fixture(scope="module", params=SUITE_DATABASES)
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp(f"export-{request.param}")
    with backfilled(request.param, tmp, seed=5, orders=1500, anchor=ANCHOR) as (url, sim):
        engine = make_engine(url)
        yield Shop(url, sim.base_url, engine, tmp)
        engine.dispose()


def table(sheet: Any) -> list[dict[str, Any]]:
    """The rows under a sheet's heading row (the row after the first blank one), up to the
    next blank row, as heading -> cell."""
    rows = list(sheet.iter_rows())
    top = next(n for n, row in enumerate(rows) if row[0].value is None) + 1
    headings = [c.value for c in rows[top]]
    out = []
    for row in rows[top + 1:]:
        if all(c.value is None for c in row):
            break
        out.append(dict(zip(headings, row, strict=True)))
    return out


def block(sheet: Any) -> dict[str, str]:
    """The (label, text) lines above the table."""
    out: dict[str, str] = {}
    for label, text in sheet.iter_rows(max_col=2, values_only=True):
        if label is None:
            return out
        out[label] = text
    return out


def same(cell: Any, value: Any, name: str) -> None:
    """A cell holds the view's value, typed: amounts numbers to the cent, days dates, times
    local datetimes, text text."""
    if value is None:
        assert cell.value is None, name
    elif isinstance(value, Decimal):
        assert as_decimal(cell.value) == value, name
    elif isinstance(value, dt.datetime):
        assert cell.is_date and cell.value == value.astimezone(BRUSSELS).replace(tzinfo=None), name
    elif isinstance(value, dt.date):
        assert cell.is_date and cell.value.date() == value, name
    else:
        assert cell.value == value, name


def heading_of(name: str) -> str:
    return f"{name} (Europe/Brussels)" if name.endswith(("_at", "clock_in", "clock_out")) else name


def rows_equal(got: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]]) -> None:
    assert len(got) == len(expected)
    for cells, row in zip(got, expected, strict=True):
        for name, value in row.items():
            same(cells[heading_of(name)], value, name)


def summed(rows: Sequence[Mapping[str, Any]], key: Sequence[str], name: str) -> dict[Any, Decimal]:
    out: dict[Any, Decimal] = defaultdict(Decimal)
    for row in rows:
        out[tuple(row[k] for k in key)] += row[name]
    return dict(out)


def pack(shop: Shop, tmp_path: Path, *args: str) -> Any:
    from openpyxl import load_workbook

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pack.xlsx"
    result = shop.export(*args, "--out", str(path))
    assert result.exit_code == 0, result.output
    assert f"written to {path}" in result.output
    return load_workbook(path)


@pytest.mark.parametrize(("args", "span", "grain"), [
    (("--period", "2026-10"), OCTOBER, "month"),
    (("--period", "2026-Q4"), Q4, "quarter"),
    (("--from", "2026-10-01", "--to", "2026-12-31"), Q4, "month"),
])
def test_every_sheet_equals_the_views_to_the_cent(
        shop: Shop, tmp_path: Path, args: tuple[str, ...], span: tuple[dt.date, dt.date],
        grain: str) -> None:
    book = pack(shop, tmp_path, *args)
    assert book.sheetnames == SHEETS
    since, until = span

    def view(name: str) -> list[dict[str, Any]]:
        return shop.view(name, since, until)

    # The summary: the totals per source and rate are the VAT views' rows added up ...
    totals = table(book["summary"])
    ticket_vat, document_vat = view("vat"), view("document_vat")
    assert ticket_vat and document_vat
    expected: dict[tuple[str, Decimal], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for source, rows in (("tickets", ticket_vat), *(
            (kind + "s", [r for r in document_vat if r["kind"] == kind])
            for kind in ("invoice", "credit_note"))):
        for row in rows:
            into = expected[source, row["tax_rate"]]
            for n, name in enumerate(("base", "vat", "total")):
                into[n] += row[name]
    named = {"tickets": "tickets", "invoices": "invoices", "credit notes": "credit_notes"}
    per_rate = {(named[r["source"].value], as_decimal(r["rate %"].value)):
                [as_decimal(r[name].value) for name in ("base", "VAT", "total")]
                for r in totals[:-3]}
    assert per_rate == dict(expected)
    # ... a credit note counts negative, and every rate of 6, 12, 21 % names its box.
    assert all(v[2] < 0 for (source, _), v in per_rate.items() if source == "credit_notes")
    for r in totals[:-3]:
        percent, source = as_decimal(r["rate %"].value), named[r["source"].value]
        if percent in (6, 12, 21):
            assert r["base box"].value == ("49" if source == "credit_notes" else
                                           {6: "01", 12: "02", 21: "03"}[int(percent)])
            assert r["VAT box"].value == ("64" if source == "credit_notes" else "54")
    # The totals rows: tickets (counted once each), documents that are turnover, both.
    tickets, documents = view("tickets"), view("documents")
    turnover = [d for d in documents if d["counted_as"] == "turnover"]
    # The data has every case: credit notes, quotes, documents made from a ticket.
    assert {(d["kind"], d["counted_as"]) for d in documents} >= {
        ("invoice", "turnover"), ("credit_note", "turnover"), ("quote", "not_a_sale"),
        ("invoice", "in_tickets")}
    assert [r["source"].value for r in totals[-3:]] == ["tickets total", "documents total",
                                                        "turnover"]
    assert [r["items"].value for r in totals[-3:]] == [
        len(tickets), len(turnover), len(tickets) + len(turnover)]
    tickets_total = sum((r["total"] for r in ticket_vat), Decimal(0))
    documents_total = sum((r["total"] for r in document_vat), Decimal(0))
    assert [as_decimal(r["total"].value) for r in totals[-3:]] == [
        tickets_total, documents_total, tickets_total + documents_total]
    assert tickets_total == sum((t["lines_total"] for t in tickets), Decimal(0))
    assert documents_total == sum((d["total"] for d in turnover), Decimal(0))
    assert all(r["total"].font.b for r in totals[-3:])

    # The receipts book: per day and rate, per day and method, the view's amounts.
    book_rows = view("receipts_book")
    receipts = table(book["receipts book"])
    assert [r["day"].value.date() for r in receipts] == sorted({r["day"] for r in book_rows})
    got: dict[tuple[Any, ...], Decimal] = {}
    for r in receipts:
        day = r["day"].value.date()
        for heading, cell in r.items():
            if heading != "day":
                got[day, heading] = as_decimal(cell.value)
    for row in book_rows:
        if row["position"] == 1:
            rate = f"{row['tax_rate'].normalize():f} %"
            assert got[row["day"], f"base {rate}"] == row["base"]
            assert got[row["day"], f"VAT {rate}"] == row["vat"]
            assert got[row["day"], f"total {rate}"] == row["amount"]
        else:
            assert got[row["day"], f"paid {row['method']}"] == row["amount"]
    for day, amount in summed([r for r in book_rows if r["position"] == 1], ("day",), "amount").items():
        assert got[day[0], "turnover"] == amount
    for day, amount in summed([r for r in book_rows if r["position"] == 2], ("day",), "amount").items():
        assert got[day[0], "paid"] == amount

    # VAT per rate: the period view's rows; the other sheets: their view's rows, cell by cell.
    rows_equal(table(book["VAT per rate"]), view(f"vat_{grain}"))
    for sheet, name in VIEW_SHEETS.items():
        expected_rows = view(name)
        assert expected_rows, name
        rows_equal(table(book[sheet]), expected_rows)


@pytest.fixture
def with_a_problem(shop: Shop) -> Iterator[None]:
    """A record in the quarantine while the test runs: an open problem the audit reports
    for any period (the module's shop is otherwise clean)."""
    now = dt.datetime.now(dt.UTC)
    with shop.engine.begin() as conn:
        load.quarantine(conn, LICENSE, "orders",
                        [load.Rejected({"id": 999999, "date": "not a date"}, "date: not a date",
                                       "999999")], now)
    try:
        yield
    finally:
        with shop.engine.begin() as conn:
            conn.execute(delete(t.quarantine).where(t.quarantine.c.license == LICENSE))


def test_the_first_sheet_says_the_period_the_license_and_the_audit(
        shop: Shop, tmp_path: Path, with_a_problem: None) -> None:
    book = pack(shop, tmp_path, "--period", "2026-10")
    lines = block(book["summary"])
    assert lines["period"] == "2026-10 (business days 1 October 2026 to 31 October 2026, inclusive)"
    assert lines["accounting pack"] == f"CloudPOS sales, license {LICENSE}, 2026-10"
    assert str(lines["made at"]).endswith("(Europe/Brussels)")
    assert str(lines["data as fresh as"]).startswith(f"{LICENSE}: orders last synced ")
    assert str(lines["data as fresh as"]).endswith("(Europe/Brussels)")
    assert "NOT a filed return" in lines["VAT return"]
    # An open problem is said on the first sheet in words, and listed under the totals.
    config = load_config(None, cli_env(shop.url, shop.base_url))
    result = audit.run(shop.engine, config, license=LICENSE, since=OCTOBER[0], until=OCTOBER[1])
    assert result["problems"] >= 1
    assert lines["audit"].startswith(f"{result['problems']} OPEN PROBLEM(S): these figures may be "
                                     "incomplete or wrong")
    texts = [text for _, text in book["summary"].iter_rows(max_col=2, values_only=True) if text]
    assert "orders record 999999 in quarantine: date: not a date" in texts


def test_a_period_without_open_problems_says_so(shop: Shop, tmp_path: Path) -> None:
    (tmp_path / "syncer.toml").write_text(CLOSED)
    from openpyxl import load_workbook

    result = shop.export("--period", "2026-10", "--out", "pack.xlsx", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "open problem" not in result.output
    lines = block(load_workbook(tmp_path / "pack.xlsx")["summary"])
    assert lines["audit"].startswith("no open problems in this period")


def test_the_default_file_is_named_after_the_license_and_the_period(shop: Shop, tmp_path: Path) -> None:
    (tmp_path / "syncer.toml").write_text(CLOSED)
    result = shop.export("--period", "2026-q4", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"pack-{LICENSE}-2026-Q4.xlsx").exists()


@pytest.mark.parametrize(("args", "message"), [
    ((), "choose the pack's period: --period 2026-11 (or 2026-Q4), or --from and --to"),
    (("--period", "2026-10", "--from", "2026-10-01"), "choose the pack's period"),
    (("--period", "2026-13"), "--period '2026-13' is not a month (2026-11) or a quarter (2026-Q4)"),
    (("--period", "Q4"), "is not a month"),
    (("--from", "2026-10-01"), "--from and --to go together"),
    (("--from", "2026-10-02", "--to", "2026-10-31"), "--from 2026-10-02 is not the first day of a month"),
    (("--from", "2026-10-01", "--to", "2026-10-30"), "--to 2026-10-30 is not the last day of a month"),
    (("--from", "2026-11-01", "--to", "2026-10-31"), "--from 2026-11-01 is after --to 2026-10-31"),
    (("--period", "2026-10", "--license", "nope"), "no data for license 'nope' in this database"),
])
def test_a_wrong_period_or_license_is_a_usage_error_that_writes_nothing(
        shop: Shop, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = shop.export(*args, cwd=tmp_path)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []


# --- the pack's language ---------------------------------------------------------------------


def cells(book: Any) -> dict[str, list[list[Any]]]:
    return {name: [list(row) for row in book[name].iter_rows(values_only=True)]
            for name in book.sheetnames}


def test_a_pack_in_dutch_holds_the_same_figures_in_dutch_words(
        shop: Shop, tmp_path: Path, with_a_problem: None) -> None:
    english = pack(shop, tmp_path / "en", "--period", "2026-10", "--lang", "en")
    dutch = pack(shop, tmp_path / "nl", "--period", "2026-10", "--lang", "nl")
    assert dutch.sheetnames == ["samenvatting", "dagontvangstenboek", "btw per tarief",
                                "betalingen", "kassadagen", "documenten", "tickets"]
    lines = block(dutch["samenvatting"])
    assert lines["boekhoudpakket"] == f"CloudPOS-verkopen, licentie {LICENSE}, 2026-10"
    assert lines["periode"] == "2026-10 (verkoopdagen 1 oktober 2026 tot en met 31 oktober 2026)"
    assert lines["controle"].endswith("OPENSTAANDE PROBLEMEN: deze cijfers kunnen onvolledig of "
                                      "fout zijn (hieronder opgesomd; `syncer audit`)")
    assert "GEEN ingediende aangifte" in lines["btw-aangifte"]
    totals = table(dutch["samenvatting"])
    assert [r["bron"].value for r in totals[-3:]] == ["totaal tickets", "totaal documenten", "omzet"]
    assert {"facturen", "creditnota's"} <= {r["bron"].value for r in totals}
    assert "tijdstip (Europe/Brussels)" in table(dutch["tickets"])[0]
    assert any(name.startswith("maatstaf ") and name.endswith(" %")
               for name in table(dutch["dagontvangstenboek"])[0])
    # Every number and date is the English pack's, in the same cell.
    for (en_name, en_rows), nl_rows in zip(cells(english).items(), cells(dutch).values(), strict=True):
        assert len(en_rows) == len(nl_rows), en_name
        for en_row, nl_row in zip(en_rows, nl_rows, strict=True):
            for a, b in zip(en_row, nl_row, strict=True):
                if not isinstance(a, str) or a == "":
                    assert a == b, en_name


def test_the_configured_language_is_the_default(shop: Shop, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    (tmp_path / "syncer.toml").write_text('[reports]\nlanguage = "fr"\n')
    result = shop.export("--period", "2026-10", "--out", "pack.xlsx", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    book = load_workbook(tmp_path / "pack.xlsx")
    assert book.sheetnames[:3] == ["résumé", "livre des recettes", "TVA par taux"]
    assert block(book["résumé"])["période"] == (
        "2026-10 (journées de vente du 1 octobre 2026 au 31 octobre 2026 inclus)")


def test_an_unknown_language_in_the_config_names_the_key_and_the_choices(
        shop: Shop, tmp_path: Path) -> None:
    (tmp_path / "syncer.toml").write_text('[reports]\nlanguage = "de"\n')
    result = shop.export("--period", "2026-10", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "invalid config in syncer.toml: reports.language:" in result.output
    assert "'de' is not a language of the pack; choose one of: en, fr, nl" in result.output
