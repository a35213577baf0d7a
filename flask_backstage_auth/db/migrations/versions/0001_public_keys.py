"""backstage_auth_public_keys: the public keys of the rotating plugin signing keys.

Revision ID: backstage_auth_0001
Revises:
Create Date: 2025-01-01 00:00:00

Starts the independent ``backstage_auth`` branch. Self-contained: it does not
import the package's metadata, so it stays as shipped.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from alembic import op

revision: str = "backstage_auth_0001"
down_revision: str | t.Sequence[str] | None = None
branch_labels: str | t.Sequence[str] | None = ("backstage_auth",)
depends_on: str | t.Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backstage_auth_public_keys",
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_backstage_auth_public_keys")),
    )
    op.create_index(
        op.f("ix_backstage_auth_public_keys_expires_at"),
        "backstage_auth_public_keys",
        ["expires_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_backstage_auth_public_keys_expires_at"),
        table_name="backstage_auth_public_keys",
    )
    op.drop_table("backstage_auth_public_keys")
