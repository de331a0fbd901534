"""operator console: audit table, message ids on saga steps, sagas listed by age

Revision ID: 0003
Revises: 0001 (on the admin branch; repointed to 0002 when merged after it)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operator_audit",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_audit")),
        schema="orders",
    )
    op.create_index(
        "ix_operator_audit_at_id", "operator_audit", ["at", "id"], unique=False, schema="orders"
    )
    op.add_column("saga_steps", sa.Column("message_id", sa.Uuid(), nullable=True), schema="orders")
    op.add_column(
        "saga_steps",
        sa.Column("message_type", sa.String(length=64), nullable=True),
        schema="orders",
    )
    op.add_column(
        "saga_steps", sa.Column("cause_id", sa.String(length=64), nullable=True), schema="orders"
    )
    op.create_index(
        "ix_sagas_created_at_order_id",
        "sagas",
        ["created_at", "order_id"],
        unique=False,
        schema="orders",
    )


def downgrade() -> None:
    op.drop_index("ix_sagas_created_at_order_id", table_name="sagas", schema="orders")
    op.drop_column("saga_steps", "cause_id", schema="orders")
    op.drop_column("saga_steps", "message_type", schema="orders")
    op.drop_column("saga_steps", "message_id", schema="orders")
    op.drop_index("ix_operator_audit_at_id", table_name="operator_audit", schema="orders")
    op.drop_table("operator_audit", schema="orders")
