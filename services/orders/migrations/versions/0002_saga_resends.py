"""saga re-sends: an attempt counter and the compensating state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 23:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = "('awaiting_credit', 'awaiting_release', 'awaiting_notification', 'settled')"
NEW_STATES = (
    "('awaiting_credit', 'awaiting_release', 'compensating', 'awaiting_notification', 'settled')"
)


def upgrade() -> None:
    op.add_column(
        "sagas",
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        schema="orders",
    )
    op.drop_constraint(op.f("ck_sagas_state_known"), "sagas", schema="orders", type_="check")
    op.create_check_constraint(
        op.f("ck_sagas_state_known"), "sagas", f"state IN {NEW_STATES}", schema="orders"
    )


def downgrade() -> None:
    # A saga compensating a timeout waits for its release; the old schema had no such state.
    op.execute("UPDATE orders.sagas SET state = 'awaiting_release' WHERE state = 'compensating'")
    op.drop_constraint(op.f("ck_sagas_state_known"), "sagas", schema="orders", type_="check")
    op.create_check_constraint(
        op.f("ck_sagas_state_known"), "sagas", f"state IN {OLD_STATES}", schema="orders"
    )
    op.drop_column("sagas", "attempt", schema="orders")
