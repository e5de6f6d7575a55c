"""Scratch databases for the benchmarks: a fresh Postgres schema, a fresh MariaDB
database or a new SQLite file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from syncer.dialects import with_driver

PG_URL = os.environ.get("SYNCER_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("SYNCER_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306").rstrip("/")


@contextmanager
def scratch_url(kind: str, tmp: Path, prefix: str = "bench") -> Iterator[str]:
    """A database URL: a fresh schema on `SYNCER_BENCH_PG_URL` (dropped afterwards) for
    `postgresql`, a fresh database on `SYNCER_BENCH_MARIADB_URL` (a server URL, dropped
    afterwards) for `mariadb`, else a new SQLite file in `tmp` (gone with `tmp`)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    if kind == "mariadb":
        server = sa.create_engine(with_driver(f"{MARIADB_URL}/"), isolation_level="AUTOCOMMIT")
        try:
            with server.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            yield f"{MARIADB_URL}/{name}"
        finally:
            with server.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            server.dispose()
        return
    if kind != "postgresql":
        yield f"sqlite:///{tmp}/{name}.db"
        return
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        yield f"{PG_URL}?options=-csearch_path%3D{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()
