"""The command line's surface as a new user meets it: commands that read only the
database, summaries that fit a terminal, results a script can read, the wording of
messages, `syncer config` and `syncer init`.

Commands that touch a database run on SQLite and Postgres (`db_url`); the API is the
in-process simulator over real HTTP (`sim`, license "demo" with TOKEN).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import Result

from syncer.simulator import Simulator
from tests.conftest import LICENSE, TOKEN
from tests.helpers import cli_env, run_cli


def syncer(db_url: str, sim: Simulator, tmp_path: Path, *args: str, token: str = TOKEN) -> Result:
    """`syncer ARGS` in this process, against the simulator, with cwd = tmp_path."""
    return run_cli(list(args), cli_env(db_url, sim.base_url, token=token), cwd=tmp_path)


def without_license(db_url: str) -> dict[str, str]:
    """The environment of a user who points at a database and configures no license."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    return {**env, "SYNCER_DATABASE_URL": db_url}


def said(result: Result) -> str:
    return " ".join(result.output.split())


# --- 5: doctor and rebuild read only the database ---------------------------------------


def test_doctor_and_rebuild_work_on_the_licenses_the_database_knows(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert syncer(db_url, sim, tmp_path, "backfill", "--resource", "printers",
                  "--resource", "orders").exit_code == 0
    sent = sim.stats()["requests"]
    env = without_license(db_url)

    for args in (["doctor"], ["doctor", "--license", LICENSE]):
        done = run_cli([*args, "--out", str(tmp_path / "bundle.json")], env, cwd=tmp_path)
        assert done.exit_code == 0, done.output
        bundle = json.loads((tmp_path / "bundle.json").read_text())
        assert [item["license"] for item in bundle["licenses"]] == [LICENSE]
    for args in (["rebuild", "--resource", "printers"],
                 ["rebuild", "--license", LICENSE, "--resource", "orders"]):
        done = run_cli(args, env, cwd=tmp_path)
        assert done.exit_code == 0, done.output
        assert f"{LICENSE}: " in done.output and "0 requests sent" in said(done)
    assert sim.stats()["requests"] == sent  # nothing was sent

    typo = run_cli(["rebuild", "--license", "dmeo"], env, cwd=tmp_path)
    assert typo.exit_code == 2
    assert "unknown license ['dmeo']; configured or in the database: ['demo']" in said(typo)
    # --fresh sends requests: it still needs a configured license with a token.
    fresh = run_cli(["doctor", "--fresh", "--yes"], env, cwd=tmp_path)
    assert fresh.exit_code == 2 and "no license configured" in said(fresh)
