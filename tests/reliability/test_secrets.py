"""Row 6: secrets. (The token guard itself is the autouse `leaks` fixture in conftest.py.)

- A config file holding a token and readable by others gets a warning; 0600 or a
  token from the environment does not.
- The national register number (users.secnr) is nowhere in the database, the logs or
  the output in plain text, even when its record is quarantined, unless opted in.
- Errors, status and metrics of a run with a refused token show no token.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from syncer import page
from syncer import tables as t
from syncer.config import load_config
from syncer.daemon import Daemon
from syncer.db import make_engine
from syncer.ops import metrics_text
from syncer.simulator import Simulator
from syncer.status import build as build_status
from tests.conftest import LICENSE, TOKEN, Leaks
from tests.helpers import cli_env, run_cli
from tests.reliability.conftest import Figures
from tests.reliability.test_faults import daemon_config

TOML = f'[[licenses]]\nname = "{LICENSE}"\ntoken = "{TOKEN}"\n'


@pytest.mark.parametrize(("mode", "token_in_file", "warned"),
                         [(0o644, True, True), (0o640, True, True), (0o600, True, False),
                          (0o644, False, False)])
def test_a_config_with_a_token_readable_by_others_is_warned_about(
    tmp_path: Path, mode: int, token_in_file: bool, warned: bool
) -> None:
    path = tmp_path / "syncer.toml"
    path.write_text(TOML if token_in_file else
                    f'[[licenses]]\nname = "{LICENSE}"\ntoken_env = "CLOUDPOS_TOKEN"\n')
    path.chmod(mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_config(path, environ={})
    messages = [str(w.message) for w in caught]
    assert any("chmod 600" in m for m in messages) == warned, messages
    assert not any(TOKEN in m for m in messages)


def _everything(engine: Engine) -> str:
    """Every value of every table, as text."""
    with engine.connect() as conn:
        return "\n".join(repr(tuple(row)) for table in t.metadata.sorted_tables
                         for row in conn.execute(select(table)))


@pytest.mark.parametrize("opt_in", [False, True])
def test_the_national_number_is_never_stored_in_plain_text_unless_opted_in(
    sqlite_url: str, sim: Simulator, tmp_path: Path, opt_in: bool, leaks: Leaks
) -> None:
    users = sim.dataset.users
    with_secnr = [u for u in users.values() if u.secnr]
    assert len(with_secnr) >= 2
    # One user record is malformed, so it goes to the quarantine with its raw JSON.
    broken = with_secnr[0]
    users[broken.id] = replace(broken, extra={"admin": {"not": "a flag"}})
    if opt_in:
        (tmp_path / "syncer.toml").write_text("[privacy]\nstore_national_number = true\n")
    result = run_cli(["backfill", "--resource", "users"], cli_env(sqlite_url, sim.base_url), cwd=tmp_path)
    leaks.add("backfill output", result.output)
    assert result.exit_code == 0, result.output
    engine = make_engine(sqlite_url)
    stored = _everything(engine)
    with engine.connect() as conn:
        held = conn.execute(select(t.quarantine.c.raw)).scalars().all()
    engine.dispose()
    assert len(held) == 1
    kept = with_secnr[1].secnr
    assert kept is not None and broken.secnr is not None
    texts = [stored, result.output, *(text for _, text in leaks.texts)]
    if opt_in:
        assert kept in stored
    else:
        for number in (kept, broken.secnr, "".join(c for c in broken.secnr if c.isdigit())):
            assert not any(number in text for text in texts), f"{number} in plain text"


def test_errors_status_and_metrics_of_a_refused_token_show_no_token(
    sqlite_url: str, sim: Simulator, tmp_path: Path, leaks: Leaks, figures: Figures
) -> None:
    # Wrong token that contains the right one: a leak of either shows up.
    env = cli_env(sqlite_url, sim.base_url)
    sim.inject_fault("html", count=3)
    for command in (["backfill", "--resource", "products"], ["status"], ["status", "--json"],
                    ["call", "get-orders", "start=1", "end=2"]):
        result = run_cli(command, env, cwd=tmp_path)
        leaks.add(" ".join(command), result.output)
        if result.exception is not None:
            leaks.add("exception", repr(result.exception))
    engine = make_engine(sqlite_url)
    daemon = Daemon(engine, daemon_config(sqlite_url, sim))
    try:
        sim.inject_fault("reset", count=4)
        for res in daemon.run_due():
            leaks.add("run result", repr(res))
        leaks.add("metrics", metrics_text(daemon))
        leaks.add("page", page.render(build_status(engine, daemon.config)))
        leaks.add("health", repr(daemon.healthy()))
        with engine.connect() as conn:
            leaks.add("database", _everything(engine))
            leaks.add("ledger params", repr(conn.execute(select(t.request_ledger.c.params)).all()))
    finally:
        for lic in daemon.licenses:
            lic.close()
        engine.dispose()
    assert leaks.texts and not leaks.found()
    figures.add("6 secrets", faults=sim.stats()["faults_served"])
