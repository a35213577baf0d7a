"""Row versions of access tokens, the order of their events, and per-owner lock rows.

Revision ID: backstage_auth_0004
Revises: backstage_auth_0003
Create Date: 2026-12-01 00:00:00

Keep revision ids prefixed ``backstage_auth_`` (they share a namespace with
the app's own revisions), name constraints explicitly with ``op.f()``, and
use ``op.batch_alter_table`` for changes SQLite cannot ALTER.

Existing tokens start at version 1 and existing events at ``seq`` 0, so they
sort by their time as before, and before every event written after this.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from alembic import op

revision: str = "backstage_auth_0004"
down_revision: str | t.Sequence[str] | None = "backstage_auth_0003"
branch_labels: str | t.Sequence[str] | None = None
depends_on: str | t.Sequence[str] | None = None

TOKENS = "backstage_auth_access_tokens"
EVENTS = "backstage_auth_access_token_events"
OWNERS = "backstage_auth_access_token_owners"


def upgrade() -> None:
    op.add_column(
        TOKENS,
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
    )
    op.add_column(
        EVENTS,
        sa.Column("seq", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        OWNERS,
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner_ref", sa.String(length=255), nullable=False),
        sa.Column("tokens_created", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("kind", "owner_ref", name=op.f(f"pk_{OWNERS}")),
    )


def downgrade() -> None:
    op.drop_table(OWNERS)
    with op.batch_alter_table(EVENTS) as batch:
        batch.drop_column("seq")
    with op.batch_alter_table(TOKENS) as batch:
        batch.drop_column("version")
