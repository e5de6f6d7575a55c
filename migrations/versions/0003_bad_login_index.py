"""index the request ledger by error code and time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 16:20:00

Before sending with credentials it has not seen accepted, the ledger counts the
bad logins (1001/1002) of the last 30 minutes across all licenses, so that
several wrong tokens can never add up to the API's IP block. This index keeps
that count cheap on a ledger of millions of rows.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request_ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_request_ledger_error_code_sent_at"),
                              ["error_code", "sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("request_ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_ledger_error_code_sent_at"))
