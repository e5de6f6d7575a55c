"""The operations surface: the status page in a real headless Chromium, /metrics as
Prometheus parses it, `syncer status` from the database, and the alert rules under
promtool. The page, /metrics and `status --json` read one model, and a test holds them
to the same numbers."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import websocket
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import Engine, insert

from syncer import tables as t
from syncer.config import ApiConfig, Config, LicenseConfig, ResourceConfig, load_config
from syncer.daemon import Daemon
from syncer.ledger import api_day, utcnow
from syncer.ops import serve
from syncer.simulator import Simulator, generate
from syncer.status import CatchUp, _job_names, build, catch_up, outcome_label, when
from tests.conftest import ANCHOR, LICENSE, TOKEN, Leaks
from tests.helpers import FakeClock, before_opening, cli_env, finish, run_cli, spawn_serving_daemon

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy/prometheus"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path("/tmp/cloudpos-syncer-status-page.png")
REFUSED = "shop2"  # a license whose token the simulator refuses
IN_CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    """A tool the test cannot do without: missing in CI is a failure, elsewhere a skip."""
    found = shutil.which(tool)
    if found is None:
        message = f"{tool} is not installed (Debian: apt-get install {tool}; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def metrics(text: str) -> dict[str, Any]:
    """Family name -> family, as prometheus_client's own parser reads the exposition."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    family = families[name.removesuffix("_total") if families.get(name) is None else name]
    found = [s.value for s in family.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, family.samples)
    return float(found[0])


def readme_metrics() -> dict[str, str]:
    """The metrics table of docs/operations.md: name -> type."""
    text = (ROOT / "docs" / "operations.md").read_text()
    found = dict(re.findall(r"^\| `(syncer_\w+)` \| (gauge|counter) \|", text, re.MULTILINE))
    assert len(found) >= 7, "the metrics table of docs/operations.md was not found"
    return found


# --- a small DevTools client ----------------------------------------------------------------


class Browser:
    """Headless Chromium (Debian's package), driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            line = self.proc.stderr.readline()
            assert line or self.proc.poll() is None, "chromium exited before it listened"
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(match.group(1)) if match else None
            assert time.monotonic() < deadline, "chromium never said where DevTools listens"
        targets = json.loads(get(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, (method, message)
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_for(self, event: str, timeout: float) -> None:
        """Until `event` arrives (events seen before this call are forgotten)."""
        deadline = time.monotonic() + timeout
        self.events.clear()
        while not any(e.get("method") == event for e in self.events):
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                raise AssertionError(f"no {event} within {timeout} s") from None
            assert time.monotonic() < deadline, f"no {event} within {timeout} s"
        self.ws.settimeout(30)

    def js(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        need("chromium")
    chrome = Browser(tmp_path / "chromium-profile")
    try:
        yield chrome
    finally:
        chrome.close()


# --- the page in a browser --------------------------------------------------------------------


def two_license_config(tmp_path: Path) -> None:
    """./syncer.toml: the good license `demo` (token from the environment) and one whose
    token the simulator refuses."""
    config = tmp_path / "syncer.toml"
    config.write_text(f'[[licenses]]\nname = "{LICENSE}"\ntoken_env = "CLOUDPOS_TOKEN"\n\n'
                      f'[[licenses]]\nname = "{REFUSED}"\ntoken = "wrong-token-for-shop2"\n')
    config.chmod(0o600)


def test_the_status_page_in_headless_chromium(
    sqlite_url: str, tmp_path: Path, browser: Browser, leaks: Leaks
) -> None:
    sim = Simulator(generate(seed=1, orders=600, anchor=ANCHOR),
                    licenses={LICENSE: TOKEN, REFUSED: "the-right-token-of-shop2"})
    sim.start()
    two_license_config(tmp_path)
    proc, port = spawn_serving_daemon(cli_env(sqlite_url, sim.base_url), tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # until demo's orders are in and shop2's refusal is stored
            families = metrics(get(f"{base}/metrics"))
            refused = sample(families, "syncer_license_credentials_refused", license=REFUSED)
            orders = [s for s in families["syncer_last_success_timestamp_seconds"].samples
                      if s.labels == {"license": LICENSE, "sync_job": "orders"}]
            if refused == 1 and orders:
                break
            assert time.monotonic() < deadline, "the daemon never synced demo and refused shop2"
            time.sleep(0.3)
        bad_logins = [s.value for s in families["syncer_requests"].samples
                      if s.labels["license"] == REFUSED and s.labels["outcome"] == "auth"]
        assert sum(bad_logins) == 1  # one bad login in all, counted as outcome "auth"

        browser.call("Emulation.setDeviceMetricsOverride", width=412, height=1800,
                     deviceScaleFactor=1, mobile=True)
        browser.call("Page.navigate", url=f"{base}/?refresh=2")
        browser.wait_for("Page.loadEventFired", timeout=30)
        html = browser.js("document.documentElement.outerHTML")
        text = browser.js("document.body.innerText")
        leaks.add("status page", html)
        sections = browser.js("[...document.querySelectorAll('section.license')].map(s => s.id)")
        assert sections == [f"license-{LICENSE}", f"license-{REFUSED}"]
        for name in (LICENSE, REFUSED):
            jobs = browser.js(f"[...document.querySelectorAll('#license-{name} tr[data-job]')]"
                              ".map(r => r.dataset.job)")
            assert jobs == _job_names()
            assert browser.js(f"getComputedStyle(document.querySelector('#license-{name}'))"
                              ".display") != "none"
        stopped = browser.js(f"document.querySelector('#license-{REFUSED}').innerText")
        assert browser.js(f"document.querySelector('#license-{REFUSED}').dataset.state") == "stopped"
        assert "The API refused the credentials, license stopped: API error 1002" in stopped
        assert ("What to do: Fix the license name, token or api.base_url in the config, then "
                "restart") in stopped
        assert browser.js(f"document.querySelector('#license-{LICENSE}').dataset.state") != "stopped"
        demo = browser.js(f"document.querySelector('#license-{LICENSE}').innerText")
        # 600 orders: the first window of 500 was full, so the history may still be catching up.
        assert re.search(r"Orders: (as of \d{4}-\d\d-\d\d \d\d:\d\d CES?T|catching up on "
                         r"history: \d{4}-\d\d-\d\d reached, day \d+ of \d+)", demo), demo
        assert browser.js("document.querySelectorAll('svg.hourly rect').length") == 48
        # Read-only: nothing to click that could change anything, and no script at all.
        assert browser.js("document.querySelectorAll('form,button,input,select,textarea,a,script')"
                          ".length") == 0
        # Every time says its zone.
        for match in re.finditer(r"\b\d\d:\d\d(:\d\d)?\b", text):
            assert re.match(r" (CES?T|UTC)", text[match.end():match.end() + 5]), text[match.start() - 30:
                                                                                   match.end() + 10]
        # No token, no national register number.
        for secret in (TOKEN, "wrong-token-for-shop2", "the-right-token-of-shop2",
                       *(u.secnr for u in sim.dataset.users.values() if u.secnr)):
            assert secret not in html
        # It refreshes itself: the page loads again, later.
        first = browser.js("document.getElementById('updated').textContent")
        browser.wait_for("Page.loadEventFired", timeout=15)
        again = browser.js("document.getElementById('updated').textContent")
        assert again != first and again.startswith("Updated ")
        shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        assert SCREENSHOT.read_bytes().startswith(b"\x89PNG")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = finish(proc, timeout=20)
        sim.stop()
    assert proc.returncode == 0, out


# Each state of a day's budget: (spent, refused credentials, paused by a 1003).
def midday_of_today(config: Config) -> dt.datetime:
    """13:00 in the API's zone on today's API day, in UTC: inside the default opening
    hours, whatever the hour the test runs at."""
    day = api_day(utcnow(), config.api.tz)
    return dt.datetime.combine(day, dt.time(13), tzinfo=config.api.tz).astimezone(dt.UTC)


def zone_at_one_pm() -> str:
    """A fixed-offset zone whose local time is now between 13:00 and 14:00."""
    offset = 13 - utcnow().hour
    offset += 24 if offset < -12 else -24 if offset > 14 else 0
    return f"Etc/GMT{-offset:+d}"  # the Etc/GMT names count the other way round


BUDGET_STATES = {"fresh": (0, False, False), "midday": (44, False, False),
                 "spent": (450, False, False), "reserve": (470, False, False),
                 "stopped": (5, True, False), "paused": (450, False, True)}


def test_the_budget_legend_adds_up_to_the_bar_in_every_state(
    engine: Engine, tmp_path: Path, browser: Browser
) -> None:
    """The legend's numbers add up to the bar, and each colour's number is the width of
    the segment it colours, read from the page Chromium rendered: a fresh day, mid-day,
    the scheduled budget spent, the reserve partly spent by `syncer call`, credentials
    refused and a 1003 pause."""
    config = Config(api=ApiConfig(daily_budget=500, reserve=50),
                    licenses=tuple(LicenseConfig(name=name, token=SecretStr(f"token-{name}"))
                                   for name in BUDGET_STATES))
    now = midday_of_today(config)  # the plan for the rest of the day depends on the hour
    with engine.begin() as conn:
        for lic in config.licenses:
            spent, refused, paused = BUDGET_STATES[lic.name]
            if spent:
                conn.execute(insert(t.request_budget).values(
                    license=lic.name, day=api_day(now, config.api.tz), spent=spent))
            if refused or paused:
                conn.execute(insert(t.license_state).values(
                    license=lic.name, updated_at=now,
                    auth_rejected_fingerprint=lic.fingerprint(config.api.base_url) if refused else None,
                    auth_rejected_reason="API error 1002: name or token not valid" if refused else None,
                    blocked_until=now + dt.timedelta(hours=2) if paused else None,
                    blocked_reason="API error 1003: daily limit reached" if paused else None))
    server = serve(Daemon(engine, config, clock=lambda: now), "127.0.0.1", 0)
    try:
        browser.call("Emulation.setDeviceMetricsOverride", width=1000, height=2000,
                     deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", url=f"http://127.0.0.1:{server.server_address[1]}/")
        browser.wait_for("Page.loadEventFired", timeout=30)
        shown = browser.js("""[...document.querySelectorAll('section.license')].map(s => {
            const bar = s.querySelector('.bar').getBoundingClientRect().width;
            const legend = {};
            s.querySelectorAll('.legend b').forEach(b => legend[b.className.slice(2)] = +b.textContent);
            const widths = {};
            s.querySelectorAll('.bar span').forEach(
                span => widths[span.className] = span.getBoundingClientRect().width);
            return {name: s.id.slice(8), state: s.dataset.state, bar, legend, widths,
                    text: s.querySelector('.legend').innerText};
        })""")
    finally:
        server.shutdown()
    status = build(engine, config, now=now)
    assert [lic["name"] for lic in shown] == list(BUDGET_STATES)
    for lic in shown:
        legend, widths, bar = lic["legend"], lic["widths"], lic["bar"]
        name = lic["name"]
        parts = {k: legend[k] for k in ("spent", "planned", "free", "reserve")}
        assert sum(parts.values()) == legend["budget"] == 500, lic
        assert abs(sum(widths.values()) - bar) <= 1, lic  # the segments fill the bar
        for part, value in parts.items():  # each number is its segment's width
            assert abs(widths.get(part, 0) - bar * value / 500) <= 1, (name, part, lic)
        model = status.license(name)
        assert model is not None
        assert parts["spent"] == model.spent == BUDGET_STATES[name][0]
        assert parts["planned"] + parts["free"] == model.left, lic
    by_name = {lic["name"]: lic for lic in shown}
    assert by_name["fresh"]["legend"]["reserve"] == 50 and by_name["fresh"]["legend"]["spent"] == 0
    assert by_name["midday"]["legend"]["planned"] > 0
    assert by_name["spent"]["legend"]["free"] == by_name["spent"]["legend"]["planned"] == 0
    assert by_name["reserve"]["legend"]["reserve"] == 30  # 20 of the 50 spent by `syncer call`
    assert by_name["stopped"]["state"] == by_name["paused"]["state"] == "stopped"
    assert by_name["stopped"]["legend"]["planned"] == 0  # nothing is sent: nothing planned
    assert "spent 44" in by_name["midday"]["text"] and "of 500 today" in by_name["midday"]["text"]


CATCHING_UP_SHOT = Path("/tmp/cloudpos-syncer-status-page-catching-up.png")


def test_catching_up_on_history_is_its_own_state_on_the_page_in_status_and_metrics(
    db_url: str, engine: Engine, tmp_path: Path, browser: Browser, leaks: Leaks
) -> None:
    """A daemon started without a backfill loads the orders' history one window per run:
    meanwhile the page, `syncer status` (text and JSON) and /metrics say it is catching up,
    how far its days have come and the expected end, never "Orders: as of 2 min ago";
    once it is in, the orders are fresh again and the audit has run."""
    clock = FakeClock(dt.datetime(2026, 10, 27, 18, 0, tzinfo=ZoneInfo("Europe/Brussels")))
    sim = Simulator(generate(seed=1, orders=600, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    clock=clock)
    sim.start()
    env = cli_env(db_url, sim.base_url)
    config = Config(api=ApiConfig(base_url=sim.base_url),
                    licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),),
                    resources={"orders": ResourceConfig(window=50, min_window=50, max_window=50)})
    daemon = Daemon(engine, config, clock=clock)
    server = serve(daemon, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for _ in range(4):
            daemon.run_due()
            clock.advance(minutes=2)
        status = build(engine, config, now=clock())
        [lic] = status.licenses
        orders = lic.job("orders")
        assert orders is not None and orders.catching_up is not None
        up = orders.catching_up
        assert up.first_day is not None and up.reached_day is not None
        assert up.days_done is not None and up.days_total is not None
        assert up.first_day <= up.reached_day < ANCHOR and 0 < up.days_done < up.days_total
        assert up.days_total == (ANCHOR - up.first_day).days
        assert up.expected_end is not None and up.expected_end > clock()
        assert lic.history_loading and lic.audit_at is None

        browser.call("Emulation.setDeviceMetricsOverride", width=1000, height=1400,
                     deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", url=f"{base}/")
        browser.wait_for("Page.loadEventFired", timeout=30)
        section = browser.js(f"document.querySelector('#license-{LICENSE}').innerText")
        leaks.add("page", browser.js("document.documentElement.outerHTML"))
        assert "Orders: as of" not in section
        assert (f"Orders: catching up on history: {up.reached_day.isoformat()} reached, day "
                f"{up.days_done} of {up.days_total} ({100 * up.days_done // up.days_total} %); "
                f"expected end about {when(up.expected_end, config.api.tz)}") in section
        assert "Audit: history still loading; the audit runs when it is in" in section
        width = browser.js("document.querySelector('.catching-up .bar span').getBoundingClientRect()"
                           ".width / document.querySelector('.catching-up .bar')"
                           ".getBoundingClientRect().width")
        assert abs(width - up.days_done / up.days_total) < 0.01  # the bar counts the days
        shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        CATCHING_UP_SHOT.write_bytes(base64.b64decode(shot["data"]))

        families = metrics(get(f"{base}/metrics"))
        labels = {"license": LICENSE, "sync_job": "orders"}
        assert sample(families, "syncer_job_catching_up", **labels) == 1
        assert sample(families, "syncer_job_catching_up", license=LICENSE, sync_job="products") == 0
        assert sample(families, "syncer_job_catch_up_days_left", **labels) == \
            up.days_total - up.days_done
        assert abs(sample(families, "syncer_job_catch_up_end_timestamp_seconds", **labels)
                   - up.expected_end.timestamp()) <= 1

        text = run_cli(["status"], env, cwd=tmp_path).output
        assert f"orders: catching up on history: {up.reached_day.isoformat()} reached" in text
        assert "Audit: history still loading" in text
        report = json.loads(run_cli(["status", "--json"], env, cwd=tmp_path).stdout)
        [shown] = [r for r in report["licenses"][0]["resources"] if r["resource"] == "orders"]
        assert shown["catching_up"]["reached_day"] == up.reached_day.isoformat()
        assert shown["catching_up"]["days_done"] == up.days_done
        assert report["licenses"][0]["history_loading"] is True

        for _ in range(30):  # until the history is in
            daemon.run_due()
            clock.advance(minutes=2)
        [lic] = build(engine, config, now=clock()).licenses
        orders = lic.job("orders")
        assert orders is not None and orders.catching_up is None and not lic.history_loading
        assert lic.audit_at is not None and lic.audit_problems == 0  # audited once it was in
        page = get(f"{base}/")
        assert "Orders: as of " in page and "catching up" not in page
        assert "no problem" in page
        assert sample(metrics(get(f"{base}/metrics")), "syncer_job_catching_up", **labels) == 0
    finally:
        server.shutdown()
        for lic_jobs in daemon.licenses:
            lic_jobs.close()
        sim.stop()


def test_a_catch_up_counts_days_as_the_backfill_and_expects_its_end_at_its_pace() -> None:
    since = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)
    now = since + dt.timedelta(hours=2)
    # From Nov 1 to Nov 11 in two hours: the 25 days left to Dec 6 take five more.
    up = catch_up(since, dt.date(2026, 11, 1), dt.date(2026, 10, 1), dt.date(2026, 11, 11),
                  dt.date(2026, 12, 6), now)
    assert (up.days_done, up.days_total, up.days_left) == (41, 66, 25)
    assert up.expected_end == now + dt.timedelta(hours=5)
    # No day gained yet: no pace, no end; a history without days (coupons): since only.
    assert catch_up(since, dt.date(2026, 11, 11), dt.date(2026, 10, 1), dt.date(2026, 11, 11),
                    dt.date(2026, 12, 6), now).expected_end is None
    assert catch_up(since, None, None, None, dt.date(2026, 12, 6), now) == CatchUp(
        since, None, None, None, None, None)


# --- one model, three views ----------------------------------------------------------------


def test_status_json_metrics_and_the_page_say_the_same_numbers(
    db_url: str, engine: Engine, sim: Simulator, tmp_path: Path, leaks: Leaks
) -> None:
    # The API's day in a zone where it is now early afternoon, inside the default opening
    # hours: whatever the hour the test runs at, part of the day is left to plan (near
    # midnight there rightly is none, and the planned numbers would agree trivially).
    (tmp_path / "syncer.toml").write_text(f'[api]\ntimezone = "{zone_at_one_pm()}"\n')
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill"], env, cwd=tmp_path).exit_code == 0
    run_cli(["call", "get-orders", "start=1", "end=2"], env, cwd=tmp_path)
    config = load_config(environ=env, path=tmp_path / "syncer.toml")
    daemon = Daemon(engine, config)  # not started: the server reads the database only
    server = serve(daemon, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for _ in range(3):  # the plan is per minute: read the three within one
            result = run_cli(["status", "--json"], env, cwd=tmp_path)
            families = metrics(get(f"{base}/metrics"))
            html = get(f"{base}/")
            again = json.loads(run_cli(["status", "--json"], env, cwd=tmp_path).stdout)
            report = json.loads(result.stdout)
            if report["generated_at"][:16] == again["generated_at"][:16]:
                break
    finally:
        server.shutdown()
    leaks.add("page", html)
    [lic] = report["licenses"]
    assert lic["requests_used_today"] > 0 and lic["requests_planned_today"] > 0
    section = html[html.index(f'id="license-{LICENSE}"'):]

    def on_page(name: str) -> int:
        return int(re.search(rf"class=v-{name}>(\d+)<", section).group(1))  # type: ignore[union-attr]

    for key, metric, shown in (("requests_used_today", "syncer_requests_spent_today", "spent"),
                               ("requests_planned_today", "syncer_requests_planned_today", "planned"),
                               ("daily_budget", "syncer_requests_daily_budget", "budget"),
                               ("reserve", "syncer_requests_reserve", "reserve")):
        assert sample(families, metric, license=LICENSE) == lic[key] == on_page(shown), key
    # The bar's left part is what is planned of it and what is not.
    assert sample(families, "syncer_requests_left_today", license=LICENSE) == \
        lic["requests_left_today"] == on_page("planned") + on_page("free")
    assert sample(families, "syncer_quarantine_records", license=LICENSE) == lic["quarantined"]
    assert f"Quarantine: <b>{lic['quarantined']}</b>" in section
    today = sum(lic["requests_today"].values())
    ledger = sum(s.value for s in families["syncer_requests"].samples if s.labels["license"] == LICENSE)
    assert today == ledger == lic["requests_used_today"]  # one day of requests, all of it counted
    assert lic["requests_today"]["get-orders ok"] == sample(
        families, "syncer_requests_total", license=LICENSE, function="get-orders", outcome="ok")
    assert sum(lic["requests_per_hour"]) == today
    for job in lic["resources"]:
        labels = {"license": LICENSE, "sync_job": job["resource"]}
        row = re.search(rf'<tr data-job="{job["resource"]}">(.*?)(?=<tr|</tbody>)', section).group(1)  # type: ignore[union-attr]
        cells = re.findall(r"<td[^>]*>([^<]*)", row)  # job, last run, last success, next run, planned, rows
        planned = job["planned_requests_today"]
        assert sample(families, "syncer_job_planned_requests_today", **labels) == planned
        assert cells[4] == str(job["planned_requests_today"])
        if job["rows"] is not None:
            assert sample(families, "syncer_table_rows", **labels) == job["rows"]
            assert cells[5] == str(job["rows"])
        if job["last_success_at"]:
            stamp = sample(families, "syncer_last_success_timestamp_seconds", **labels)
            assert abs(stamp - _epoch(job["last_success_at"])) <= 1


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()


def test_metrics_are_the_readme_ones_with_their_types(
    sqlite_url: str, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(sqlite_url, sim.base_url)
    proc, port = spawn_serving_daemon(env, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while sim.stats()["requests"] < 16:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        text = get(f"http://127.0.0.1:{port}/metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc, timeout=20)
    families = metrics(text)
    exposed = {family.name + ("_total" if family.type == "counter" else ""): family.type
               for family in families.values()}
    with_samples = {s.name for family in families.values() for s in family.samples}
    for name, kind in readme_metrics().items():
        assert exposed.get(name) == kind, (name, kind, exposed.get(name))
        # Every metric has samples here, but the pause (only while paused), the audit (only
        # once the first audit is stored) and a catch-up's figures (only while one runs):
        # their own tests check them.
        assert name in with_samples or name in (
            "syncer_license_paused_until_timestamp_seconds", "syncer_audit_problems",
            "syncer_job_catch_up_days_left", "syncer_job_catch_up_end_timestamp_seconds"), name
    # ... and the table lists every syncer_ metric there is.
    assert {n for n in exposed if n.startswith("syncer_")} <= set(readme_metrics())
    assert sample(families, "syncer_up") == 1
    assert all(name.endswith("_total") for name, kind in exposed.items()
               if kind == "counter" and name.startswith("syncer_"))
    assert TOKEN not in text


def test_requests_are_labelled_by_outcome() -> None:
    assert [outcome_label("ok", None, 1, 3), outcome_label("empty", None, 2, 3),
            outcome_label("failed", None, 1, 3), outcome_label("failed", None, 3, 3),
            outcome_label("api_error", 1002, 1, 3), outcome_label("api_error", 1001, 1, 3),
            outcome_label("api_error", 1003, 1, 3), outcome_label("api_error", 1004, 1, 3),
            outcome_label("api_error", 1005, 1, 3), outcome_label("api_error", 2000, 1, 3),
            outcome_label("pending", None, 1, 3)] == [
        "ok", "ok", "retried", "failed", "auth", "auth", "1003", "1004", "1005", "api_error", "pending"]


# --- `syncer status` and `check` from the database (issue 13, item 1) ---------------------------


def test_status_after_the_demo_shows_the_demo_license_without_a_config(tmp_path: Path) -> None:
    demo = run_cli(["demo", "--db", str(tmp_path / "cloudpos-demo.db"), "--orders", "300",
                    "--now", before_opening()],  # no order of today's comes in meanwhile
                   {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))},
                   cwd=tmp_path)
    assert demo.exit_code == 0, demo.output
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    env["SYNCER_DATABASE_URL"] = "sqlite:///cloudpos-demo.db"  # the README's
    text = run_cli(["status"], env, cwd=tmp_path)
    assert text.exit_code == 0, text.output
    flat = " ".join(text.output.split())
    assert ("license demo (not in the config): 16 requests used today, 434 left (budget 500, "
            "reserve 50") in flat
    assert "Not in the config" in flat and "Add it as a [[licenses]] entry" in flat
    for job in _job_names():
        assert re.search(rf"│ {job} +│", text.output), job
    assert re.search(r"│ orders +│ 300 +│", text.output)
    report = json.loads(run_cli(["status", "--json"], env, cwd=tmp_path).stdout)
    assert [lic["license"] for lic in report["licenses"]] == ["demo"]
    assert report["not_in_config"] == ["demo"]
    [lic] = report["licenses"]
    assert lic["configured"] is False and lic["requests_used_today"] == 16
    assert lic["requests_planned_today"] == 0  # no daemon runs a license not in the config
    assert {r["resource"] for r in lic["resources"]} == set(_job_names())


def test_status_never_prints_nothing_and_check_warns_without_licenses(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "CLOUDPOS_"))}
    env["SYNCER_DATABASE_URL"] = db_url
    text = run_cli(["status"], env, cwd=tmp_path)
    assert text.exit_code == 0, text.output
    assert "no license in the config, and none in this database yet" in " ".join(text.output.split())
    assert json.loads(run_cli(["status", "--json"], env, cwd=tmp_path).stdout)["licenses"] == []
    check = run_cli(["check"], env, cwd=tmp_path)
    flat = " ".join(check.output.split())
    assert "ok (0 license(s))" not in flat
    assert "no license configured: nothing would be synced. Add a [[licenses]] entry" in flat


def test_status_shows_a_configured_license_and_one_only_the_database_knows(
    db_url: str, engine: Engine, sim: Simulator, tmp_path: Path
) -> None:
    env = cli_env(db_url, sim.base_url)
    assert run_cli(["backfill", "--resource", "products"], env, cwd=tmp_path).exit_code == 0
    other = cli_env(db_url, sim.base_url, CLOUDPOS_LICNAME="newshop")
    report = json.loads(run_cli(["status", "--json"], other, cwd=tmp_path).stdout)
    assert [(lic["license"], lic["configured"]) for lic in report["licenses"]] == [
        ("newshop", True), (LICENSE, False)]
    assert report["not_in_config"] == [LICENSE]
    text = " ".join(run_cli(["status"], other, cwd=tmp_path).output.split())
    assert "license newshop: 0 requests used today" in text
    assert f"license {LICENSE} (not in the config): 1 requests used today" in text


# --- alert rules ------------------------------------------------------------------------------


def test_the_alert_rules_pass_promtool_check() -> None:
    promtool = need("promtool")
    done = subprocess.run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_each_alert_fires_in_its_promtool_unit_test() -> None:
    promtool = need("promtool")
    rules = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    assert rules == {"SyncerDown", "SyncerCredentialsRefused", "SyncerBudgetBelowPlan",
                     "SyncerOrdersStale", "SyncerJobFailing", "SyncerJobStalled", "SyncerQuarantineGrowing"}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert fired == rules  # each rule has a situation in which it fires
    done = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_rules_and_dashboard_name_only_metrics_the_syncer_exposes(tmp_path: Path) -> None:
    """Every syncer_ name in the rules and the sync-health dashboard is a documented metric, and
    every dashboard query is valid PromQL (promtool checks it as a recording rule)."""
    promtool = need("promtool")
    known = set(readme_metrics())
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/cloudpos-sync-health.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules_text = (PROMETHEUS / "alerts.yml").read_text()
    for text in [*exprs, rules_text]:
        for name in re.findall(r"\bsyncer_\w+", text):
            assert name in known, name
    grafana = [e.replace("$__rate_interval", "5m").replace("$license", ".*").replace("$job", ".*")
               for e in exprs]
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(grafana)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(recording))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}


def test_the_cache_counts_what_a_fresh_read_counts_and_the_counter_only_grows(engine: Engine) -> None:
    """The daemon's page and scrapes keep settled ledger counts and finished chart hours
    (status.Cache); what they show must be what a fresh read shows."""
    import datetime as dt

    import sqlalchemy as sa
    from pydantic import SecretStr

    from syncer import tables as t
    from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
    from syncer.ledger import api_day, utcnow
    from syncer.status import Cache, build

    config = Config(database=DatabaseConfig(url="sqlite:///unused.db"), api=ApiConfig(),
                    licenses=(LicenseConfig(name=LICENSE, token=SecretStr(TOKEN)),))
    now = utcnow().replace(microsecond=0)

    def add(minutes_ago: float, outcome: str, code: int | None = None, attempt: int = 1) -> int:
        sent = now - dt.timedelta(minutes=minutes_ago)
        with engine.begin() as conn:
            return int(conn.execute(sa.insert(t.request_ledger).values(
                license=LICENSE, day=api_day(sent, config.api.tz), sent_at=sent,
                function="get-orders", purpose="run", attempt=attempt, outcome=outcome,
                error_code=code).returning(t.request_ledger.c.id)).scalar_one())

    def counts(status: Any) -> dict[tuple[str, str], int]:
        return {(r.function, r.outcome): r.total for r in status.license(LICENSE).requests if r.total}

    for minutes_ago in (600, 300, 120, 90, 30):
        add(minutes_ago, "ok")
    add(200, "failed", attempt=1)
    add(200, "api_error", 1002)
    pending = add(20, "pending")  # in flight: not counted until it settles
    cache = Cache()
    seen: list[dict[tuple[str, str], int]] = []
    for step in range(3):
        cached = build(engine, config, now=now, totals=True, cache=cache)
        fresh = build(engine, config, now=now, totals=True)
        assert counts(cached) == counts(fresh)
        assert cached.license(LICENSE).hourly == fresh.license(LICENSE).hourly  # type: ignore[union-attr]
        seen.append(counts(cached))
        if step == 0:
            add(0.2, "ok")  # a new row, younger than a minute
            with engine.begin() as conn:  # the pending one gets its answer
                conn.execute(sa.update(t.request_ledger).where(t.request_ledger.c.id == pending)
                             .values(outcome="ok"))
        if step == 1:
            add(0.1, "api_error", 1003)
    assert seen[0] == {("get-orders", "ok"): 5, ("get-orders", "retried"): 1, ("get-orders", "auth"): 1}
    assert seen[1][("get-orders", "ok")] == 7
    assert seen[2][("get-orders", "1003")] == 1
    for before, after in itertools.pairwise(seen):
        assert all(after.get(key, 0) >= value for key, value in before.items())  # a counter
    assert sum(fresh.license(LICENSE).hourly) == 10  # type: ignore[union-attr]  # all in the last day
