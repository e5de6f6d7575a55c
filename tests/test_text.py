"""Text from the API and the config is text: never console markup, never a forged log
line, never a spreadsheet formula; the real CLI against a hostile CloudPOS on loopback
(tests/hostile.py), on SQLite and Postgres."""

from __future__ import annotations

from pathlib import Path

from syncer.simulator import Simulator
from syncer.simulator.data import generate
from tests.conftest import ANCHOR, TOKEN
from tests.helpers import cli_env, run_cli
from tests.hostile import api_error, hostile, with_values

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


