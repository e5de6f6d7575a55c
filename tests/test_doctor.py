"""`syncer doctor`: the envelope named, fields and formats reported, and a support bundle
without the token or any national register number, e-mail or phone of the data set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from syncer import tables as t
from syncer.db import make_engine
from syncer.simulator import Simulator, generate
from tests.conftest import ANCHOR, LICENSE, TOKEN
from tests.helpers import cli_env, run_cli


def personal_data(sim: Simulator) -> list[str]:
    ds = sim.dataset
    values = [u.secnr for u in ds.users.values() if u.secnr]
    values += [c.email for c in ds.customers.values() if c.email]
    values += [c.phone for c in ds.customers.values() if c.phone]
    assert len(values) > 20 and any(u.secnr for u in ds.users.values())
    return values


@pytest.mark.parametrize("style", ["list", "data", "named", "keyed"])
def test_doctor_names_the_envelope_and_its_bundle_holds_no_secret_or_personal_data(
    db_url: str, tmp_path: Path, style: str
) -> None:
    sim = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    envelope=style)
    sim.start()
    try:
        env = cli_env(db_url, sim.base_url)
        assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
        before = sim.stats()["requests"]
        bundle = tmp_path / "bundle.json"
        result = run_cli(["doctor", "--out", str(bundle)], env, cwd=tmp_path)
        assert result.exit_code == 0, result.output
        assert sim.stats()["requests"] == before  # from the archive alone
        assert str(bundle.resolve()) in result.output.replace("\n", "")
        data = bundle.read_bytes()
        report = json.loads(data)["licenses"][0]
        functions = report["functions"]
        assert {f["envelope"] for f in functions.values()} == {style}
        orders = functions["get-orders"]
        assert orders["records"] > 0 and orders["parsed"]["rows"] == orders["records"]
        assert orders["fields"]["missing"] == [] and "orderdetail" in orders["fields"]["seen"]
        assert "number as string" in str(orders["formats"]) or "JSON number" in str(orders["formats"])
        assert functions["get-users"]["samples"], "samples are in the bundle"
        for value in [TOKEN, *personal_data(sim)]:
            assert value.encode() not in data, value
    finally:
        sim.stop()


def test_doctor_reports_unknown_fields_formats_and_quarantine_reasons(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    ds = sim.dataset
    bad = sorted(ds.products)[2]
    ds.products[bad] = __import__("dataclasses").replace(
        ds.products[bad], extra={"price": "12,50 EUR", "allergens": "gluten"})
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill", "--resource", "products"], env, cwd=tmp_path).exit_code == 0
    bundle = tmp_path / "b.json"
    result = run_cli(["doctor", "--out", str(bundle)], env, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    products = json.loads(bundle.read_text())["licenses"][0]["functions"]["get-products"]
    assert "allergens" in products["fields"]["unknown"]
    assert products["parsed"]["quarantined"] == 1
    assert any("price" in reason for reason in products["parsed"]["reasons"])
    assert "no archived answer yet" in json.dumps(
        json.loads(bundle.read_text())["licenses"][0]["functions"]["get-orders"])

    # --fresh: one budgeted request per synced function, after a confirmation.
    refused = run_cli(["doctor", "--fresh", "--force", "--out", str(bundle)], env, cwd=tmp_path)
    assert refused.exit_code == 2 and "--yes" in refused.output
    before = sim.stats()["requests"]
    result = run_cli(["doctor", "--fresh", "--yes", "--force", "--out", str(bundle)], env,
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert sim.stats()["requests"] - before == 13
    functions = json.loads(bundle.read_text())["licenses"][0]["functions"]
    assert functions["get-orders"]["records"] > 0
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.orders)).scalar_one() > 0
    engine.dispose()
