"""Scratch databases for the benchmarks: a fresh Postgres schema or a new SQLite file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

PG_URL = os.environ.get("SYNCER_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_url(kind: str, tmp: Path, prefix: str = "bench") -> Iterator[str]:
    """A database URL: a fresh schema on `SYNCER_BENCH_PG_URL` (dropped afterwards) for
    `postgresql`, else a new SQLite file in `tmp` (gone with `tmp`)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
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
