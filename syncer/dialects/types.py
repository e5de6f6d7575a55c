"""Column types whose storage differs per database: declared once here, so the schema
(`syncer.tables`, the migrations) names what a column holds, never which database
holds it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

UTC = dt.UTC

# The SQLAlchemy dialect names of MariaDB and MySQL (one module serves both).
MYSQL_NAMES = ("mysql", "mariadb")


def _text_datetime(dialect: Dialect) -> bool:
    """SQLite keeps times as UTC text."""
    return dialect.name == "sqlite"


def _naive_utc(dialect: Dialect) -> bool:
    """MariaDB/MySQL DATETIME has no zone: UTC is stored without its offset."""
    return dialect.name in MYSQL_NAMES


class UtcDateTime(TypeDecorator[dt.datetime]):
    """An aware datetime, stored as UTC, always read back aware (UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _naive_utc(dialect):  # microseconds kept, as the other databases do
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(self.impl)

    @staticmethod
    def _in_utc(value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given where an aware one is required")
        return value.astimezone(UTC)

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = self._in_utc(value)
        if _text_datetime(dialect) or _naive_utc(dialect):  # literal SQL; bound values: below
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    # SQLite: one call per value, text to aware datetime and back. The default chain
    # (TypeDecorator's wrapper, `process_*`, then the dialect's own processor) costs
    # three Python calls a value and a `datetime.replace`, which takes 2.2 us on
    # CPython 3.11 (`fromisoformat` of the text with "+00:00" added: 0.3 us): 3,200
    # sync_state rows read 4x slower than their text. The text is the dialect's own
    # format, "YYYY-MM-DD HH:MM:SS.ffffff" (microseconds always written: the column
    # compares as text). Postgres: values arrive in UTC already (the session's zone,
    # set by the engine) and pass through. MariaDB/MySQL: naive UTC both ways.

    def bind_processor(self, dialect: Dialect) -> Any:
        if _naive_utc(dialect):
            in_utc = self._in_utc

            def naive(value: dt.datetime | None) -> dt.datetime | None:
                return None if value is None else in_utc(value).replace(tzinfo=None)

            return naive
        if not _text_datetime(dialect):
            return super().bind_processor(dialect)
        in_utc = self._in_utc

        def process(value: dt.datetime | None) -> str | None:
            return None if value is None else in_utc(value).isoformat(" ", "microseconds")[:26]

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        utc = UTC
        if not _text_datetime(dialect):  # Postgres: UTC already; MariaDB: naive UTC

            def aware(value: dt.datetime | None) -> dt.datetime | None:
                if value is None or value.tzinfo is utc:
                    return value
                return self.process_result_value(value, dialect)

            return aware
        parse = dt.datetime.fromisoformat

        def process(value: str | dt.datetime | None) -> dt.datetime | None:
            if value is None:
                return None
            if not isinstance(value, str):  # a datetime already (a literal, a function)
                return self.process_result_value(value, dialect)
            try:
                return parse(value + "+00:00")
            except ValueError:  # text that carries its own offset
                return parse(value).astimezone(utc)

        return process


def Json() -> JSON:
    """JSON; JSONB on Postgres: it has an equality operator, which the "only if
    different" upsert guard needs; plain json has none."""
    return JSON().with_variant(JSONB(), "postgresql")


def Id() -> BigInteger:
    """A surrogate key: BIGINT, but SQLite's INTEGER (only that is its rowid alias,
    which autoincrements)."""
    return BigInteger().with_variant(Integer, "sqlite")


def KeyText() -> Text:
    """Text that is part of a key or an index: MariaDB/MySQL index no TEXT, so there
    it is a VARCHAR long enough for every such value we store (canonical parameter
    JSON)."""
    return Text().with_variant(String(512), *MYSQL_NAMES)
