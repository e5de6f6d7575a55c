"""The dialect seam: one module per database behind one interface (`base.Dialect`),
chosen once from the URL or the connection. Outside this package no code asks which
database it talks to; it asks `of(conn)` for the database's way of doing a thing.

Supported: SQLite (`sqlite:///path`, the embedded default), PostgreSQL
(`postgresql://`, also the `postgres://` hosting providers print; psycopg 3), MariaDB
and MySQL (`mariadb://`, `mysql://`; PyMySQL, the `mysql` extra).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:
    from syncer.dialects.base import Dialect

# URL scheme (SQLAlchemy backend name, or an alias of one) -> (module, class).
# The modules are imported when first asked for: `syncer.tables` takes its column
# types from this package, and the modules build their SQL from `syncer.tables`.
_MODULES: dict[str, tuple[str, str]] = {
    "sqlite": ("syncer.dialects.sqlite", "SQLite"),
    "postgresql": ("syncer.dialects.postgres", "Postgres"),
    "postgres": ("syncer.dialects.postgres", "Postgres"),
    "mysql": ("syncer.dialects.mysql", "MySQL"),
    "mariadb": ("syncer.dialects.mysql", "MySQL"),
}
_LOADED: dict[str, Dialect] = {}

SUPPORTED = "sqlite, postgresql, mariadb, mysql"


class UnsupportedDatabase(ValueError):
    """A database URL whose database this program does not support."""


def by_name(name: str) -> Dialect:
    """The module of the database SQLAlchemy calls `name` (or an alias of it)."""
    found = _LOADED.get(name)
    if found is None:
        if name not in _MODULES:
            raise UnsupportedDatabase(
                f"unsupported database {name!r} in database.url; use one of: {SUPPORTED}")
        module, cls = _MODULES[name]
        found = _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return found


def of(bind: Any) -> Dialect:
    """The module of the database behind a Connection or an Engine."""
    return by_name(bind.dialect.name)


def with_driver(url: str | URL) -> URL:
    """`url` with the driver we use where it names none (`postgresql://` -> psycopg 3,
    `postgres://` too; `mariadb://` and `mysql://` -> PyMySQL, each keeping its name)."""
    parsed = make_url(url)
    if "+" in parsed.drivername:
        return parsed
    dialect = by_name(parsed.drivername)
    driver = dialect.default_driver.partition("+")[2]
    if not driver:  # the database's own (SQLite's sqlite3)
        return parsed
    if parsed.drivername in dialect.names:
        return parsed.set(drivername=f"{parsed.drivername}+{driver}")
    return parsed.set(drivername=dialect.default_driver)


def for_url(url: str | URL) -> Dialect:
    """The module of the database a URL names; UnsupportedDatabase when none."""
    return by_name(make_url(url).get_backend_name())
