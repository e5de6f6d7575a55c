"""who lifted a license's stop on purpose (`syncer unblock`), and when

Revision ID: 0012_stop_scope
Revises: 0011_accounting_views
Create Date: 2026-12-06 20:00:00

A stop (credentials refused, or a 1003/1004 pause) ends by itself when the config
changes or its time passes; `syncer unblock` lifts one on purpose. The license's
`license_state` row keeps the last such lift: when, by whom, and what it lifted.
The credentials stop's fingerprint now also covers `api.base_url` (computed by the
code, nothing to migrate: a stop stored before it is tried once more).
`sync_state.failures` counts a job's failed runs in a row: the wait before the next
doubles with each (`outcomes.backoff`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0012_stop_scope"
down_revision = "0011_accounting_views"
branch_labels = None
depends_on = None

# MariaDB/MySQL: DATETIME(6), microseconds kept (naive UTC, syncer.dialects.types).
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("license_state") as batch:
        batch.add_column(sa.Column("lifted_at", _TIME))
        batch.add_column(sa.Column("lifted_by", sa.String(200)))
        batch.add_column(sa.Column("lifted_stop", sa.Text()))
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("failures", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("failures")
    with op.batch_alter_table("license_state") as batch:
        batch.drop_column("lifted_stop")
        batch.drop_column("lifted_by")
        batch.drop_column("lifted_at")
