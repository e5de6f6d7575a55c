"""give the coupon re-scan a position column of its own

Revision ID: 0004_rescan_position
Revises: 0003
Create Date: 2026-12-01 09:00:00

`coupons_rescan` kept the last id its windows reached in `sync_state.cursor`, the
column that means "highest id stored" for every id-window resource. It now has
`sync_state.rescan_position`; the positions already stored move there (and the
re-scan rows' `cursor` is cleared), so a re-scan goes on where it was.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_rescan_position"
down_revision = "0003"
branch_labels = None
depends_on = None

RESCANS = ("coupons_rescan",)


def upgrade() -> None:
    with op.batch_alter_table("sync_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rescan_position", sa.BigInteger(), nullable=True))
    state = sa.table("sync_state", sa.column("resource", sa.String), sa.column("cursor", sa.BigInteger),
                     sa.column("rescan_position", sa.BigInteger))
    # MariaDB and MySQL assign left to right, each seeing the ones before: the position
    # is copied before the cursor is cleared.
    op.execute(state.update().where(state.c.resource.in_(RESCANS))
               .ordered_values((state.c.rescan_position, state.c.cursor), (state.c.cursor, None)))


def downgrade() -> None:
    state = sa.table("sync_state", sa.column("resource", sa.String), sa.column("cursor", sa.BigInteger),
                     sa.column("rescan_position", sa.BigInteger))
    op.execute(state.update().where(state.c.resource.in_(RESCANS))
               .values(cursor=state.c.rescan_position))
    with op.batch_alter_table("sync_state", schema=None) as batch_op:
        batch_op.drop_column("rescan_position")
