"""welcome confirmation: announce UserRegistered again until the welcome is stored

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 23:59:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column(
            "welcome_sent_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        schema="users",
    )
    op.add_column(
        "users", sa.Column("welcomed_at", sa.DateTime(timezone=True), nullable=True), schema="users"
    )
    # Users from before this revision were welcomed by the old, fire-and-forget announcement.
    op.execute("UPDATE users.users SET welcomed_at = created_at")
    op.create_index(
        "ix_users_welcome_sent_at_unwelcomed",
        "users",
        ["welcome_sent_at"],
        schema="users",
        postgresql_where=sa.text("welcomed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_users_welcome_sent_at_unwelcomed", "users", schema="users")
    op.drop_column("users", "welcomed_at", schema="users")
    op.drop_column("users", "welcome_sent_at", schema="users")
