"""Alembic environment: runs against the engine syncer hands over, or SYNCER_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Engine

from syncer import dialects
from syncer.db import make_engine
from syncer.tables import metadata

config = context.config
target_metadata = metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine  # type: ignore[no-any-return]
    url = os.environ.get("SYNCER_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set SYNCER_DATABASE_URL or use `syncer migrate`")
    return make_engine(url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        dialect = dialects.of(connection)
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=dialect.batch_migrations,
            compare_type=True,
        )
        with context.begin_transaction():
            dialect.before_migrations(connection)
            context.run_migrations()
            dialect.after_migrations(connection)
        connection.commit()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run `syncer migrate`")
run_migrations_online()
