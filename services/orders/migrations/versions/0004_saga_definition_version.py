"""sagas record the version of the saga definition they started on; version 2's stock check

Expand only: a column with a default (rows of the previous release, and sagas it still
starts, are version 1) and one more allowed state, which only version 2 sagas enter. The
previous release runs on this schema unchanged.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = (
    "('awaiting_credit', 'awaiting_release', 'compensating', 'awaiting_notification', 'settled')"
)
NEW_STATES = (
    "('awaiting_credit', 'awaiting_stock', 'awaiting_release', 'compensating', "
    "'awaiting_notification', 'settled')"
)


def upgrade() -> None:
    op.add_column(
        "sagas",
        sa.Column("definition_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        schema="orders",
    )
    op.drop_constraint(op.f("ck_sagas_state_known"), "sagas", schema="orders", type_="check")
    op.create_check_constraint(
        op.f("ck_sagas_state_known"), "sagas", f"state IN {NEW_STATES}", schema="orders"
    )


def downgrade() -> None:
    # A version 2 saga checking stock holds credit: give up on the check (the order is
    # rejected and its credit released, as a timeout would), the previous release knows how.
    op.execute(
        "UPDATE orders.orders SET status = 'REJECTED', rejection_reason = 'timeout' "
        "WHERE id IN (SELECT order_id FROM orders.sagas WHERE state = 'awaiting_stock')"
    )
    op.execute(
        "UPDATE orders.sagas SET state = 'compensating', attempt = 0, deadline_at = now() "
        "WHERE state = 'awaiting_stock'"
    )
    op.drop_constraint(op.f("ck_sagas_state_known"), "sagas", schema="orders", type_="check")
    op.create_check_constraint(
        op.f("ck_sagas_state_known"), "sagas", f"state IN {OLD_STATES}", schema="orders"
    )
    op.drop_column("sagas", "definition_version", schema="orders")
