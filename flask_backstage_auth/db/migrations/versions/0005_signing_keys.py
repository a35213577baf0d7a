"""backstage_auth_signing_keys: the public keys of the auth backend's user tokens.

Revision ID: backstage_auth_0005
Revises: backstage_auth_0004
Create Date: 2026-12-01 14:30:00

Backstage's ``signing_keys`` table of the auth plugin (plugin-auth-backend
migration ``20200619125845_init``), with the expiry stored as the plugin
keys' is. Self-contained: it does not import the package's metadata.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from alembic import op

revision: str = "backstage_auth_0005"
down_revision: str | t.Sequence[str] | None = "backstage_auth_0004"
branch_labels: str | t.Sequence[str] | None = None
depends_on: str | t.Sequence[str] | None = None

TABLE = "backstage_auth_signing_keys"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_backstage_auth_signing_keys")),
    )
    op.create_index(
        op.f("ix_backstage_auth_signing_keys_expires_at"), TABLE, ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_backstage_auth_signing_keys_expires_at"), table_name=TABLE)
    op.drop_table(TABLE)
