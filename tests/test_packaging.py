"""The Dockerfile and docker-compose.yml, tested without a Docker engine: the files parse,
everything they reference exists, and the commands they run work in a plain venv."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from syncer import reports
from syncer.config import load_config
from syncer.db import make_engine, migrate
from syncer.simulator import Simulator
from tests.helpers import cli_env, finish, run_cli, spawn_serving_daemon

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SECRET = re.compile(r"TOKEN|PASSWORD|SECRET|PASSWD|API_?KEY", re.IGNORECASE)
DAEMON = ["syncer", "run", "--http", "0.0.0.0:9108"]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def resolve(text: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} with VAR unset: the default."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", text)


def bind_sources(service: dict[str, Any]) -> list[str]:
    """The host side of a service's bind mounts (named volumes left out)."""
    sources = []
    for volume in service.get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else resolve(volume).split(":")[0]
        if source.startswith((".", "/", "~")):
            sources.append(source)
    return sources


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    steps = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            steps.append((instruction.upper(), args.strip()))
    return steps


def console_script() -> Path:
    script = Path(sys.executable).parent / "syncer"
    assert script.is_file(), "the `syncer` console script is not installed next to this Python"
    return script


def plain_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    env.update(extra)
    return env


def run(args: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, text=True, **{"timeout": 120, **options})


# --- docker-compose.yml --------------------------------------------------------------------


def test_compose_file_parses_and_everything_it_references_exists() -> None:
    doc = compose()
    services = doc["services"]
    assert {"db", "migrate", "syncer", "backfill", "grafana", "prometheus"} <= set(services)
    named = set(doc.get("volumes") or {})
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (ROOT / context / "Dockerfile").is_file(), name
        for source in bind_sources(service):
            assert (ROOT / source).exists(), (name, source)
        for volume in service.get("volumes", []):
            source = resolve(volume).split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/", "~")):
                assert source in named, (name, source)
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)


def test_compose_migrates_then_runs_the_daemon_with_a_healthcheck() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["syncer", "migrate"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    daemon = services["syncer"]
    assert daemon["command"] == DAEMON
    assert daemon["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    check = daemon["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] == "python"  # no curl in a slim image
    assert "http://127.0.0.1:9108/healthz" in check[-1]
    # Postgres unless SYNCER_DATABASE_URL says otherwise (the mariadb profile)
    assert daemon["environment"]["SYNCER_DATABASE_URL"].startswith(
        "${SYNCER_DATABASE_URL:-postgresql+psycopg://")
    assert "@db:5432/cloudpos" in daemon["environment"]["SYNCER_DATABASE_URL"]
    assert services["db"]["environment"]["POSTGRES_DB"] == "cloudpos"
    mariadb = services["mariadb"]
    assert mariadb["profiles"] == ["mariadb"]
    assert mariadb["environment"]["MARIADB_DATABASE"] == "cloudpos"
    assert "--collation-server=utf8mb4_bin" in mariadb["command"]


def test_compose_holds_no_secret_only_references_to_the_environment() -> None:
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET.search(key):
                assert re.fullmatch(r"\$\{\w+(:?-[^}]*)?\}", str(value)), (name, key, value)
                # A default is only ever a local development password, never a token.
                assert "TOKEN" not in key or value in ("${CLOUDPOS_TOKEN:-}", "${CLOUDPOS_TOKEN}")


def test_the_mounted_config_reads_licenses_and_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # as in the image: no ./syncer.toml
    service = compose()["services"]["syncer"]
    mount = next(v for v in service["volumes"] if "/etc/syncer/syncer.toml" in v)
    source, target = resolve(mount).split(":")[:2]
    assert service["environment"]["SYNCER_CONFIG"] == target
    env = {"SYNCER_CONFIG": str(ROOT / source), "SYNCER_DATABASE_URL": "sqlite:///x.db",
           "CLOUDPOS_LICNAME": "myshop", "CLOUDPOS_TOKEN": "s3cret"}
    config = load_config(environ=env, path=None)
    assert [lic.name for lic in config.licenses] == ["myshop"]
    assert config.licenses[0].token_env == "CLOUDPOS_TOKEN"
    assert config.database.url == "sqlite:///x.db"
    assert service["environment"]["CLOUDPOS_TOKEN"] == "${CLOUDPOS_TOKEN:-}"
    assert "s3cret" not in (ROOT / source).read_text()


def test_bi_profile_points_grafana_at_the_database_read_only() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    assert grafana["profiles"] == ["bi"]
    provisioning = ROOT / "deploy/grafana/provisioning"
    sources = yaml.safe_load((provisioning / "datasources/cloudpos.yaml").read_text())["datasources"]
    assert len(sources) == 1
    source = sources[0]
    assert source["url"] == "db:5432"
    assert source["jsonData"]["database"] == services["db"]["environment"]["POSTGRES_DB"]
    assert source["user"] == "reporter"
    assert source["secureJsonData"]["password"] == "$REPORTER_PASSWORD"
    assert "REPORTER_PASSWORD" in grafana["environment"]
    init = (ROOT / "deploy/postgres/10-reporter.sh").read_text()
    assert "CREATE ROLE reporter" in init and "GRANT SELECT" in init
    assert "INSERT" not in init and "ALL PRIVILEGES" not in init
    providers = yaml.safe_load((provisioning / "dashboards/cloudpos.yaml").read_text())["providers"]
    mounted = {resolve(v).split(":")[1]: resolve(v).split(":")[0] for v in grafana["volumes"]
               if resolve(v).startswith(".")}
    for provider in providers:
        folder = ROOT / mounted[provider["options"]["path"]]
        assert list(folder.glob("*.json")), provider
    for panel in dashboard()["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
        assert panel["datasource"]["type"] == source["type"]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (ROOT / "deploy/grafana/dashboards/cloudpos-sales.json").read_text())
    return loaded


def test_dashboard_queries_run_against_the_report_views(pg_url: str) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    queries = [target["rawSql"] for panel in dashboard()["panels"] for target in panel["targets"]]
    queries += [v["query"] for v in dashboard()["templating"]["list"]]
    assert len(queries) >= 7
    used: set[str] = set()
    with engine.connect() as conn:
        for query in queries:
            # Grafana's macros, as a query without a time range would read.
            sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 IS NOT NULL", query).replace("$license", "demo")
            conn.execute(sa.text(sql)).all()
            used.update(name for name in reports.NAMES if name in sql)
    assert used == set(reports.NAMES)
    engine.dispose()


PROFILES = ("backfill", "bi", "ops", "mariadb")


@pytest.mark.parametrize("profiles", [(), *((p,) for p in PROFILES), PROFILES],
                         ids=lambda p: "+".join(p) or "none")
def test_compose_is_complete_with_every_profile(profiles: tuple[str, ...]) -> None:
    """`docker compose [--profile P]... up`: every service started depends only on
    services started too, and every profile named exists."""
    services = compose()["services"]
    named = {p for service in services.values() for p in service.get("profiles", [])}
    assert named == set(PROFILES)
    active = {name for name, service in services.items()
              if not service.get("profiles") or set(service["profiles"]) & set(profiles)}
    for name in active:
        for dependency in services[name].get("depends_on", {}):
            assert dependency in active, (profiles, name, dependency)


def test_ops_profile_runs_prometheus_scraping_the_syncer_with_the_alert_rules(tmp_path: Path) -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["ops"]
    assert prometheus["depends_on"]["syncer"]["condition"] == "service_started"
    assert any(port.endswith(":9090") and port.startswith("127.0.0.1:") for port in prometheus["ports"])
    mounts = {resolve(v).split(":")[1]: resolve(v).split(":")[0] for v in prometheus["volumes"]
              if resolve(v).startswith(".")}
    flags = dict(arg.split("=", 1) for arg in prometheus["command"])
    config_path = ROOT / mounts[flags["--config.file"]]
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        assert (ROOT / mounts[rule_file]).is_file(), rule_file
    [scrape] = config["scrape_configs"]
    assert scrape["metrics_path"] == "/metrics"
    # The target is the syncer service on the port its --http listens on.
    listen = services["syncer"]["command"][services["syncer"]["command"].index("--http") + 1]
    assert scrape["static_configs"][0]["targets"] == [f"syncer:{listen.rsplit(':', 1)[1]}"]
    # The job name the alert rules expect.
    assert f'job="{scrape["job_name"]}"' in (ROOT / "deploy/prometheus/alerts.yml").read_text()
    # Grafana (profile bi) reads this Prometheus for the sync-health dashboard.
    provisioning = ROOT / "deploy/grafana/provisioning"
    [source] = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    health = json.loads((ROOT / "deploy/grafana/dashboards/cloudpos-sync-health.json").read_text())
    assert {p["datasource"]["uid"] for p in health["panels"]} == {source["uid"]}
    titles = " ".join(p["title"] for p in health["panels"]).lower()
    assert "budget" in titles or "requests spent" in titles
    assert "lag" in titles and "outcome" in titles
    # promtool reads the config as Prometheus would (rule paths as mounted in the container).
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (apt-get install prometheus; .ci/run installs it)")
        pytest.skip("promtool is not installed")
    local = yaml.safe_load(config_path.read_text())
    local["rule_files"] = [str(ROOT / mounts[r]) for r in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    done = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_and_holds_no_secret() -> None:
    steps = dockerfile()
    assert steps[0][0] == "FROM" and steps[0][1].endswith("-slim")
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    created = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert re.search(rf"useradd\b.*\b{re.escape(users[-1])}\b", created)
    for instruction, args in steps:
        if instruction in ("ENV", "ARG", "LABEL"):
            assert not SECRET.search(args), (instruction, args)
    assert not any(instruction == "COPY" and ".toml" in args and "pyproject" not in args
                   for instruction, args in steps), "no config file is baked in"


def test_dockerfile_copies_only_what_exists_and_is_not_dockerignored() -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = [shlex.split(args) for instruction, args in dockerfile() if instruction == "COPY"]
    assert copies
    for words in copies:
        sources = [w for w in words[:-1] if not w.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    for secret in ("syncer.toml", "*.db", ".venv", "tests", ".env"):
        assert secret in ignored


def test_dockerfile_and_compose_commands_work_in_a_plain_venv(tmp_path: Path) -> None:
    """What the image runs: the console script, `syncer migrate` on a fresh database, and
    every command of the Dockerfile and of docker-compose.yml accepts its options."""
    script = console_script()
    assert run([str(script), "--help"], capture_output=True, env=plain_env(),
                          cwd=tmp_path, timeout=60).returncode == 0
    url = f"sqlite:///{tmp_path}/image.db"
    done = run([str(script), "migrate"], capture_output=True, timeout=120,
                          env=plain_env(SYNCER_DATABASE_URL=url), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    engine = make_engine(url)
    assert "report_vat" in sa.inspect(engine).get_view_names()
    engine.dispose()

    cmd = next(args for instruction, args in dockerfile() if instruction == "CMD")
    commands = [json.loads(cmd)]
    commands += [s["command"] for s in compose()["services"].values()
                 if isinstance(s.get("command"), list) and s["command"][0] == "syncer"]
    assert DAEMON in commands
    for command in commands:
        subcommand = [w for w in command[1:] if not w.startswith("-")][:1]
        options = [w for w in command[1:] if w.startswith("--")]
        # In process: the console script itself was run above.
        shown = run_cli([*subcommand, "--help"], plain_env(), cwd=tmp_path)
        assert shown.exit_code == 0, (command, shown.output)
        for option in options:
            assert option in shown.output, (command, option)


def test_the_compose_healthcheck_passes_against_a_running_daemon(sim: Simulator, tmp_path: Path) -> None:
    env = cli_env(f"sqlite:///{tmp_path}/daemon.db", sim.base_url)
    daemon, port = spawn_serving_daemon(env, tmp_path, command=[str(console_script())])
    check = compose()["services"]["syncer"]["healthcheck"]["test"]
    probe = [sys.executable, *check[2:-1], check[-1].replace("9108", str(port))]
    try:
        assert run(probe, timeout=30).returncode == 0
        assert run([*probe[:-1], probe[-1].replace("/healthz", "/nothing")],
                              capture_output=True, timeout=30).returncode != 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        output = finish(daemon, timeout=20)
    assert daemon.returncode == 0, output
    grace = compose()["services"]["syncer"]["stop_grace_period"]
    assert int(grace.rstrip("s")) >= 10


@pytest.mark.parametrize("path", ["deploy/postgres/10-reporter.sh"])
def test_init_script_is_executable_shell(path: str) -> None:
    script = ROOT / path
    assert script.read_text().startswith("#!/bin/sh\n")
    assert os.access(script, os.X_OK)
    assert run(["sh", "-n", str(script)], timeout=10).returncode == 0
