"""partitioned inbox: daily by the envelope's time, retention by dropping a day

Revision ID: 0003
Revises: 0002

Rows are kept (they go to the inbox_legacy partition, with the previous release's writes:
common.partition_migration.convert_inbox). docs/partitioning.md has the reasons.
"""

from collections.abc import Sequence

from alembic import op

from common.partition_migration import (
    OUTBOX_AUTOVACUUM,
    OUTBOX_AUTOVACUUM_NAMES,
    convert_inbox,
    inbox_to_plain,
    reset_storage,
    set_storage,
)

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "users"


def upgrade() -> None:
    convert_inbox(op.get_bind(), SCHEMA)
    set_storage(op.get_bind(), "users.outbox", OUTBOX_AUTOVACUUM)  # why: OUTBOX_AUTOVACUUM


def downgrade() -> None:
    reset_storage(op.get_bind(), "users.outbox", OUTBOX_AUTOVACUUM_NAMES)
    inbox_to_plain(op.get_bind(), SCHEMA)
