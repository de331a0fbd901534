"""Tables of the ``orders`` schema."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.bus import add_inbox_table, add_outbox_table
from common.contracts import SagaState
from common.db import schema_metadata
from common.partitions import PartitionedTable
from orders.saga import OrderStatus

ORDER_STATUSES = tuple(status.value for status in OrderStatus)
SAGA_STATES = tuple(state.value for state in SagaState)


class Base(DeclarativeBase):
    metadata = schema_metadata("orders")


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total_cents > 0", name="total_positive"),
        CheckConstraint(f"status IN {ORDER_STATUSES}", name="status_known"),
        Index("ix_orders_user_id_created_at", "user_id", "created_at", "id"),
        Index(
            "uq_orders_user_id_idempotency_key",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_where="idempotency_key IS NOT NULL",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(String(16))
    total_cents: Mapped[int] = mapped_column(BigInteger)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    rejection_reason: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Saga(Base):
    """The persisted saga of one order: what it waits for, until when, and its versions.

    ``version`` is SQLAlchemy's optimistic lock: an update that read a stale version fails
    instead of overwriting a concurrent transition (a reply racing a cancel or a timeout).
    """

    __tablename__ = "sagas"
    __table_args__ = (
        CheckConstraint(f"state IN {SAGA_STATES}", name="state_known"),
        Index(
            "ix_sagas_deadline_at", "deadline_at", postgresql_where=text("deadline_at IS NOT NULL")
        ),
        Index("ix_sagas_created_at_order_id", "created_at", "order_id"),  # the operator's list
        Index("ix_sagas_state_created_at_order_id", "state", "created_at", "order_id"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.orders.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    # The saga definition it started on (orders.saga.DEFINITIONS): it finishes on that one,
    # whatever a later release makes current. Rows from before versions existed are 1.
    definition_version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    # Re-sends of what the saga waits for now (orders.saga): stretches the next deadline.
    attempt: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    correlation_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __mapper_args__ = {"version_id_col": version}


class SagaStep(Base):
    """The saga's history, one row per step event, in order.

    Range partitioned by ``at``, monthly (migration 0005, common.partitions): the primary key
    holds the partition key, as PostgreSQL requires; ``id`` alone is unique in practice.
    """

    __tablename__ = "saga_steps"
    __table_args__ = (
        Index("ix_saga_steps_order_id_id", "order_id", "id"),
        {"postgresql_partition_by": "RANGE (at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.sagas.order_id"))
    name: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(200))
    # Part of the table's primary key (a partitioned table's key must hold the partition
    # key), not of the ORM's identity: the id alone is unique, and session.get(id) stays.
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # For the operator's timeline: the message this step sent (its envelope id and type), and
    # the incoming message (a reply) whose handling made the step, where there was one.
    message_id: Mapped[uuid.UUID | None]
    message_type: Mapped[str | None] = mapped_column(String(64))
    cause_id: Mapped[str | None] = mapped_column(String(64))


class OperatorAudit(Base):
    """Every operator action (orders.admin_service): who, when, what, on what, and how it went.

    Written in the same transaction as the action's effect when the effect is in Postgres
    (retry, compensate); after the effect for a dead-letter redrive, whose effect is in Redis.
    """

    __tablename__ = "operator_audit"
    __table_args__ = (
        Index("ix_operator_audit_at_id", "at", "id"),
        {"postgresql_partition_by": "RANGE (at)"},  # monthly (migration 0005)
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Part of the table's primary key (a partitioned table's key must hold the partition
    # key), not of the ORM's identity: the id alone is unique, and session.get(id) stays.
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    operator: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB)


# The bus's tables in this schema: messages waiting to be published, messages handled.
outbox = add_outbox_table(Base.metadata)
inbox = add_inbox_table(Base.metadata)

# Time-partitioned history (migration 0005) and its defaults; settings override the grid and
# the retention per table (common.partition_maintenance). The inbox's plan is the bus's own.
PARTITIONED = (
    # Read per order (a saga's timeline) and by the console: a month per partition keeps the
    # per-order lookup to a dozen partitions over the retention.
    PartitionedTable("orders", "saga_steps", "at", "month", retention_days=400),
    PartitionedTable("orders", "operator_audit", "at", "month", retention_days=730),
)
