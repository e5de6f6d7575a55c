"""national register number hashes: keyed only by [privacy] hash_key

Revision ID: 0005_secnr_hash_key
Revises: 0004_rescan_position
Create Date: 2026-12-01 09:00:00

Until this revision, without `[privacy] hash_key` the HMAC of `users.secnr` was keyed
with a key derived from the license token, so rotating the token changed every stored
hash and rewrote every user row. Now no hash is stored unless `hash_key` is set.

A hash cannot be re-keyed without the plain number, which is not stored, and this
revision cannot tell a hash keyed on the token from one keyed on `hash_key`. So it
clears every `secnr_hash`: with `hash_key` set, the next pull of get-users (part of
every backfill and of the daemon's schedule; no extra request) writes them again under
that key; without it, none is stored. Nothing else in `users` changes.

Downgrade leaves the column as it is (cleared hashes cannot be brought back).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_secnr_hash_key"
down_revision = "0004_rescan_position"
branch_labels = None
depends_on = None


def upgrade() -> None:
    users = sa.table("users", sa.column("secnr_hash", sa.String(64)))
    op.execute(users.update().where(users.c.secnr_hash.is_not(None)).values(secnr_hash=None))


def downgrade() -> None:
    pass  # the hashes it cleared cannot be recomputed without the plain numbers
