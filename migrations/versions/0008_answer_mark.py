"""remember the last answer loaded per function and parameters, so that the same
answer again is not parsed again

Revision ID: 0008_answer_mark
Revises: 0007_response_archive
Create Date: 2026-12-01 12:00:00

`answer_marks`: per license, function and parameters, a digest of the last answer
loaded in full (its bytes, the parsing code and the parse settings; see
`sync.answer_mark`) and the range of record ids it held. Empty at first: every
answer is parsed as before until it has been loaded once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0008_answer_mark"
down_revision = "0007_response_archive"
branch_labels = None
depends_on = None

# MariaDB/MySQL: DATETIME(6), microseconds kept (naive UTC, syncer.dialects.types).
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# MariaDB/MySQL index no TEXT: a VARCHAR long enough for canonical parameter JSON.
_KEY_TEXT = sa.Text().with_variant(sa.String(512), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "answer_marks",
        sa.Column("license", sa.String(100), primary_key=True),
        sa.Column("function", sa.String(40), primary_key=True),
        sa.Column("params_key", _KEY_TEXT, primary_key=True),
        sa.Column("mark", sa.String(64), nullable=False),
        sa.Column("min_id", sa.BigInteger()),
        sa.Column("max_id", sa.BigInteger()),
        sa.Column("loaded_at", _TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("answer_marks")
