"""remember the last full list loaded, so an identical answer is not parsed again

Revision ID: 0008_answer_mark
Revises: 0007_response_archive
Create Date: 2026-12-01 12:00:00

`sync_state.answer_mark`: for a full-list resource, a digest of the last answer it
loaded in full (its bytes, the parser's code and the parse settings; see
`sync.answer_mark`). Empty for every row at first: the next pull of each list is
parsed as before and sets it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_answer_mark"
down_revision = "0007_response_archive"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answer_mark", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_state", schema=None) as batch_op:
        batch_op.drop_column("answer_mark")
