"""The first hour of a new user (issue 13): where the config comes from, what a bad URL
or a missing database says, how a backfill reports, and what the demo's data looks like.

Through the real CLI (in process, or a subprocess where the console matters), against
the simulator over real HTTP, on SQLite and, where it matters, on Postgres.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result

from syncer.simulator import Simulator
from tests.conftest import PG_URL
from tests.helpers import cli_env, run_cli


def said(result: Result) -> str:
    """Everything the command wrote, with rich's line wrapping undone."""
    return " ".join(result.output.split())


def db_config(path: Path, url: str) -> Path:
    path.write_text(f'[database]\nurl = "{url}"\n')
    path.chmod(0o600)
    return path


# --- 3: an explicit config beats an implicit one ----------------------------------------------


def test_syncer_config_beats_a_stray_syncer_toml_in_the_working_directory(
    sim: Simulator, tmp_path: Path
) -> None:
    stray = tmp_path / "stray.db"
    chosen = tmp_path / "chosen.db"
    db_config(tmp_path / "syncer.toml", f"sqlite:///{stray}")
    production = db_config(tmp_path / "production.toml", f"sqlite:///{chosen}")
    env = {k: v for k, v in cli_env("unused", sim.base_url).items() if k != "SYNCER_DATABASE_URL"}

    result = run_cli(["migrate"], {**env, "SYNCER_CONFIG": str(production)}, cwd=tmp_path)

    assert result.exit_code == 0, result.output
    assert chosen.exists() and not stray.exists()
    explicit = db_config(tmp_path / "explicit.toml", f"sqlite:///{tmp_path / 'explicit.db'}")
    checked = run_cli(["--config", str(explicit), "check"],
                      {**env, "SYNCER_CONFIG": str(production)}, cwd=tmp_path)
    assert f"config: {explicit}:" in said(checked)  # --config beats both
    alone = run_cli(["check"], env, cwd=tmp_path)
    assert "config: syncer.toml:" in said(alone)  # the local file, when nothing else is said


# --- 9: a bad URL from the environment is a config error naming the variable --------------


@pytest.mark.parametrize("url", ["foo", "mysql://u@h/db", "postgresql//u:pw-4f1e@h/db"])
def test_a_bad_database_url_in_the_environment_exits_2_naming_the_variable(
    sim: Simulator, tmp_path: Path, url: str
) -> None:
    result = run_cli(["status"], cli_env(url, sim.base_url), cwd=tmp_path)

    assert result.exit_code == 2, result.output
    text = said(result)
    assert "database.url (from $SYNCER_DATABASE_URL)" in text
    assert "in defaults" not in text and "nothing after the last commit" not in text
    assert "pw-4f1e" not in text  # a password in a URL that does not parse is hidden too
    assert len(result.output.strip().splitlines()) == 1


def test_a_bad_database_url_in_a_file_names_the_file(sim: Simulator, tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env("unused", sim.base_url).items() if k != "SYNCER_DATABASE_URL"}
    db_config(tmp_path / "shop.toml", "foo")

    result = run_cli(["--config", "shop.toml", "check"], env, cwd=tmp_path)

    assert result.exit_code == 2, result.output
    assert "invalid config in shop.toml: database.url: " in said(result)
    assert "$SYNCER_DATABASE_URL" not in said(result)


# --- 10: a Postgres database that does not exist -------------------------------------------


def test_a_missing_postgres_database_is_one_line_saying_what_to_run(
    sim: Simulator, tmp_path: Path
) -> None:
    base = PG_URL.rsplit("/", 1)[0].replace("postgres@", "postgres:pw-9c2d@", 1)
    url = f"{base}/no_such_db_first_hour"
    shown = url.replace("pw-9c2d", "***")
    outputs: dict[str, str] = {}
    for command in (["status"], ["check"], ["migrate"], ["backfill"], ["report", "vat"]):
        result = run_cli(command, cli_env(url, sim.base_url), cwd=tmp_path)
        assert result.exit_code == 1, result.output
        outputs[command[0]] = result.output
    # Snapshot: the same line from every command, the URL as every message shows it.
    expected = (f"error: database {shown}: database 'no_such_db_first_hour' does not exist; "
                "create it with `createdb -h 127.0.0.1 -p 5432 -U postgres "
                "no_such_db_first_hour` and run the command again")
    for name, output in outputs.items():
        # `check` says first that the config is fine; the error is its last line
        assert " ".join(output.split()).endswith(expected), name
        assert output.count("error:") == 1 and "Background" not in output, name
        assert "pw-9c2d" not in output and "sqlalche.me" not in output
    assert sim.stats()["requests"] == 0


def test_migrate_shows_the_url_the_way_errors_do(pg_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    done = subprocess.run([sys.executable, "-m", "syncer", "migrate"],
                          env={**env, "SYNCER_DATABASE_URL": pg_url}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "schema is up to date in postgresql+psycopg://postgres@127.0.0.1:5432/test" in done.stdout
