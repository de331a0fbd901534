"""Tables of the ``notifications`` schema."""

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.bus import add_inbox_table, add_outbox_table
from common.db import schema_metadata


class Base(DeclarativeBase):
    metadata = schema_metadata("notifications")


class Notification(Base):
    """One thing a user is told. ``dedup_key`` (e.g. ``order_approved:<order id>``) is unique,
    which is what makes "exactly one notification per saga outcome" hold under redelivery.

    ``created_at`` is taken with ``clock_timestamp()`` while the transaction holds the user's
    advisory lock (see ``repository.lock_user``), so a user's notifications commit in
    ``(created_at, id)`` order: a cursor over them never skips one committed later.
    """

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id_created_at", "user_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[uuid.UUID | None]
    dedup_key: Mapped[str] = mapped_column(String(100), unique=True)
    read: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Webhook(Base):
    """A user's endpoint; every new notification of the user is POSTed to it, signed with
    ``secret`` (write-only: the API never returns it)."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_user_id_created_at", "user_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID]
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


DELIVERY_STATUSES = ("pending", "succeeded", "failed")


class WebhookDelivery(Base):
    """One notification to one webhook: the durable work queue of the delivery worker.

    Inserted in the transaction that records the notification, so none is ever lost. A
    worker claims due rows (``status = 'pending' AND next_attempt_at <= now()``) with
    ``FOR UPDATE SKIP LOCKED`` and leases them by pushing ``next_attempt_at`` past the longest
    possible attempt; ``claim_id`` identifies the lease, so the result of an attempt whose
    lease was lost is never recorded twice. ``id`` is the ``Webhook-Id`` header: receivers
    deduplicate on it.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "notification_id"),
        CheckConstraint(f"status IN {DELIVERY_STATUSES}", name="status"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Webhook.id, ondelete="CASCADE"))
    notification_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(Notification.id, ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    claim_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


ATTEMPT_OUTCOMES = ("succeeded", "retrying", "gave_up")


class WebhookAttempt(Base):
    """One POST (or failure to make one) of a delivery: what ``.../deliveries`` lists."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        CheckConstraint(f"outcome IN {ATTEMPT_OUTCOMES}", name="outcome"),
        Index("ix_webhook_attempts_webhook_id_at", "webhook_id", "at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(WebhookDelivery.id, ondelete="CASCADE"), index=True
    )
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Webhook.id, ondelete="CASCADE"))
    notification_id: Mapped[uuid.UUID]
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    outcome: Mapped[str] = mapped_column(String(16))
    duration_ms: Mapped[float] = mapped_column(Float)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# The bus's tables in this schema: messages waiting to be published, messages handled.
outbox = add_outbox_table(Base.metadata)
inbox = add_inbox_table(Base.metadata)
