"""The configuration as a user writes it: files, precedence, environment, errors and secrets."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from syncer.config import Config, ConfigError, LicenseConfig, load_config

SECRET = "tok-4e1f9b7c2d8a"  # long and unusual, so a leak is easy to find
URL = "https://cloudpos.example/api/"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def db_file(url: str) -> str:
    """The config that names this database URL, and nothing else."""
    return f'[database]\nurl = "{url}"\n'


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray ./syncer.toml or SYNCER_/CLOUDPOS_ variables from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("SYNCER_", "CLOUDPOS_")) and not name.startswith("SYNCER_TEST"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# --- where the config comes from ----------------------------------------------------------


def test_without_any_file_the_defaults_apply() -> None:
    config = load_config(environ={})
    assert config.source == "defaults"
    assert config.database.url == "sqlite:///cloudpos.db"
    assert config.api.base_url == "https://cloudpos.be/api/"
    assert (config.api.daily_budget, config.api.reserve) == (500, 50)
    assert config.licenses == ()


def test_an_explicit_file_wins_over_the_local_file_and_syncer_config(tmp_path: Path) -> None:
    write(tmp_path / "syncer.toml", db_file("sqlite:///local.db"))
    write(tmp_path / "from-env.toml", db_file("sqlite:///from-env.db"))
    explicit = write(tmp_path / "explicit.toml", db_file("sqlite:///explicit.db"))

    config = load_config(explicit, environ={"SYNCER_CONFIG": str(tmp_path / "from-env.toml")})

    assert config.database.url == "sqlite:///explicit.db"
    assert config.source == str(explicit)


def test_syncer_config_wins_over_a_stray_local_syncer_toml(tmp_path: Path) -> None:
    # An explicit setting beats an implicit one: a service started with SYNCER_CONFIG
    # must not read a file someone left in its working directory.
    write(tmp_path / "syncer.toml", db_file("sqlite:///local.db"))
    other = write(tmp_path / "from-env.toml", db_file("sqlite:///from-env.db"))

    config = load_config(environ={"SYNCER_CONFIG": str(other)})

    assert config.database.url == "sqlite:///from-env.db"
    assert config.source == str(other)


def test_the_local_syncer_toml_is_used_without_config_or_syncer_config(tmp_path: Path) -> None:
    write(tmp_path / "syncer.toml", db_file("sqlite:///local.db"))

    config = load_config(environ={})

    assert config.database.url == "sqlite:///local.db"
    assert config.source == "syncer.toml"


def test_syncer_config_is_used_when_there_is_no_local_file(tmp_path: Path) -> None:
    other = write(tmp_path / "from-env.toml", db_file("sqlite:///from-env.db"))
    assert load_config(environ={"SYNCER_CONFIG": str(other)}).database.url == "sqlite:///from-env.db"


def test_syncer_config_is_read_from_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = write(tmp_path / "from-env.toml", db_file("sqlite:///from-env.db"))
    monkeypatch.setenv("SYNCER_CONFIG", str(other))
    assert load_config().database.url == "sqlite:///from-env.db"


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.toml"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match=r"gone.toml \(from \$SYNCER_CONFIG\)"):
        load_config(environ={"SYNCER_CONFIG": str(tmp_path / "gone.toml")})


# --- environment overrides -------------------------------------------------------------------


def test_environment_overrides_database_url_and_base_url(tmp_path: Path) -> None:
    file = write(tmp_path / "syncer.toml",
                 db_file("sqlite:///file.db") + '[api]\nbase_url = "https://file.example/api/"\n')
    config = load_config(file, environ={"SYNCER_DATABASE_URL": "postgresql://db.example/shop",
                                        "CLOUDPOS_BASE_URL": "http://127.0.0.1:9/api/"})
    assert config.database.url == "postgresql://db.example/shop"
    assert config.api.base_url == "http://127.0.0.1:9/api/"


def test_licname_and_token_from_the_environment_make_a_single_license(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDPOS_TOKEN", SECRET)
    config = load_config(environ={"CLOUDPOS_LICNAME": "myshop", "CLOUDPOS_TOKEN": SECRET})
    [lic] = config.licenses
    assert lic.name == "myshop"
    assert lic.resolved_token().get_secret_value() == SECRET


def test_licenses_in_the_file_win_over_licname_from_the_environment(tmp_path: Path) -> None:
    file = write(tmp_path / "syncer.toml", '[[licenses]]\nname = "fromfile"\ntoken = "abcdef"\n')
    with pytest.warns(UserWarning, match=rf"CLOUDPOS_LICNAME and CLOUDPOS_TOKEN are ignored: "
                                           rf"{file} lists its licenses"):
        config = load_config(file, environ={"CLOUDPOS_LICNAME": "fromenv",
                                            "CLOUDPOS_TOKEN": SECRET})
    assert [lic.name for lic in config.licenses] == ["fromfile"]


def test_token_env_reads_the_named_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write(tmp_path / "syncer.toml",
                 '[[licenses]]\nname = "a"\ntoken_env = "CLOUDPOS_TOKEN_A"\n'
                 '[[licenses]]\nname = "b"\ntoken_env = "CLOUDPOS_TOKEN_B"\n'
                 '[[licenses]]\nname = "c"\n')
    monkeypatch.setenv("CLOUDPOS_TOKEN_A", SECRET)
    monkeypatch.delenv("CLOUDPOS_TOKEN_B", raising=False)
    a, b, c = load_config(file, environ={}).licenses
    assert a.resolved_token().get_secret_value() == SECRET
    assert b.resolved_token().get_secret_value() == ""  # unset: empty, which `check` reports
    assert c.resolved_token().get_secret_value() == ""


def test_blanks_around_a_token_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pasted token or `$(cat token.txt)` often ends in a newline: sent as it is, it
    would cost a bad login and stop the license."""
    monkeypatch.setenv("SHOP_TOKEN", f"  {SECRET}\n")
    from_env = LicenseConfig.model_validate({"name": "a", "token_env": "SHOP_TOKEN"})
    in_file = LicenseConfig.model_validate({"name": "a", "token": f"{SECRET} "})
    assert from_env.resolved_token().get_secret_value() == SECRET
    assert in_file.resolved_token().get_secret_value() == SECRET
    assert from_env.fingerprint(URL) == in_file.fingerprint(URL)


def test_an_unreadable_or_non_utf8_config_is_a_config_error(tmp_path: Path) -> None:
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"[api]\ntimezone = 'Europe/Bruxelles \xe9'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(latin, environ={})
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError):
        load_config(folder, environ={})


def test_the_fingerprint_changes_with_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    lic = LicenseConfig.model_validate({"name": "a", "token_env": "SHOP_TOKEN"})
    monkeypatch.setenv("SHOP_TOKEN", "first-token")
    first = lic.fingerprint(URL)
    monkeypatch.setenv("SHOP_TOKEN", "second-token")
    assert lic.fingerprint(URL) != first
    assert SECRET not in first and "second-token" not in lic.fingerprint(URL)
    # The URL decides what is sent as much as the token: a fixed base_url lifts the stop.
    assert lic.fingerprint(URL + "v1/") not in (first, lic.fingerprint(URL))


# --- errors name the key and the file ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[api]\ndaily_budgett = 400\n", "api.daily_budgett", "unknown key; did you mean daily_budget?"),
        ("[databse]\nurl = 'sqlite:///x.db'\n", "databse", "unknown key; did you mean database?"),
        ("[api]\ndaily_budget = 'lots'\n", "api.daily_budget", "valid integer"),
        ("[api]\nreserve = -1\n", "api.reserve", "greater than or equal to 0"),
        ("[[licenses]]\nname = 'a'\ndaily_budget = 0\n", "licenses.0.daily_budget", "greater than"),
        ("[resources.orders]\nwindow = 'big'\n", "resources.orders.window", "valid integer"),
        ("database = 'sqlite:///x.db'\n", "database", "valid dictionary"),
        ("[api]\ntimezone = 'Europe/Brusels'\n", "api.timezone", "unknown time zone 'Europe/Brusels'"),
        ("[resources.order]\nwindow = 100\n", "resources", "unknown resource ['order']"),
        ("[[licenses]]\nname = 'a'\n[[licenses]]\nname = 'a'\n", "licenses", "duplicate name ['a']"),
        ("[[licenses]]\nname = '  '\n", "licenses.name", "must not be empty"),
        ("[[licenses]]\nname = '" + "x" * 101 + "'\n", "licenses.0.name", "at most 100"),
        ("[[licenses]]\nname = 'a'\ntoken = 't'\ntoken_env = 'T'\n", "licenses.0",
         "token or token_env, not both"),
        ("[api]\ndaily_budget = 100\nreserve = 100\n", "api", "must be below daily_budget"),
        ("[[licenses]]\nname = 'a'\ndaily_budget = 10\nreserve = 20\n", "licenses.0",
         "must be below daily_budget"),
        ("[[licenses]]\nname = 'a'\ndaily_budget = 40\n", "licenses.0",
         "license 'a' would have reserve 50 and daily_budget 40"),
        ("[api]\ndaily_budget = 100\nreserve = 10\n[[licenses]]\nname = 'a'\nreserve = 600\n",
         "licenses.0", "would have reserve 600 and daily_budget 100"),
        ("[api]\nbase_url = 'not a url'\n", "api.base_url", "not an http(s) URL"),
        ("[api]\nbase_url = 'ftp://cloudpos.be/api/'\n", "api.base_url", "not an http(s) URL"),
        ("[api]\nbase_url = 'https://cloudpos.be/api/#x'\n", "api.base_url", "a fragment drops"),
        ("[api]\nbase_url = 'https://cloudpos.be/api/?a=1#'\n", "api.base_url", "a fragment drops"),
        ("[resources.orders]\nmin_window = 500\nmax_window = 100\n", "resources.orders",
         "min_window (500) is above max_window (100)"),
        ("[resources.orders]\nmin_window = 6000\n", "resources.orders",
         "min_window (6000) is above max_window (5000)"),
        ("[database]\nurl = 'sqlite://'\n", "database.url", "in-memory SQLite"),
        ("[database]\nurl = 'sqlite:///:memory:'\n", "database.url", "in-memory SQLite"),
    ],
)
def test_a_config_error_names_the_key_and_the_file(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    file = write(tmp_path / "shop.toml", text)
    with pytest.raises(ConfigError) as raised:
        load_config(file, environ={})
    message = str(raised.value)
    assert f"invalid config in {file}: " in message
    assert f"{key}: " in message
    assert reason in message


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    file = write(tmp_path / "shop.toml", '[database]\nurl = "sqlite:///x.db"\n[api\n')
    with pytest.raises(ConfigError, match=rf"{file}: not valid TOML: .*line 3"):
        load_config(file, environ={})


def test_a_wrongly_typed_section_is_reported_even_with_an_environment_override(tmp_path: Path) -> None:
    file = write(tmp_path / "shop.toml", 'database = "sqlite:///x.db"\napi = 3\n')
    env = {"SYNCER_DATABASE_URL": "sqlite:///y.db", "CLOUDPOS_BASE_URL": "http://127.0.0.1:9/"}
    with pytest.raises(ConfigError) as raised:
        load_config(file, environ=env)
    assert f"invalid config in {file}: " in str(raised.value)
    assert "database: " in str(raised.value)
    assert "api: " in str(raised.value)


# --- secrets ----------------------------------------------------------------------------------------


def test_a_token_file_readable_by_others_warns(tmp_path: Path) -> None:
    file = write(tmp_path / "shop.toml", f'[[licenses]]\nname = "a"\ntoken = "{SECRET}"\n', mode=0o644)
    with pytest.warns(UserWarning, match=rf"{file} holds a token and is readable by other users; "
                                         rf"run: chmod 600 {file}"):
        load_config(file, environ={})


def test_a_token_file_readable_by_the_group_warns(tmp_path: Path) -> None:
    file = write(tmp_path / "shop.toml", f'[[licenses]]\nname = "a"\ntoken = "{SECRET}"\n', mode=0o640)
    with pytest.warns(UserWarning, match="readable by other users"):
        load_config(file, environ={})


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        (f'[[licenses]]\nname = "a"\ntoken = "{SECRET}"\n', 0o600),
        ('[[licenses]]\nname = "a"\ntoken_env = "SHOP_TOKEN"\n', 0o644),
        (db_file("sqlite:///x.db"), 0o644),
    ],
    ids=["token-chmod-600", "token_env-world-readable", "no-token-world-readable"],
)
def test_no_warning_when_no_token_is_exposed(tmp_path: Path, text: str, mode: int) -> None:
    file = write(tmp_path / "shop.toml", text, mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(file, environ={})


def test_repr_and_str_of_the_config_never_show_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hash_key = "hk-9d2c7e5a3b1f"
    file = write(tmp_path / "shop.toml",
                 f'[[licenses]]\nname = "a"\ntoken = "{SECRET}"\n'
                 '[[licenses]]\nname = "b"\ntoken_env = "SHOP_TOKEN_B"\n'
                 f'[privacy]\nhash_key = "{hash_key}"\n')
    monkeypatch.setenv("SHOP_TOKEN_B", "tok-b-0a1b2c3d4e")
    config = load_config(file, environ={})
    assert config.licenses[0].resolved_token().get_secret_value() == SECRET
    shown = [repr(config), str(config), repr(config.licenses), str(config.licenses[0]),
             repr(config.model_dump()), config.model_dump_json()]
    for text in shown:
        assert SECRET not in text
        assert "tok-b-0a1b2c3d4e" not in text
        assert hash_key not in text
    assert "**********" in repr(config)


# --- budgets ------------------------------------------------------------------------------------------


def test_budget_for_uses_per_license_overrides_and_falls_back_to_api(tmp_path: Path) -> None:
    file = write(tmp_path / "shop.toml",
                 "[api]\ndaily_budget = 400\nreserve = 40\n"
                 '[[licenses]]\nname = "plain"\n'
                 '[[licenses]]\nname = "bigger"\ndaily_budget = 1000\n'
                 '[[licenses]]\nname = "noreserve"\nreserve = 0\n'
                 '[[licenses]]\nname = "both"\ndaily_budget = 200\nreserve = 10\n')
    config = load_config(file, environ={})
    budgets = {lic.name: config.budget_for(lic) for lic in config.licenses}
    assert budgets == {"plain": (400, 40), "bigger": (1000, 40), "noreserve": (400, 0), "both": (200, 10)}
    assert config.spendable(config.licenses[0]) == 360


def test_defaults_give_500_requests_with_50_in_reserve() -> None:
    config = Config.model_validate({"licenses": [{"name": "a"}]})
    assert config.budget_for(config.licenses[0]) == (500, 50)
    assert config.spendable(config.licenses[0]) == 450


def test_a_max_window_under_the_default_min_window_lowers_the_floor(tmp_path: Path) -> None:
    file = write(tmp_path / "shop.toml", "[resources.orders]\nmax_window = 40\n")
    settings = load_config(file, environ={}).resource("orders")
    assert (settings.min_window, settings.max_window) == (50, 40)  # as given; the plan clamps


def test_the_example_config_loads_as_shipped() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    config = load_config(example, environ={})
    assert [lic.name for lic in config.licenses] == ["myshop"]
    assert config.licenses[0].token_env == "CLOUDPOS_TOKEN_MYSHOP"
    assert config.schedule.opening_hours == "10:00-23:00"
    assert config.budget_for(config.licenses[0]) == (500, 50)


# --- [reports] -------------------------------------------------------------------------------


def test_the_business_day_starts_at_midnight_unless_the_config_says_when(tmp_path: Path) -> None:
    assert load_config(environ={}).reports.day_start_minute == 0
    file = write(tmp_path / "r.toml", '[reports]\nday_starts_at = "04:30"\n')
    reports = load_config(file, environ={}).reports
    assert (reports.day_starts_at, reports.day_start_minute) == ("04:30", 270)


@pytest.mark.parametrize("value", ['"4:00"', '"24:00"', '"04:60"', '"four"', "4", '""'])
def test_a_day_start_that_is_not_hh_mm_names_the_key(tmp_path: Path, value: str) -> None:
    file = write(tmp_path / "r.toml", f"[reports]\nday_starts_at = {value}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(file, environ={})
    assert "reports.day_starts_at" in str(exc.value) and str(file) in str(exc.value)


def test_an_unknown_reports_key_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path / "r.toml", '[reports]\nday_start = "04:00"\n')
    with pytest.raises(ConfigError, match=r"reports\.day_start"):
        load_config(file, environ={})
