"""partitioned history: webhook attempts monthly, the inbox daily

Revision ID: 0004
Revises: 0003

Rows are kept (common.partition_migration). The notifications and the webhook deliveries
stay unpartitioned in this release: the previous release inserts them with
``ON CONFLICT (dedup_key)`` and ``ON CONFLICT (webhook_id, notification_id)``, which need a
unique index on exactly those columns, and a partitioned table's unique indexes must hold
its partition key (docs/partitioning.md: the plan for the next release). Attempts take no
ON CONFLICT and name their ``at``: the previous release works on them unchanged.
"""

from collections.abc import Sequence

from alembic import op

from common.partition_migration import (
    OUTBOX_AUTOVACUUM,
    OUTBOX_AUTOVACUUM_NAMES,
    convert_inbox,
    convert_to_partitioned,
    convert_to_plain,
    inbox_to_plain,
    reset_storage,
    set_storage,
)
from common.partitions import PartitionedTable

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifications"
ATTEMPTS = PartitionedTable(SCHEMA, "webhook_attempts", "at", "month", retention_days=90)
ATTEMPT_COLUMNS = (
    "id, delivery_id, webhook_id, notification_id, attempt, at, status_code, error, outcome, "
    "duration_ms, next_attempt_at"
)


def _attempts_table(partitioned: bool) -> list[str]:
    key = "id, at" if partitioned else "id"
    suffix = " PARTITION BY RANGE (at)" if partitioned else ""
    return [
        f"""CREATE TABLE notifications.webhook_attempts (
            id uuid NOT NULL,
            delivery_id uuid NOT NULL,
            webhook_id uuid NOT NULL,
            notification_id uuid NOT NULL,
            attempt integer NOT NULL,
            at timestamptz NOT NULL,
            status_code integer,
            error varchar(500),
            outcome varchar(16) NOT NULL,
            duration_ms double precision NOT NULL,
            next_attempt_at timestamptz,
            CONSTRAINT pk_webhook_attempts PRIMARY KEY ({key}),
            CONSTRAINT ck_webhook_attempts_outcome
                CHECK (outcome IN ('succeeded', 'retrying', 'gave_up')),
            CONSTRAINT fk_webhook_attempts_delivery_id_webhook_deliveries
                FOREIGN KEY (delivery_id) REFERENCES notifications.webhook_deliveries (id)
                ON DELETE CASCADE,
            CONSTRAINT fk_webhook_attempts_webhook_id_webhooks
                FOREIGN KEY (webhook_id) REFERENCES notifications.webhooks (id)
                ON DELETE CASCADE
        ){suffix}""",
        "CREATE INDEX ix_webhook_attempts_delivery_id "
        "ON notifications.webhook_attempts (delivery_id)",
        "CREATE INDEX ix_webhook_attempts_webhook_id_at "
        "ON notifications.webhook_attempts (webhook_id, at, id)",
    ]


def upgrade() -> None:
    bind = op.get_bind()
    convert_to_partitioned(
        bind, ATTEMPTS, create=_attempts_table(True), columns=ATTEMPT_COLUMNS, oldest_from="at"
    )
    convert_inbox(bind, SCHEMA)
    set_storage(bind, "notifications.outbox", OUTBOX_AUTOVACUUM)  # why: OUTBOX_AUTOVACUUM


def downgrade() -> None:
    bind = op.get_bind()
    reset_storage(bind, "notifications.outbox", OUTBOX_AUTOVACUUM_NAMES)
    inbox_to_plain(bind, SCHEMA)
    convert_to_plain(
        bind, SCHEMA, "webhook_attempts", create=_attempts_table(False), columns=ATTEMPT_COLUMNS
    )
