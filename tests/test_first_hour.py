"""The first hour of a new user (issue 13): where the config comes from, what a bad URL
or a missing database says, how a backfill reports, and what the demo's data looks like.

Through the real CLI (in process, or a subprocess where the console matters), against
the simulator over real HTTP, on SQLite and, where it matters, on Postgres.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pyte
import pytest
from click.testing import Result
from sqlalchemy import func, make_url, select

from syncer import tables as t
from syncer.db import make_engine, migrate
from syncer.simulator import Simulator, generate
from tests.conftest import ANCHOR, LICENSE, PG_URL, TOKEN
from tests.expected import secnr_hash
from tests.helpers import FakeClock, cli_env, run_cli


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


@pytest.mark.parametrize("url", ["foo", "oracle://u@h/db", "postgresql//u:pw-4f1e@h/db"])
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
    server = make_url(PG_URL)
    url = server.set(password="pw-9c2d", database="no_such_db_first_hour").render_as_string(
        hide_password=False)
    shown = url.replace("pw-9c2d", "***")
    flags = " ".join(f"{flag} {value}" for flag, value in (
        ("-h", server.host), ("-p", server.port), ("-U", server.username)) if value)
    outputs: dict[str, str] = {}
    for command in (["status"], ["check"], ["migrate"], ["backfill"], ["report", "vat"]):
        result = run_cli(command, cli_env(url, sim.base_url), cwd=tmp_path)
        assert result.exit_code == 1, result.output
        outputs[command[0]] = result.output
    # Snapshot: the same line from every command, the URL as every message shows it.
    expected = (f"error: database {shown}: database 'no_such_db_first_hour' does not exist; "
                f"create it with `createdb {flags} no_such_db_first_hour` and run the "
                "command again")
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
    assert line.endswith("GET get-categories -> 1002 Token or name not valid"), line
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


# --- 8: the national number's hash key does not follow the token ---------------------------


def users_by_id(db_url: str) -> dict[int, tuple[str | None, object]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return {r.id: (r.secnr_hash, r.synced_at) for r in conn.execute(
                select(t.users.c.id, t.users.c.secnr_hash, t.users.c.synced_at))}
    finally:
        engine.dispose()


HASH_KEY = "a-key-of-our-own-for-hashes"


def pull_users_with_a_hash_key(db_url: str, sim: Simulator, tmp_path: Path) -> Result:
    (tmp_path / "syncer.toml").write_text(f'[privacy]\nhash_key = "{HASH_KEY}"\n')
    (tmp_path / "syncer.toml").chmod(0o600)
    return run_cli(["backfill", "--resource", "users"], cli_env(db_url, sim.base_url),
                   cwd=tmp_path)


def test_without_a_hash_key_no_national_number_hash_is_stored(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert any(u.secnr for u in sim.dataset.users.values())
    result = run_cli(["backfill", "--resource", "users"], cli_env(db_url, sim.base_url),
                     cwd=tmp_path)

    assert result.exit_code == 0, result.output
    users = users_by_id(db_url)
    assert len(users) == len(sim.dataset.users)
    assert {h for h, _ in users.values()} == {None}


def test_with_a_hash_key_a_new_token_changes_no_hash_and_rewrites_no_user(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    first = pull_users_with_a_hash_key(db_url, sim, tmp_path)
    assert first.exit_code == 0, first.output
    before = users_by_id(db_url)
    expected = {u.id: secnr_hash(u.secnr, HASH_KEY) for u in sim.dataset.users.values()}
    assert {i: h for i, (h, _) in before.items()} == expected
    assert sum(h is not None for h in expected.values()) >= 2

    rotated = "rotated-token-3e9b1c77"
    with Simulator(sim.dataset, licenses={LICENSE: rotated}) as other:
        again = run_cli(["backfill", "--resource", "users"],
                        cli_env(db_url, other.base_url, token=rotated), cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert users_by_id(db_url) == before  # same hashes, and no row written again


def test_migration_0005_clears_token_keyed_hashes_and_a_hash_key_writes_them_again(
    db_url: str, sim: Simulator, tmp_path: Path
) -> None:
    engine = make_engine(db_url)
    migrate(engine, "0003")
    user = next(u for u in sim.dataset.users.values() if u.secnr)
    old_key = hmac.new(b"cloudpos-syncer secnr", TOKEN.encode(), hashlib.sha256).digest()
    digits = "".join(c for c in user.secnr or "" if c.isdigit())
    token_keyed = hmac.new(old_key, digits.encode(), hashlib.sha256).hexdigest()
    with engine.begin() as conn:
        conn.execute(t.users.insert().values(
            license=LICENSE, id=user.id, username=user.username, is_admin=user.is_admin,
            secnr_hash=token_keyed, synced_at=dt.datetime.now(dt.UTC)))
    engine.dispose()

    migrated = run_cli(["migrate"], cli_env(db_url, sim.base_url), cwd=tmp_path)

    assert migrated.exit_code == 0, migrated.output
    assert users_by_id(db_url)[user.id][0] is None
    pulled = pull_users_with_a_hash_key(db_url, sim, tmp_path)
    assert pulled.exit_code == 0, pulled.output
    assert users_by_id(db_url)[user.id][0] == secnr_hash(user.secnr, HASH_KEY)


# --- 4: the simulator's history ends when it starts, and grows with the day ------------------


def test_the_history_ends_at_its_start_and_grows_as_the_clock_passes(tmp_path: Path) -> None:
    zone = ZoneInfo("Europe/Brussels")
    start = dt.datetime.combine(ANCHOR, dt.time(13, 0), zone)
    clock = FakeClock(start)
    data = generate(seed=1, orders=600, anchor=ANCHOR, until=start)
    assert len(data.orders) == 600  # the history asked for, up to its start
    later_today = len(data.pending_orders)
    assert later_today > 0 and max(o.ordered_at for o in data.orders) <= start
    with Simulator(data, licenses={LICENSE: TOKEN}, clock=clock) as sim:
        url = sim.base_url

        def served() -> list[dict[str, object]]:
            query = f"{url}?licname={LICENSE}&token={TOKEN}&get-orders&start=1&end=100000"
            with urllib.request.urlopen(query, timeout=10) as resp:
                return list(json.loads(resp.read())["data"])

        def at(order: dict[str, object]) -> dt.datetime:
            return dt.datetime.strptime(str(order["ordertime"]), "%Y-%m-%d %H:%M:%S").replace(
                tzinfo=zone)

        first = served()
        assert max(at(o) for o in first) <= start
        clock.advance(hours=3)
        later = served()
        assert len(later) > len(first)
        assert max(at(o) for o in later) <= start + dt.timedelta(hours=3)
        ids = [int(str(o["id"])) for o in later]
        assert ids == sorted(ids) and ids[:len(first)] == [int(str(o["id"])) for o in first]
        clock.advance(days=1)
        assert len(served()) == 600 + later_today  # the day is over: all of it is history


def test_the_demo_holds_no_order_in_the_future_and_alembic_stays_quiet(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    done = subprocess.run([sys.executable, "-m", "syncer", "demo", "--orders", "600"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    finished = dt.datetime.now(dt.UTC)
    assert done.returncode == 0, done.stderr
    assert "Running upgrade" not in done.stdout + done.stderr
    assert "alembic" not in done.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'cloudpos-demo.db'}")
    try:
        with engine.connect() as conn:
            latest = conn.execute(select(func.max(t.orders.c.ordered_at))).scalar_one()
    finally:
        engine.dispose()
    assert latest is not None and latest <= finished

    debug = subprocess.run([sys.executable, "-m", "syncer", "--log-level", "debug", "demo",
                            "--orders", "50", "--db", "debug.db"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=180, check=False)
    assert debug.returncode == 0, debug.stderr
    assert "Running upgrade" in debug.stderr


def test_a_demo_pinned_to_a_time_ends_its_history_there(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    pinned = dt.datetime.combine(ANCHOR, dt.time(13, 0), ZoneInfo("Europe/Brussels"))
    done = subprocess.run([sys.executable, "-m", "syncer", "demo", "--orders", "400", "--now",
                           f"{pinned:%Y-%m-%d %H:%M}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'cloudpos-demo.db'}")
    try:
        with engine.connect() as conn:
            count, latest = conn.execute(select(func.count(), func.max(t.orders.c.ordered_at))
                                         ).one()
    finally:
        engine.dispose()
    assert count == 400
    assert pinned - dt.timedelta(hours=1) < latest <= pinned


# --- 6: the backfill's progress on a terminal ------------------------------------------------


def on_a_terminal(args: list[str], env: dict[str, str], cwd: Path, columns: int = 120,
                  lines: int = 40) -> tuple[list[str], list[str], int]:
    """Run the CLI on a pseudo-terminal of that size, through a terminal emulator: every
    screen it showed (sampled as output arrives), the last screen, and the exit code."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "syncer", *args], stdin=slave, stdout=slave,
                            stderr=slave, cwd=cwd, close_fds=True,
                            env={**env, "TERM": "xterm-256color", "COLUMNS": str(columns),
                                 "LINES": str(lines)})
    os.close(slave)
    screen = pyte.Screen(columns, lines)
    stream = pyte.ByteStream(screen)
    frames = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        stream.feed(chunk)
        frames.append("\n".join(screen.display))
    os.close(master)
    code = proc.wait(timeout=120)
    return frames, [line.rstrip() for line in screen.display], code


def test_backfill_on_a_terminal_shows_days_percent_rate_and_eta_then_only_the_summary(
    sqlite_url: str, tmp_path: Path
) -> None:
    data = generate(seed=2, orders=8_000, anchor=ANCHOR)
    (tmp_path / "syncer.toml").write_text(
        "[resources.orders]\nwindow = 500\nmin_window = 500\nmax_window = 500\n")
    def today() -> dt.date:
        return dt.datetime.now(ZoneInfo("Europe/Brussels")).date()

    started = today()  # the bar counts to the backfill's today: this one, or the next day's
    with Simulator(data, licenses={LICENSE: TOKEN}) as sim:
        for _ in range(40):  # slow answers, so that the bar is drawn while it runs
            sim.inject_fault("slow", delay=0.15)
        frames, last, code = on_a_terminal(["--log-level", "warning", "backfill"],
                                           cli_env(sqlite_url, sim.base_url), tmp_path)

    assert code == 0, "\n".join(last)
    first = min(o.ordered_at.date() for o in data.orders)
    totals = "|".join(f"{(day - first).days:,}" for day in sorted({started, today()}))
    bar = re.compile(r"demo/orders +[━╸╺ ]+ +(\d+)% ETA \d+:\d\d:\d\d +(\d{4}-\d\d-\d\d), day "
                     rf"([\d,]+) of ({totals}): ([\d,]+) inserted, 0 updated, [\d,]+/s")
    seen = [m for frame in frames for m in [bar.search(frame)] if m]
    assert len(seen) >= 3, frames[-5:]
    days_done = [int(m[3].replace(",", "")) for m in seen]
    assert days_done == sorted(days_done) and days_done[-1] > days_done[0]
    for m in seen:  # the percentage is the days done of the days to today
        total = int(m[4].replace(",", ""))
        assert abs(int(m[1]) - 100 * int(m[3].replace(",", "")) / total) <= 1, m[0]
        assert dt.date.fromisoformat(m[2]) == first + dt.timedelta(days=int(m[3].replace(",", "")))
    assert not any(re.search(r"[+~]\d|cursor", frame) for frame in frames)
    # When it ends, the bars are gone: the summary is all there is, from the top.
    text = [line for line in last if line.strip()]
    assert "Backfill summary" in text[0], last
    assert not any(re.search(r"demo/\w+ +[━╸╺]|ETA|%", line) for line in last), last
    assert any(re.search(r"│ demo +│ orders +│ +\d+ │ +8000 │", line) for line in text), last
