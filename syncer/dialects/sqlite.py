"""SQLite, the embedded default: one file, one writer at a time, times as UTC text."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, Engine, Table, create_engine, event, func
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL

from syncer.db import dumps
from syncer.dialects.base import OnConflict


class SQLite(OnConflict):
    title = "SQLite"
    names = ("sqlite",)
    default_driver = "sqlite"
    single_writer = True
    batch_migrations = True

    def make_engine(self, url: URL, **kwargs: Any) -> Engine:
        engine = create_engine(url, json_serializer=dumps, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine

    def database_file(self, url: URL) -> Path | None:
        if not url.database:
            return None
        # sqlite:///path, or a URI (sqlite:///file:path?mode=ro&uri=true)
        if url.query.get("uri") == "true" and url.database.startswith("file:"):
            return Path(urlsplit(url.database).path)
        return None if url.database == ":memory:" else Path(url.database)

    def forgetful(self, url: URL) -> bool:
        return not url.database or url.database == ":memory:" or "mode=memory" in str(url)

    def insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def greatest(self, a: Any, b: Any) -> ColumnElement[Any]:
        return func.max(a, b)  # SQLite's two-argument max() is a scalar function

    def utc_hour(self, column: Any) -> ColumnElement[str]:
        return func.substr(column, 1, 13)  # UTC text, 'YYYY-MM-DD HH:MM:SS...'
