"""The README's "Pointing it at a real license" steps, run as written, in the order written,
against `syncer simulate` through the real CLI: on a new SQLite file and on a new (empty)
Postgres database."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLI_OUTPUTS
from tests.helpers import finish, spawn_cli

ROOT = Path(__file__).resolve().parent.parent
SIMULATOR_TOKEN = "demo-token"  # `syncer simulate`'s license demo


def section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    return readme[start:readme.index("\n## ", start + 1)]


def block(text: str, language: str) -> str:
    start = text.index(f"```{language}\n") + len(f"```{language}\n")
    return text[start:text.index("```", start)]


def commands(script: str) -> list[list[str]]:
    """The script's lines as argument lists, comments dropped."""
    return [shlex.split(line, comments=True) for line in script.splitlines()
            if shlex.split(line, comments=True)]


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[str]:
    """`syncer simulate` as a user starts it, on a free port: its API URL."""
    proc = spawn_cli(["simulate", "--port", "0", "--orders", "400"], {**os.environ}, tmp_path)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+/api/)", banner)
        assert found, banner
        yield found[1]
    finally:
        proc.send_signal(signal.SIGINT)
        finish(proc, timeout=20)


def test_the_real_license_steps_work_in_the_order_written(
    db_url: str, simulator: str, tmp_path: Path
) -> None:
    steps = section("Pointing it at a real license")
    config = block(steps, "toml")
    written = 'url = "sqlite:///cloudpos.db"'
    assert written in config and 'name = "myshop"' in config
    if not db_url.startswith("sqlite"):
        config = config.replace(written, f'url = "{db_url}"')
    # The simulator's license; the SQLite URL stays as written: a new file in the cwd.
    (tmp_path / "syncer.toml").write_text(config.replace('name = "myshop"', 'name = "demo"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    env["CLOUDPOS_BASE_URL"] = simulator  # the documented override, instead of the real API

    script = commands(block(steps, "bash"))
    assert [c[:2] for c in script] == [
        ["export", script[0][1]], ["syncer", "migrate"], ["syncer", "check"],
        ["syncer", "backfill"], ["syncer", "status"], ["syncer", "report"]]
    outputs = {}
    for command in script:
        if command[0] == "export":
            name, _, _value = command[1].partition("=")
            env[name] = SIMULATOR_TOKEN
            continue
        done = subprocess.run([sys.executable, "-m", "syncer", *command[1:]], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              check=False)
        output = done.stdout + done.stderr
        CLI_OUTPUTS.append((" ".join(command), output))
        assert done.returncode == 0, (command, output)
        outputs[command[1]] = " ".join(output.split())

    if db_url.startswith("sqlite"):
        assert (tmp_path / "cloudpos.db").is_file()
    assert "license demo: credentials accepted" in outputs["check"]
    assert re.search(r"│ demo │ orders │ \d+ │ [1-9]\d* │", outputs["backfill"]), outputs["backfill"]
    assert "license demo: " in outputs["status"]
    assert "report_daily_sales, license demo" in outputs["report"]
    assert "no rows" not in outputs["report"]
