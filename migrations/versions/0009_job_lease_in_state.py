"""job leases move into sync_state, next to the due time they guard

Revision ID: 0009_job_lease_in_state
Revises: 0008_answer_mark
Create Date: 2026-12-01 17:30:00

A replica claims a job and reads its state in one statement (`daemon.claim_on`):
the lease is taken only when the job is due, and let go with the next run stored.
`job_lease` keeps the process locks (SQLite's one daemon); its job rows were leases
of running jobs, which a migration does not see running, so they go.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0009_job_lease_in_state"
down_revision = "0008_answer_mark"
branch_labels = None
depends_on = None

# MariaDB/MySQL: DATETIME(6), microseconds kept (naive UTC, syncer.dialects.types).
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(120)))
        batch.add_column(sa.Column("lease_expires_at", _TIME))
    op.execute("DELETE FROM job_lease WHERE job <> '__daemon__'")


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
