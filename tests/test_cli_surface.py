"""The command line's surface as a new user meets it: commands that read only the
database, summaries that fit a terminal, results a script can read, the wording of
messages, `syncer config` and `syncer init`.

Commands that touch a database run on SQLite and Postgres (`db_url`); the API is the
in-process simulator over real HTTP (`sim`, license "demo" with TOKEN).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from click.testing import Result
from rich.console import Console
from sqlalchemy import func, select

from syncer import outcomes, views
from syncer import resources as res
from syncer import tables as t
from syncer.backfill import Summary
from syncer.db import make_engine
from syncer.load import Counts
from syncer.simulator import Simulator
from tests.conftest import LICENSE, TOKEN, Leaks
from tests.helpers import cli_env, finish, run_cli, spawn_cli, spawn_serving_daemon
from tests.test_cli import table_counts
from tests.test_first_hour import on_a_terminal


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

    for number, args in enumerate((["doctor"], ["doctor", "--license", LICENSE])):
        out = tmp_path / f"bundle-{number}.json"
        done = run_cli([*args, "--out", str(out)], env, cwd=tmp_path)
        assert done.exit_code == 0, done.output
        bundle = json.loads(out.read_text())
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


# --- 9: wording -----------------------------------------------------------------------------


def test_a_refused_login_is_said_once_per_line_without_repeats(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert syncer(sqlite_url, sim, tmp_path, "migrate").exit_code == 0
    first = syncer(sqlite_url, sim, tmp_path, "check", "--online", token="wrong-token-0c9a")
    assert first.exit_code == 1
    # The request line names the function once, with no gap where parameters would be.
    assert "GET get-printers -> 1002 " in first.output, first.output
    assert "get-printers  ->" not in first.output and "-> get-printers:" not in first.output
    again = syncer(sqlite_url, sim, tmp_path, "check", "--online", token="wrong-token-0c9a")
    assert again.exit_code == 1
    lines = [line for line in again.output.splitlines() if line.startswith("license demo:")]
    assert lines and "license 'demo'" not in " ".join(lines), again.output


def test_backfill_says_no_cursor_for_a_list_and_counts_one_request_in_the_singular(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    done = syncer(sqlite_url, sim, tmp_path, "backfill", "--resource", "printers")
    assert done.exit_code == 0, done.output
    assert "cursor None" not in done.output
    assert "demo/printers: 4 record(s) (" in done.output
    assert "1 request in " in done.output and "1 requests" not in done.output


def test_check_of_an_empty_database_says_no_schema_yet(db_url: str, sim: Simulator,
                                                       tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):  # a SQLite file is made by `migrate`: an empty one
        Path(db_url.removeprefix("sqlite:///")).touch()
    checked = syncer(db_url, sim, tmp_path, "check")
    assert checked.exit_code == 1
    assert "no schema yet; run `syncer migrate`" in said(checked)
    assert "None" not in checked.output


def test_a_postgres_url_as_hosting_providers_print_it_is_postgres(
    pg_url: str, sim: Simulator, tmp_path: Path
) -> None:
    url = "postgres://" + pg_url.split("://", 1)[1]
    migrated = syncer(url, sim, tmp_path, "migrate")
    assert migrated.exit_code == 0, migrated.output
    checked = syncer(url, sim, tmp_path, "check")
    assert checked.exit_code == 0, checked.output
    assert "ok (revision " in checked.output


def test_an_http_error_shows_its_body_as_text(sqlite_url: str, tmp_path: Path) -> None:
    body = b'{"error": "bad request"}'

    class Refuses(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = cli_env(sqlite_url, f"http://127.0.0.1:{server.server_address[1]}/api/")
        called = run_cli(["call", "get-printers"], env, cwd=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert called.exit_code == 1
    assert 'get-printers: HTTP 400: {"error": "bad request"}' in said(called), called.output
    assert "HTTP 400: b'" not in called.output


def test_audit_header_is_local_time_with_its_zone(sqlite_url: str, sim: Simulator,
                                                  tmp_path: Path) -> None:
    assert syncer(sqlite_url, sim, tmp_path, "backfill", "--resource", "printers").exit_code == 0
    audited = syncer(sqlite_url, sim, tmp_path, "audit")
    header = audited.output.splitlines()[0]
    assert re.match(r"audit at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T \(", header), header


def test_run_help_says_http_serves_the_status_page() -> None:
    shown = " ".join(run_cli(["run", "--help"], {}).output.split())
    assert "Serve the status page (/), /healthz and /metrics here" in shown


def test_a_refused_second_daemon_does_not_first_say_it_serves(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(sqlite_url, sim.base_url)
    first, _ = spawn_serving_daemon(env, tmp_path)
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        second = spawn_cli(["run", "--http", f"127.0.0.1:{port}"], env, tmp_path)
        out = finish(second, 60)
    finally:
        first.send_signal(signal.SIGTERM)
        finish(first, 30)
    assert second.returncode == 1, out
    assert "already uses this SQLite database" in out
    assert "serving" not in out, out


# --- 7: the backfill summary on a narrow terminal --------------------------------------------


SUMMARY_HEADERS = ("license", "resource", "requests", "inserted", "status")


def test_backfill_summary_at_80_columns_cuts_no_header_or_name(sqlite_url: str, sim: Simulator,
                                                               tmp_path: Path) -> None:
    env = cli_env(sqlite_url, sim.base_url)
    _frames, screen, code = on_a_terminal(["--log-level", "warning", "backfill"], env, tmp_path,
                                          columns=80, lines=60)
    assert code == 0, "\n".join(screen)
    shown = "\n".join(screen)
    table = shown[shown.index("Backfill summary"):]
    assert "…" not in table, table
    header = next(line for line in screen if "resource" in line)
    for name in SUMMARY_HEADERS:
        assert f" {name} " in header, header
    for resource in res.RESOURCES:
        assert f" {resource.name} " in table, (resource.name, table)
    # The columns left out are named, and are 0 in every row.
    note = re.search(r"\(not shown, 0 in every row: ([a-z, ]+)\)", table)
    assert note and "quarantined" in note[1], table
    assert max(len(line) for line in screen) <= 80


def test_a_summary_too_wide_even_without_its_zeros_is_stacked_whole() -> None:
    summaries = [Summary(LICENSE, r.name, requests=3, counts=Counts(inserted=1200, updated=7,
                                                                     unchanged=3, deleted=2,
                                                                     quarantined=1),
                         status="done") for r in res.RESOURCES]
    out = io.StringIO()
    narrow = Console(file=out, width=50)
    for part in views.summary_table(summaries, width=50):
        narrow.print(part)
    text = out.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 50
    figures = ("requests 3", "inserted 1200", "updated 7", "unchanged 3", "deleted 2",
               "quarantined 1")
    blocks = re.findall(r"^(\S+): done\n((?:  .*\n)+)", text, re.MULTILINE)
    assert [name for name, _ in blocks] == [f"{LICENSE}/{r.name}" for r in res.RESOURCES], text
    for _name, block in blocks:  # every figure whole on a line, by its name
        said = [part.strip() for line in block.splitlines() for part in line.split(",")]
        assert said == list(figures), block


# --- 8: run --once with refused credentials ----------------------------------------------------


def test_run_once_with_refused_credentials_says_the_stop_once_then_a_summary(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(db_url, sim.base_url, token="wrong-token-0c9a")
    proc = spawn_cli(["run", "--once"], env, tmp_path)
    out = finish(proc, 120)
    assert proc.returncode == 1, out
    lines = out.splitlines()
    stops = [line for line in lines if line.startswith("license demo: stopped: ")]
    assert len(stops) == 1, out
    words = " ".join(out.split())
    assert re.search(r"license demo: stopped: get-\w+: 1002 [^;]*; nothing is sent for this "
                     r"license .*; 15 jobs not run", words), out
    assert "license 'demo'" not in stops[0]
    assert "1 request, 0 rows written" in lines, out
    # The log says the stop once, not once per job.
    assert len([line for line in lines if " WARNING " in line]) == 1, out
    assert len(lines) <= 16, out
    assert sim.stats()["requests"] == 1

    again = spawn_cli(["run", "--once"], env, tmp_path)
    out = finish(again, 120)
    assert again.returncode == 1, out
    assert "no job was due" in out and "0 requests, 0 rows written" in out
    assert out.count("credentials were refused") == 1, out


# --- 14: results a machine can read --------------------------------------------------------------


def test_backfill_json_is_one_document_with_requests_rows_cursor_and_outcome(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    capped = syncer(db_url, sim, tmp_path, "backfill", "--json", "--max-requests", "3")
    assert capped.exit_code == 3
    doc = json.loads(capped.stdout)  # standard output holds the document and nothing else
    assert doc["command"] == "backfill" and doc["exit_code"] == 3 and doc["requests"] == 3
    (lic,) = doc["licenses"]
    assert lic["license"] == LICENSE and lic["exit_code"] == 3
    assert lic["stopped"] == {"outcome": "budget spent", "exit_code": 3,
                              "message": "--max-requests 3 reached"}
    by_name = {r["resource"]: r for r in lic["resources"]}
    assert list(by_name) == [r.name for r in res.RESOURCES]
    assert [by_name[n]["outcome"] for n in ("categories", "products", "subproducts")] == ["ok"] * 3
    assert by_name["customers"]["outcome"] == "budget spent"
    assert by_name["customers"]["exit_code"] == 3
    assert by_name["orders"]["status"] == "stopped" and by_name["orders"]["requests"] == 0

    finished = syncer(db_url, sim, tmp_path, "backfill", "--json")
    assert finished.exit_code == 0
    doc = json.loads(finished.stdout)
    assert doc["exit_code"] == 0 and doc["licenses"][0]["stopped"] is None
    entries = {r["resource"]: r for r in doc["licenses"][0]["resources"]}
    assert doc["requests"] == sum(r["requests"] for r in entries.values())
    assert sim.stats()["requests"] == 3 + doc["requests"]
    counts = table_counts(db_url)
    for name in ("orders", "invoices", "customers"):  # what it says it inserted is stored
        assert entries[name]["inserted"] == counts[name] > 0, name
        assert entries[name]["outcome"] == "ok" and entries[name]["exit_code"] == 0
    assert entries["orders"]["cursor"] == max_order_id(db_url)
    assert entries["printers"]["cursor"] is None


def max_order_id(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.max(t.orders.c.id))).scalar_one())
    finally:
        engine.dispose()


def test_run_once_json_says_per_job_what_ran_and_how_it_ended(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    refused = syncer(db_url, sim, tmp_path, "run", "--once", "--json", token="wrong-token-0c9a")
    assert refused.exit_code == 1
    doc = json.loads(refused.stdout)
    assert doc["command"] == "run --once" and doc["exit_code"] == 1 and doc["requests"] == 1
    (lic,) = doc["licenses"]
    assert lic["stopped"]["outcome"] == "credentials refused (1002)"
    assert lic["stopped"]["exit_code"] == 1
    assert {j["outcome"] for j in lic["jobs"]} == {"credentials refused (1002)",
                                                   "credentials refused before"}
    assert sum(j["requests"] for j in lic["jobs"]) == 1

    nothing_due = syncer(db_url, sim, tmp_path, "run", "--once", "--json", token="wrong-token-0c9a")
    doc = json.loads(nothing_due.stdout)
    assert nothing_due.exit_code == doc["exit_code"] == 1
    assert doc["licenses"][0]["jobs"] == []
    assert doc["licenses"][0]["stopped"]["outcome"] == "credentials refused before"

    good = syncer(db_url, sim, tmp_path, "run", "--once", "--json")
    assert good.exit_code == 0
    doc = json.loads(good.stdout)
    jobs = {j["job"]: j for j in doc["licenses"][0]["jobs"]}
    assert jobs["orders"]["resource"] == "orders" and jobs["orders_recheck"]["resource"] == "orders"
    assert jobs["orders"]["inserted"] == table_counts(db_url)["orders"] > 0
    assert jobs["orders"]["cursor"] == max_order_id(db_url)
    assert all(j["outcome"] == "ok" and j["exit_code"] == 0 for j in jobs.values())
    assert doc["requests"] == sum(j["requests"] for j in jobs.values()) > 0

    misuse = syncer(db_url, sim, tmp_path, "run", "--json")
    assert misuse.exit_code == 2 and "--json goes with --once" in misuse.output


def test_operations_doc_names_every_outcome_a_result_can_carry() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    section = doc[doc.index("## Machine-readable results"):]
    section = " ".join(section[:section.index("\n## ")].split())
    for meaning in outcomes.OUTCOMES:
        assert f"`{meaning.name}`" in section, meaning.name


# --- 15: JSON log lines carry their figures as fields ------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_log_lines_carry_every_figure_of_the_text_line(
    db_url: str, sim: Simulator, tmp_path: Path, leaks: Leaks
) -> None:
    env = cli_env(db_url, sim.base_url)
    refused = subprocess.run([sys.executable, "-m", "syncer", "--log-format", "json", "run",
                              "--once"], env={**env, "CLOUDPOS_TOKEN": "wrong-token-0c9a"},
                             cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             check=False)
    assert refused.returncode == 1
    stop = [r for r in json_lines(refused.stderr) if r["level"] == "warning"]
    assert len(stop) == 1, refused.stderr
    assert (stop[0]["license"], stop[0]["outcome"], stop[0]["exit_code"]) == (
        LICENSE, "credentials refused (1002)", 1)
    assert "wrong-token-0c9a" not in refused.stderr + refused.stdout

    # The right token: every job runs (the license wakes: its credentials changed).
    proc = subprocess.run([sys.executable, "-m", "syncer", "--log-format", "json", "run",
                           "--once"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    leaks.add("run --once --log-format json", proc.stderr + proc.stdout)
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stderr)
    runs = {r["job"]: r for r in records if r["logger"] == "syncer.daemon" and "job" in r}
    assert set(runs) >= {"orders", "printers", "orders_recheck"}
    orders = runs["orders"]
    assert orders["license"] == LICENSE and orders["outcome"] == "ok" and orders["exit_code"] == 0
    # The fields are the figures the message says, typed.
    assert orders["message"].startswith(
        f"{LICENSE}/orders: {orders['requests']} request(s), {orders['inserted']} inserted, "
        f"{orders['updated']} updated, {orders['deleted']} deleted, {orders['quarantined']} "
        f"quarantined; cursor {orders['cursor']}; lag never synced before; next run ")
    assert orders["inserted"] == table_counts(db_url)["orders"] > 0
    assert orders["cursor"] == max_order_id(db_url) and orders["lag_seconds"] is None
    assert dt.datetime.fromisoformat(orders["next_run"]).tzinfo is not None
    assert runs["printers"]["cursor"] is None

    later = subprocess.run([sys.executable, "-m", "syncer", "--log-format", "json", "backfill",
                            "--resource", "printers"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120, check=False)
    leaks.add("backfill --log-format json", later.stderr + later.stdout)
    assert later.returncode == 0, later.stderr
    done = next(r for r in json_lines(later.stderr)
                if r["logger"] == "syncer.backfill" and r.get("status") == "done")
    assert (done["license"], done["resource"], done["requests"], done["unchanged"],
            done["outcome"]) == (LICENSE, "printers", 1, 4, "ok")



# --- 16: syncer config ---------------------------------------------------------------------------


def config_rows(output: str) -> dict[str, tuple[str, str]]:
    """`syncer config`'s table as {key: (value, from)} (a cell's folded lines joined)."""
    rows: dict[str, tuple[str, str]] = {}
    last = ""
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) != 3:
            continue
        if cells[0]:
            last = cells[0]
            rows[last] = (cells[1], cells[2])
        else:  # a folded cell goes on under the same key
            value, origin = rows[last]
            rows[last] = (f"{value} {cells[1]}".strip(), f"{origin}{cells[2]}")
    return rows


def test_config_shows_each_value_with_where_it_came_from_and_masks_secrets(tmp_path: Path) -> None:
    file = tmp_path / "shop.toml"
    file.write_text(
        '[database]\nurl = "postgresql://shop:pw-5e1f@db:5432/cloudpos"\n'
        "[api]\ndaily_budget = 400\n"
        f'[[licenses]]\nname = "myshop"\ntoken = "{TOKEN}"\n'
        '[[licenses]]\nname = "other"\ntoken_env = "OTHER_TOKEN_X"\nreserve = 20\n'
        "[resources.orders]\nwindow = 1000\n"
        '[privacy]\nhash_key = "hk-2b7c9d"\n')
    file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    env.update(CLOUDPOS_BASE_URL="http://127.0.0.1:9/api/", OTHER_TOKEN_X="other-secret")
    shown = run_cli(["--config", str(file), "config"], env, cwd=tmp_path)
    assert shown.exit_code == 0, shown.output
    assert f"config file: {file}" in shown.output
    rows = config_rows(shown.output)
    where = str(file)
    assert rows["database.url"] == ("postgresql+psycopg://shop:***@db:5432/cloudpos", where)
    assert rows["api.base_url"] == ("http://127.0.0.1:9/api/", "$CLOUDPOS_BASE_URL")
    assert rows["api.daily_budget"] == ("400", where)
    assert rows["api.reserve"] == ("50", "default")
    assert rows["licenses.0.name"] == ("myshop", where)
    assert rows["licenses.0.token"] == ("***", where)
    assert rows["licenses.1.token_env"] == ("OTHER_TOKEN_X (set)", where)
    assert rows["licenses.1.reserve"] == ("20", where)
    assert rows["licenses.1.daily_budget"] == ("(not set: api.daily_budget applies)", "default")
    assert rows["resources.orders.window"] == ("1000", where)
    assert rows["resources.orders.max_window"] == ("5000", "default")
    assert rows["privacy.hash_key"] == ("***", where)
    assert rows["schedule.opening_hours"] == ("10:00-23:00", "default")
    for secret in ("pw-5e1f", TOKEN, "hk-2b7c9d", "other-secret"):
        assert secret not in shown.output


def test_config_from_the_environment_alone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    env.update(SYNCER_DATABASE_URL="sqlite:///shop.db", CLOUDPOS_LICNAME="myshop",
               CLOUDPOS_TOKEN=TOKEN)
    shown = run_cli(["config"], env, cwd=tmp_path)
    assert shown.exit_code == 0, shown.output
    assert "config file: none" in shown.output
    rows = config_rows(shown.output)
    assert rows["database.url"] == ("sqlite:///shop.db", "$SYNCER_DATABASE_URL")
    assert rows["licenses.0.name"] == ("myshop", "$CLOUDPOS_LICNAME")
    assert rows["licenses.0.token_env"] == ("CLOUDPOS_TOKEN (set)", "$CLOUDPOS_LICNAME")
    assert rows["api.base_url"] == ("https://cloudpos.be/api/", "default")
    assert TOKEN not in shown.output
    # A config error is the same one line as every other command's, exit 2.
    env["SYNCER_DATABASE_URL"] = "nonsense"
    bad = run_cli(["config"], env, cwd=tmp_path)
    assert bad.exit_code == 2 and "database.url (from $SYNCER_DATABASE_URL)" in bad.output


# --- 18: syncer init -----------------------------------------------------------------------------


def test_init_writes_a_config_that_the_next_steps_run_on(db_url: str, sim: Simulator,
                                                         tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    # Only the simulator's address comes from outside: a real license needs none.
    env.update(CLOUDPOS_BASE_URL=sim.base_url)
    given = [] if db_url.startswith("sqlite") else ["--database-url", db_url]
    made = run_cli(["init", "--license", LICENSE, *given], env, cwd=tmp_path)
    assert made.exit_code == 0, made.output
    written = (tmp_path / "syncer.toml").read_text()
    assert 'token_env = "CLOUDPOS_TOKEN_DEMO"' in written and TOKEN not in written
    assert ('url = "sqlite:///cloudpos.db"' if not given else f'url = "{db_url}"') in written
    steps = said(made)
    assert "export CLOUDPOS_TOKEN_DEMO=" in steps
    assert steps.index("syncer migrate") < steps.index("syncer check --online") \
        < steps.index("syncer backfill")

    env["CLOUDPOS_TOKEN_DEMO"] = TOKEN
    for step in (["migrate"], ["check", "--online"], ["backfill", "--resource", "printers"]):
        done = run_cli(step, env, cwd=tmp_path)
        assert done.exit_code == 0, (step, done.output)
    assert "license demo: credentials accepted" in run_cli(["check", "--online"], env,
                                                           cwd=tmp_path).output
    if not given:
        assert (tmp_path / "cloudpos.db").is_file()
    rows = config_rows(run_cli(["config"], env, cwd=tmp_path).output)
    assert rows["licenses.0.token_env"] == ("CLOUDPOS_TOKEN_DEMO (set)", "syncer.toml")

    again = run_cli(["init", "--license", "other"], env, cwd=tmp_path)
    assert again.exit_code == 2
    assert "syncer.toml exists; it was left as it is" in said(again)
    assert (tmp_path / "syncer.toml").read_text() == written


def test_init_refuses_what_would_not_load(tmp_path: Path) -> None:
    for args, says in (
        (["--license", ""], "--license: must not be empty"),
        (["--license", "x", "--database-url", "nonsense"], "--database-url: not a database URL"),
        (["--license", "x", "--token-env", "1A"], "--token-env '1A': not an environment variable"),
    ):
        refused = run_cli(["init", *args], {}, cwd=tmp_path)
        assert refused.exit_code == 2, refused.output
        assert says in said(refused)
        assert not (tmp_path / "syncer.toml").exists()
    other = run_cli(["init", "--license", "o'shop", "--path", "shops/o.toml"], {}, cwd=tmp_path)
    assert other.exit_code == 2 and "cannot write it" in said(other)
    (tmp_path / "shops").mkdir()
    other = run_cli(["init", "--license", "o'shop \"2\"", "--path", "shops/o.toml"], {},
                    cwd=tmp_path)
    assert other.exit_code == 0 and "syncer --config shops/o.toml migrate" in other.output
    rows = config_rows(run_cli(["--config", "shops/o.toml", "config"], {}, cwd=tmp_path).output)
    assert rows["licenses.0.name"] == ("o'shop \"2\"", "shops/o.toml")
    assert rows["licenses.0.token_env"][0].startswith("CLOUDPOS_TOKEN_O_SHOP_2 ")


def test_a_backfill_stopped_by_refused_credentials_names_the_license_once(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert syncer(sqlite_url, sim, tmp_path, "backfill", token="wrong-token-0c9a").exit_code == 1
    again = syncer(sqlite_url, sim, tmp_path, "--log-level", "warning", "backfill",
                   token="wrong-token-0c9a")
    assert again.exit_code == 1
    words = said(again)
    assert "demo/categories stopped (and the 12 resource(s) after it: not started): credentials " \
           "were refused" in words, again.output
    stop = words[words.index("demo/categories stopped"):]
    assert "license 'demo'" not in stop[:stop.index("config")], stop
