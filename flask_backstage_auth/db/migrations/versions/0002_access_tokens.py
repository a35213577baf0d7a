"""backstage_auth_access_tokens and their audit events.

Revision ID: backstage_auth_0002
Revises: backstage_auth_0001
Create Date: 2026-11-22 00:00:00
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from alembic import op

revision: str = "backstage_auth_0002"
down_revision: str | t.Sequence[str] | None = "backstage_auth_0001"
branch_labels: str | t.Sequence[str] | None = None
depends_on: str | t.Sequence[str] | None = None

TOKENS = "backstage_auth_access_tokens"
EVENTS = "backstage_auth_access_token_events"


def upgrade() -> None:
    op.create_table(
        TOKENS,
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=False),
        sa.Column("owner_ref", sa.String(length=255), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_ip", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("previous_token_hash", sa.String(length=64), nullable=True),
        sa.Column("previous_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TOKENS}")),
        sa.UniqueConstraint("token_hash", name=op.f(f"uq_{TOKENS}_token_hash")),
    )
    for column in ("token_prefix", "owner_ref", "expires_at", "revoked_at"):
        op.create_index(op.f(f"ix_{TOKENS}_{column}"), TOKENS, [column], unique=False)
    op.create_index(
        f"ix_{TOKENS}_previous_token_hash",
        TOKENS,
        ["previous_token_hash"],
        unique=False,
        sqlite_where=sa.text("previous_token_hash IS NOT NULL"),
        postgresql_where=sa.text("previous_token_hash IS NOT NULL"),
    )
    op.create_index(
        f"uq_{TOKENS}_active_name",
        TOKENS,
        ["kind", "owner_ref", "name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        EVENTS,
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("event", sa.String(length=50), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            [f"{TOKENS}.id"],
            name=op.f(f"fk_{EVENTS}_token_id_{TOKENS}"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{EVENTS}")),
    )
    op.create_index(op.f(f"ix_{EVENTS}_token_id"), EVENTS, ["token_id"], unique=False)
    op.create_index(op.f(f"ix_{EVENTS}_occurred_at"), EVENTS, ["occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f(f"ix_{EVENTS}_occurred_at"), table_name=EVENTS)
    op.drop_index(op.f(f"ix_{EVENTS}_token_id"), table_name=EVENTS)
    op.drop_table(EVENTS)
    op.drop_index(f"uq_{TOKENS}_active_name", table_name=TOKENS)
    op.drop_index(f"ix_{TOKENS}_previous_token_hash", table_name=TOKENS)
    for column in ("revoked_at", "expires_at", "owner_ref", "token_prefix"):
        op.drop_index(op.f(f"ix_{TOKENS}_{column}"), table_name=TOKENS)
    op.drop_table(TOKENS)
