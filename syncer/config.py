"""Configuration: the TOML file, environment overrides and validation.

The file: the one given with `--config`, else the one `$SYNCER_CONFIG` names, else
`./syncer.toml`, else none (the defaults: embedded SQLite `cloudpos.db`, enough for
`syncer demo`). An explicit setting beats an implicit one: a stray `syncer.toml` in
the working directory of a service started with `SYNCER_CONFIG` is not read. (The
design listed `./syncer.toml` first; that let a file nobody chose replace the
production config.) Environment variables (`SYNCER_DATABASE_URL`,
`CLOUDPOS_BASE_URL`, `CLOUDPOS_LICNAME` + `CLOUDPOS_TOKEN`) then override the file,
and an error in a value they gave names the variable.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from syncer import dialects
from syncer.db import shown_url
from syncer.planner import OpeningHours
from syncer.resources import BY_NAME

DEFAULT_BASE_URL = "https://cloudpos.be/api/"

# The CSV dialects `syncer report` writes; how each writes is syncer.writers.CSV_DIALECTS.
CsvDialectName = Literal["rfc4180", "excel-be"]


class ConfigError(Exception):
    """The configuration is unusable; the message names the key and the file."""


class Invalid(ValueError):
    """A rule across keys that a model validator checks; `key` names where it is wrong
    (pydantic would name the model that checks it)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Strict):
    url: str = "sqlite:///cloudpos.db"

    @field_validator("url")
    @classmethod
    def _lasting(cls, value: str) -> str:
        text = value.strip()
        try:
            url = make_url(text)
            dialect = dialects.for_url(url)
        except ArgumentError:
            raise Invalid("", f"not a database URL: {shown_url(text)!r} (e.g. "
                          "sqlite:///cloudpos.db or postgresql://user@host/db)") from None
        except dialects.UnsupportedDatabase:
            raise Invalid("", f"unsupported database {url.get_backend_name()!r}; use one of: "
                          f"{dialects.SUPPORTED}") from None
        if dialect.forgetful(url):
            raise ValueError("an in-memory SQLite database forgets the data and the request "
                             "ledger (the budget) at exit; give a file, e.g. sqlite:///cloudpos.db")
        return value


class ApiConfig(_Strict):
    base_url: str = DEFAULT_BASE_URL
    timezone: str = "Europe/Brussels"
    daily_budget: int = Field(default=500, ge=1)
    reserve: int = Field(default=50, ge=0)
    # Bounds a whole request (connect, headers, body), not each read.
    timeout_seconds: float = Field(default=30.0, gt=0)
    # The largest answer read, on the wire and inflated: an id window aims at 16 MiB
    # (sync.TARGET_BYTES), so 64 MiB leaves a full list four times that; past it reading
    # stops and the answer is refused as too large.
    max_answer_mib: float = Field(default=64.0, gt=0)
    # Attempts per logical request for transport faults, 5xx and broken bodies.
    max_attempts: int = Field(default=3, ge=1, le=10)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"not an http(s) URL: {value!r} (e.g. {DEFAULT_BASE_URL})")
        if "#" in value:
            # The client appends `licname`, `token` and the function after the URL: behind
            # a '#' they are a fragment, never sent, and the API refuses the credentials.
            raise ValueError(f"has a '#' (a fragment drops the query the client sends): {value!r}")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def max_answer_bytes(self) -> int:
        return int(self.max_answer_mib * 1024 * 1024)


class LicenseConfig(_Strict):
    name: str = Field(max_length=100)  # the tables' license columns are VARCHAR(100)
    token: SecretStr | None = None
    token_env: str | None = None
    # Optional per-license budget; falls back to [api].
    daily_budget: int | None = Field(default=None, ge=1)
    reserve: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_token_source(self) -> LicenseConfig:
        if self.token is not None and self.token_env:
            raise ValueError("give token or token_env, not both")
        return self

    def resolved_token(self) -> SecretStr:
        """The token from the config or from the named environment variable.

        Surrounding blanks and newlines are dropped (a copied token or a file read into
        a variable often ends in one); a token never holds them, and sending one costs a
        bad login.
        """
        if self.token is not None:
            return SecretStr(self.token.get_secret_value().strip())
        if self.token_env:
            return SecretStr(os.environ.get(self.token_env, "").strip())
        return SecretStr("")

    def fingerprint(self, base_url: str) -> str:
        """A short hash of everything that decides what a request sends (the name, the
        token, and `base_url`, which the query is appended to): a credentials stop holds
        while these are the same, and fixing any of them lifts it."""
        digest = hashlib.sha256(
            f"{self.name}\0{self.resolved_token().get_secret_value()}\0{base_url}".encode()
        ).hexdigest()
        return digest[:16]


class ResourceConfig(_Strict):
    window: int = Field(default=500, ge=1)
    min_window: int = Field(default=50, ge=1)
    max_window: int = Field(default=5000, ge=1)
    enabled: bool = True
    # A full list answered empty while more rows than this are live is suspicious: the
    # rows are kept and the job fails with a message until the list comes back (or this
    # is raised, when the shop did empty it).
    empty_list_max_deletes: int = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _ordered_windows(self) -> ResourceConfig:
        # Only when both are given: a max_window under the default min_window (50) just
        # lowers the floor with it (see Sync.window_plan).
        if "min_window" in self.model_fields_set and self.min_window > self.max_window:
            raise ValueError(f"min_window ({self.min_window}) is above max_window "
                             f"({self.max_window})")
        return self


class ScheduleConfig(_Strict):
    # "10:00-23:00" for every day, or a table per weekday:
    # { mon = "closed", tue = "11:30-14:00,18:00-22:30", default = "10:00-23:00" }
    opening_hours: str | dict[str, str] = "10:00-23:00"
    # A job lease older than this is taken over by another replica.
    lease_seconds: int = Field(default=45, ge=10, le=600)

    @field_validator("opening_hours")
    @classmethod
    def _valid_hours(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        OpeningHours.parse(value)
        return value

    def hours(self) -> OpeningHours:
        return OpeningHours.parse(self.opening_hours)


class PrivacyConfig(_Strict):
    # The national register number (users.secnr) is stored only as a keyed hash
    # unless this is set to true.
    store_national_number: bool = False
    # Key for that hash (HMAC-SHA256 of the digits). Without one no hash is stored
    # (users.secnr_hash stays NULL): an unkeyed hash of an 11-digit number with a check
    # digit can be brute-forced, and a key derived from the token would change with it.
    hash_key: SecretStr | None = None


class ArchiveConfig(_Strict):
    """The response archive (syncer/archive.py): every answer kept, compressed, deduplicated."""

    enabled: bool = True
    # Full lists, day re-scans and coupon re-scans older than this are dropped by the
    # daemon's daily retention, unless still needed (see archive.retention); id-window
    # answers (the history) and the latest answer of each function and parameters stay.
    keep_days: int = Field(default=14, ge=0)
_CLOCK_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ReportsConfig(_Strict):
    # When a business day begins, local time: "04:00" puts a 00:40 ticket on the day the
    # shop opened. The report views read it from the database (report_settings), which
    # every command that opens the database writes from here.
    day_starts_at: str = "00:00"
    # `syncer report --format csv` without --csv: "rfc4180" for scripts, "excel-be" for a
    # spreadsheet in a Belgian locale (syncer.writers.CSV_DIALECTS).
    csv: CsvDialectName = "rfc4180"
    # The language of `syncer export`'s pack: a file of syncer/labels/ ("en", "nl", "fr").
    language: str = "en"

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        from syncer.labels import LANGUAGES  # noqa: PLC0415

        if value not in LANGUAGES:
            raise ValueError(f"{value!r} is not a language of the pack; choose one of: "
                             f"{', '.join(LANGUAGES)}")
        return value

    @field_validator("day_starts_at")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not isinstance(value, str) or not _CLOCK_TIME.match(value.strip()):
            raise ValueError(f"{value!r} is not a time of day like \"04:00\" (HH:MM, 00:00-23:59)")
        return value.strip()

    @property
    def day_start_minute(self) -> int:
        """Minutes after local midnight at which a business day begins."""
        hours, minutes = self.day_starts_at.split(":")
        return int(hours) * 60 + int(minutes)


class Config(_Strict):
    database: DatabaseConfig = DatabaseConfig()
    api: ApiConfig = ApiConfig()
    licenses: tuple[LicenseConfig, ...] = ()
    resources: dict[str, ResourceConfig] = Field(default_factory=dict)
    privacy: PrivacyConfig = PrivacyConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    archive: ArchiveConfig = ArchiveConfig()
    reports: ReportsConfig = ReportsConfig()
    source: str = "defaults"

    @model_validator(mode="after")
    def _invariants(self) -> Config:
        """What no single section can check: every rule across sections, in one place."""
        api = self.api
        if api.reserve >= api.daily_budget:
            raise Invalid("api", f"reserve ({api.reserve}) must be below daily_budget "
                                 f"({api.daily_budget}): the scheduler and backfills spend the "
                                 "difference")
        names = [lic.name for lic in self.licenses]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise Invalid("licenses", f"duplicate name {sorted(duplicates)}")
        for i, lic in enumerate(self.licenses):
            if not lic.name.strip():
                raise Invalid("licenses.name", "must not be empty")
            budget, reserve = self.budget_for(lic)
            if reserve >= budget:  # one of the two may come from [api]
                raise Invalid(f"licenses.{i}", f"license {lic.name!r} would have reserve "
                                               f"{reserve} and daily_budget {budget} (each from "
                                               "the license or else [api]): the reserve must be "
                                               "below daily_budget")
        unknown = set(self.resources) - set(BY_NAME)
        if unknown:
            raise Invalid("resources", f"unknown resource {sorted(unknown)}")
        return self

    def resource(self, name: str) -> ResourceConfig:
        return self.resources.get(name, ResourceConfig())

    def budget_for(self, license: LicenseConfig) -> tuple[int, int]:
        """(daily_budget, reserve) for one license: its own, else [api]'s."""
        budget = license.daily_budget or self.api.daily_budget
        reserve = self.api.reserve if license.reserve is None else license.reserve
        return budget, reserve

    def spendable(self, license: LicenseConfig) -> int:
        """Requests the scheduler and backfills may spend per API day for this license:
        daily_budget - reserve (the reserve is for `syncer call` and `check`)."""
        budget, reserve = self.budget_for(license)
        return budget - reserve

    def cap(self, license: LicenseConfig, *, may_use_reserve: bool) -> int:
        """The most requests a door of this license lets through per API day."""
        return self.budget_for(license)[0] if may_use_reserve else self.spendable(license)


def _find_file(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    env = environ.get("SYNCER_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from $SYNCER_CONFIG)")
        return path
    local = Path("syncer.toml")
    return local if local.is_file() else None


def _warn_if_readable_by_others(path: Path, raw: Mapping[str, Any]) -> None:
    has_token = any("token" in lic for lic in raw.get("licenses", []) if isinstance(lic, dict))
    if has_token and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(
            f"{path} holds a token and is readable by other users; run: chmod 600 {path}",
            stacklevel=3,
        )


# Keys an environment variable may set, and the variable's name.
_FROM_ENV = {"database.url": "SYNCER_DATABASE_URL", "api.base_url": "CLOUDPOS_BASE_URL"}


# The model of each section, for the keys it knows.
_SECTIONS: dict[str, type[BaseModel]] = {
    "database": DatabaseConfig, "api": ApiConfig, "licenses": LicenseConfig,
    "resources": ResourceConfig, "privacy": PrivacyConfig, "schedule": ScheduleConfig,
    "archive": ArchiveConfig, "reports": ReportsConfig,
}


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """What an unknown key probably meant (`daily_budjet`: `daily_budget`), else the keys
    its section knows."""
    name = str(loc[-1])
    model = _SECTIONS.get(str(loc[0])) if len(loc) > 1 else Config
    known = sorted(set(model.model_fields) - {"source"}) if model is not None else []
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return "unknown key; known here: " + ", ".join(known)


def _describe(exc: ValidationError, source: str, from_env: Mapping[str, str]) -> str:
    parts = []
    for err in exc.errors():
        cause = err.get("ctx", {}).get("error")
        key = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = _unknown_key(err["loc"])
        if isinstance(cause, Invalid):
            key, message = ".".join(p for p in (key, cause.key) if p), str(cause)
        origin = f" (from ${from_env[key]})" if key in from_env else ""
        parts.append(f"{key}{origin}: {message}")
    where = source if not from_env or source != "defaults" else "the environment"
    return f"invalid config in {where}: " + "; ".join(parts)


@dataclass(frozen=True)
class Gathered:
    """What the configuration was made of: the file's keys, and the values the
    environment gave (the dotted key and the variable that gave it)."""

    config: Config
    file: Path | None
    file_keys: frozenset[str]
    from_env: Mapping[str, str]


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, merge and validate the configuration."""
    return gather(path, environ).config


def _dotted(raw: Any, prefix: str = "") -> set[str]:
    """Every leaf key of a TOML document, dotted (`licenses.0.name`)."""
    if isinstance(raw, dict):
        return {k for key, value in raw.items() for k in _dotted(value, f"{prefix}{key}.")}
    if isinstance(raw, list) and raw and all(isinstance(item, dict) for item in raw):
        return {k for i, item in enumerate(raw) for k in _dotted(item, f"{prefix}{i}.")}
    return {prefix.rstrip(".")}


def gather(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Gathered:
    """Read, merge and validate the configuration, keeping where each value came from."""
    env = os.environ if environ is None else environ
    file = _find_file(path, env)
    raw: dict[str, Any] = {}
    source = "defaults"
    if file is not None:
        source = str(file)
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        except UnicodeDecodeError:
            raise ConfigError(f"{file}: not UTF-8 text; save it as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot be read ({exc.strerror}); the user running "
                              "syncer needs read access") from None
        _warn_if_readable_by_others(file, raw)
    file_keys = frozenset(_dotted(raw))

    # A section that is not a table is left as it is, for validation to report by name.
    from_env: dict[str, str] = {}
    for key, variable in _FROM_ENV.items():
        section, name = key.split(".")
        if env.get(variable) and isinstance(raw.setdefault(section, {}), dict):
            raw[section][name] = env[variable]
            from_env[key] = variable
    if not raw.get("licenses") and env.get("CLOUDPOS_LICNAME"):
        raw["licenses"] = [
            {"name": env["CLOUDPOS_LICNAME"], "token_env": "CLOUDPOS_TOKEN"}
        ]
        from_env.update({"licenses.0.name": "CLOUDPOS_LICNAME",
                         "licenses.0.token_env": "CLOUDPOS_LICNAME"})
    elif env.get("CLOUDPOS_LICNAME"):
        warnings.warn(f"CLOUDPOS_LICNAME and CLOUDPOS_TOKEN are ignored: {source} lists its "
                      "licenses", stacklevel=2)
    raw["source"] = source
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, from_env)) from None
    return Gathered(config, file, file_keys, from_env)


# --- `syncer config`: the effective configuration, and where each value came from -----


@dataclass(frozen=True)
class Setting:
    key: str  # dotted, as in the file: api.daily_budget, licenses.0.token
    value: str  # as shown: secrets masked
    origin: str  # the file, $VARIABLE, or "default"


def _shown(key: str, value: Any, environ: Mapping[str, str]) -> str:
    """A value as `syncer config` shows it: no secret, no password."""
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else "(empty)"
    if value is None:
        return "(not set)"
    if key == "database.url":
        return shown_url(value)
    if key.endswith(".token_env"):
        return f"{value} ({'set' if environ.get(value, '').strip() else 'not set or empty'})"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return ", ".join(f"{k} = {v!r}" for k, v in value.items())
    return str(value)


def _leaves(model: BaseModel, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name in type(model).model_fields:
        if name == "source":
            continue
        value, key = getattr(model, name), f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out += _leaves(value, f"{key}.")
        elif isinstance(value, tuple) and all(isinstance(v, BaseModel) for v in value) and value:
            for i, item in enumerate(value):
                out += _leaves(item, f"{key}.{i}.")
        elif isinstance(value, dict) and value and all(isinstance(v, BaseModel)
                                                       for v in value.values()):
            for sub, item in value.items():
                out += _leaves(item, f"{key}.{sub}.")
        elif not (isinstance(value, tuple | dict) and not value):
            out.append((key, value))
    return out


def explain(gathered: Gathered, environ: Mapping[str, str] | None = None) -> list[Setting]:
    """Every setting in effect, shown masked, with where it came from: the file, an
    environment variable, or the default (as `meltano config list` does)."""
    env = os.environ if environ is None else environ
    config = gathered.config
    settings = []
    for key, value in _leaves(config):
        if key in gathered.from_env:
            origin = f"${gathered.from_env[key]}"
        elif key in gathered.file_keys:
            origin = str(gathered.file)
        else:
            origin = "default"
        shown = _shown(key, value, env)
        if key.startswith("licenses.") and key.endswith((".daily_budget", ".reserve")) \
                and value is None:
            shown = f"(not set: api.{key.rsplit('.', 1)[1]} applies)"
        settings.append(Setting(key, shown, origin))
    if not config.licenses:
        settings.append(Setting("licenses", "(none: nothing would be synced)", "default"))
    others = sorted(set(BY_NAME) - set(config.resources))
    if others:
        defaults = ResourceConfig()
        settings.append(Setting(
            "resources.*", f"window {defaults.window}, min_window {defaults.min_window}, "
            f"max_window {defaults.max_window}, enabled true (every resource not listed: "
            f"{', '.join(others)})", "default"))
    return settings


# --- `syncer init`: a commented syncer.toml for one license ----------------------------

_INIT_TEMPLATE = """\
# cloudpos-syncer configuration for license {name!r}, written by `syncer init`.
# Every key, with what it does: config.example.toml. What is in effect, and where
# each value comes from: `syncer config`. Environment variables override this file:
# SYNCER_DATABASE_URL, CLOUDPOS_BASE_URL.

[database]
{url_line}

[api]
# base_url = "{base_url}"
# timezone = "Europe/Brussels"              # the API's day and its local times
# daily_budget = 500                        # requests per day per license (the vendor's limit)
# reserve = 50                              # kept for `syncer call` and other integrations

[[licenses]]
{name_line}
{token_env_line}
# token = "..."                             # or here instead (then: chmod 600 this file)

# [schedule]
# opening_hours = "10:00-23:00"             # most requests go to these hours

# [reports]
# day_starts_at = "00:00"                   # "04:00": a 00:40 ticket counts for the day before
"""


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def default_token_env(license: str) -> str:
    """`CLOUDPOS_TOKEN_MYSHOP` for license `myshop`: a variable name of its own."""
    return "CLOUDPOS_TOKEN_" + (re.sub(r"[^A-Za-z0-9]+", "_", license).strip("_").upper() or "1")


def init_text(license: str, *, token_env: str | None = None,
              database_url: str | None = None) -> str:
    """The commented `syncer.toml` that `syncer init` writes for one license; checked as
    `load_config` would check it (a ConfigError names what is wrong)."""
    token_env = token_env or default_token_env(license)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
        raise ConfigError(f"--token-env {token_env!r}: not an environment variable name "
                          "(letters, digits and _, not starting with a digit)")
    url = database_url or DatabaseConfig().url

    def line(key: str, value: str, comment: str) -> str:
        return f"{key} = {_toml_string(value)}".ljust(43) + f" # {comment}"

    text = _INIT_TEMPLATE.format(
        name=license, base_url=DEFAULT_BASE_URL,
        url_line=line("url", url, "given to `syncer init`" if database_url else
                      'or "postgresql://user:password@host:5432/db"'),
        name_line=line("name", license, "the licname"),
        token_env_line=line("token_env", token_env,
                            "the token is read from this environment variable"))
    raw = tomllib.loads(text)
    try:
        Config.model_validate({**raw, "source": "syncer init"})
    except ValidationError as exc:
        problems = _describe(exc, "syncer init", {})
        for key, option in (("database.url", "--database-url"), ("licenses.0.name", "--license"),
                            ("licenses.name", "--license")):
            problems = problems.replace(f"{key}:", f"{option}:")
        raise ConfigError(problems) from None
    return text
