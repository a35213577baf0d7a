"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Keep revision ids prefixed ``backstage_auth_`` (they share a namespace with
the app's own revisions), name constraints explicitly with ``op.f()``, and
use ``op.batch_alter_table`` for changes SQLite cannot ALTER.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | t.Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | t.Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | t.Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
