"""the response archive, and resume points of long tasks

Revision ID: 0007_response_archive
Revises: 0006_reconciled_reports
Create Date: 2026-12-01 08:45:00

Every successful answer of a synced function is kept compressed (`archive_bodies`,
one body per run of equal answers) and listed in `response_archive` with its
function, parameters, ledger row and time of receipt, so `syncer rebuild` can
re-derive the tables without a request (design rule 8). `resume_point` holds
where an interrupted rebuild or a capped backfill stands.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0007_response_archive"
down_revision = "0006_reconciled_reports"
branch_labels = None
depends_on = None

# MariaDB/MySQL: DATETIME(6), microseconds kept (naive UTC, syncer.dialects.types).
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# MariaDB/MySQL index no TEXT: a VARCHAR long enough for canonical parameter JSON.
_KEY_TEXT = sa.Text().with_variant(sa.String(512), "mysql", "mariadb")

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "archive_bodies",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("license", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("codec", sa.String(length=10), nullable=False),
        sa.Column("raw_bytes", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_bodies")),
    )
    op.create_table(
        "response_archive",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("license", sa.String(length=100), nullable=False),
        sa.Column("function", sa.String(length=60), nullable=False),
        sa.Column("params", _JSON, nullable=True),
        sa.Column("params_key", _KEY_TEXT, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", _JSON, nullable=True),
        sa.Column("ledger_id", sa.BigInteger(), nullable=True),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("body_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["body_id"], ["archive_bodies.id"]),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_archive")),
    )
    with op.batch_alter_table("response_archive", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_response_archive_license_function_params_key_id"),
                              ["license", "function", "params_key", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_response_archive_body_id"), ["body_id"], unique=False)
    op.create_table(
        "resume_point",
        sa.Column("license", sa.String(length=100), nullable=False),
        sa.Column("task", sa.String(length=20), nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("license", "task", name=op.f("pk_resume_point")),
    )


def downgrade() -> None:
    op.drop_table("resume_point")
    # Its indexes go with the table (MariaDB/MySQL refuse to drop the foreign key's first).
    op.drop_table("response_archive")
    op.drop_table("archive_bodies")
