"""backstage_auth_user_info: the ownership the auth backend serves at /v1/userinfo.

Revision ID: backstage_auth_0003
Revises: backstage_auth_0002
Create Date: 2026-12-01 00:00:00

Backstage's ``user_info`` table (plugin-auth-backend migrations
``20240510120825_user_info`` and ``20250707164600_user_created_at``).
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from alembic import op

revision: str = "backstage_auth_0003"
down_revision: str | t.Sequence[str] | None = "backstage_auth_0002"
branch_labels: str | t.Sequence[str] | None = None
depends_on: str | t.Sequence[str] | None = None

TABLE = "backstage_auth_user_info"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("user_entity_ref", sa.String(length=255), nullable=False),
        sa.Column("user_info", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_entity_ref", name=op.f("pk_backstage_auth_user_info")),
    )


def downgrade() -> None:
    op.drop_table(TABLE)
