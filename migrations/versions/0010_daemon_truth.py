"""what the daemon needs to tell the truth: each request's job, a history's catch-up,
and the audit's problems by kind

Revision ID: 0010_daemon_truth
Revises: 0009_job_lease_in_state
Create Date: 2026-12-06 20:00:00

- `request_ledger.job`: the job (daemon) or resource (backfill) that sent the request,
  so a job's line counts its own requests, not those of the jobs running beside it.
- `sync_state.catching_up_since`, `catch_up_from_day`, `history_first_day`,
  `history_reached_day`: an id-window job still catching up on its history (since
  when, the last stored day when it began, the first and last stored day now), so the
  status can say how far the history has come and when it should be in.
- `audit_runs.kinds`: the problems of an audit counted by kind.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0010_daemon_truth"
down_revision = "0009_job_lease_in_state"
branch_labels = None
depends_on = None

# MariaDB/MySQL: DATETIME(6), microseconds kept (naive UTC, syncer.dialects.types).
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("request_ledger") as batch:
        batch.add_column(sa.Column("job", sa.String(40)))
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("catching_up_since", _TIME))
        batch.add_column(sa.Column("catch_up_from_day", sa.Date()))
        batch.add_column(sa.Column("history_first_day", sa.Date()))
        batch.add_column(sa.Column("history_reached_day", sa.Date()))
    with op.batch_alter_table("audit_runs") as batch:
        batch.add_column(sa.Column("kinds", _JSON))


def downgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        batch.drop_column("kinds")
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("history_reached_day")
        batch.drop_column("history_first_day")
        batch.drop_column("catch_up_from_day")
        batch.drop_column("catching_up_since")
    with op.batch_alter_table("request_ledger") as batch:
        batch.drop_column("job")
