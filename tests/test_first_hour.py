"""The first hour of a new user (issue 13): where the config comes from, what a bad URL
or a missing database says, how a backfill reports, and what the demo's data looks like.

Through the real CLI (in process, or a subprocess where the console matters), against
the simulator over real HTTP, on SQLite and, where it matters, on Postgres.
"""

from __future__ import annotations

import os
import re
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


# --- 11, 12: what a stopped backfill says ----------------------------------------------------


def backfill(db_url: str, sim: Simulator, tmp_path: Path, *args: str,
             token: str | None = None) -> subprocess.CompletedProcess[str]:
    """`syncer ARGS backfill` in a subprocess: stdout and stderr are not terminals, as in
    cron mail or a log file."""
    env = cli_env(db_url, sim.base_url) if token is None else cli_env(db_url, sim.base_url,
                                                                      token=token)
    split = args.index("backfill") if "backfill" in args else 0
    return subprocess.run([sys.executable, "-m", "syncer", *args[:split], "backfill",
                           *args[split + 1:]], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)


def table_statuses(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 9 and cells[0] == "demo":
            rows[cells[1]] = cells[8]
    return rows


def test_a_stop_is_said_once_in_full_and_the_rest_is_not_started(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    done = backfill(db_url, sim, tmp_path, "--log-level", "warning", "backfill",
                    "--max-requests", "3")

    assert done.returncode == 3, done.stderr
    statuses = table_statuses(done.stdout)
    assert list(statuses.values()) == ["done"] * 3 + ["stopped"] + ["not started"] * 9, statuses
    assert "--max-requests" not in done.stdout  # the table holds no cut-short notes
    # Snapshot of what follows the table.
    assert done.stderr.splitlines() == [
        "demo/customers stopped (and the 9 resource(s) after it: not started): "
        "--max-requests 3 reached",
        "work is left: run again to continue (it starts at the cursors; nothing stored is "
        "fetched again)",
    ]


def test_a_long_stop_note_is_never_cut_and_says_its_time_zone(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    sim.set_daily_limit(2)
    done = backfill(sqlite_url, sim, tmp_path, "--log-level", "warning", "backfill")

    assert done.returncode == 3, done.stderr
    text = " ".join(done.stderr.split())
    note = re.search(r"demo/subproducts stopped \(and the 10 resource\(s\) after it: not "
                     r"started\): (.*?) work is left", text)
    assert note, text
    # The whole sentence, with the zone of the time it gives (not "the time above").
    assert re.fullmatch(r"get-subproducts: 1003 Limit of '2' requests per day reached, next "
                        r"request possible '\d{4}-\d\d-\d\d 00:00:00' \((CET|CEST), "
                        r"Europe/Brussels\)", note[1]), note[1]
    assert "time above" not in text
    assert text.count("1003 Limit") == 1, text


def test_a_refused_login_promises_no_retry_and_log_times_say_utc(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    done = backfill(sqlite_url, sim, tmp_path, "backfill", token="wrong-token-first-hour")

    assert done.returncode == 1, done.stderr
    line = next(x for x in done.stderr.splitlines() if "syncer.client" in x)
    assert line.endswith("-> get-categories: 1002 Token or name not valid"), line
    assert "attempt" not in done.stderr
    for log_line in (x for x in done.stderr.splitlines() if " INFO " in x or " ERROR " in x):
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 (INFO|ERROR) ", log_line), \
            log_line


def test_status_and_report_tables_show_times_with_their_zone(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(sqlite_url, sim.base_url)
    assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0

    status = run_cli(["status"], env, cwd=tmp_path)
    labor = run_cli(["report", "labor"], env, cwd=tmp_path)

    zoned = r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? (CET|CEST)"
    assert re.search(zoned, status.output), status.output
    assert not re.search(r"\d\d:\d\d:\d\d(?! (CET|CEST))", status.output), status.output
    assert re.search(zoned, labor.output), labor.output
    assert not re.search(r"\d\d:\d\d(?!:| (CET|CEST))", labor.output), labor.output
