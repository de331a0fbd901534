"""Tables of the ``notifications`` schema."""

import uuid
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.bus import add_inbox_table, add_outbox_table
from common.db import schema_metadata


class Base(DeclarativeBase):
    metadata = schema_metadata("notifications")


class Notification(Base):
    """One thing a user is told. ``dedup_key`` (e.g. ``order_approved:<order id>``) is unique,
    which is what makes "exactly one notification per saga outcome" hold under redelivery."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id_created_at", "user_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[uuid.UUID | None]
    dedup_key: Mapped[str] = mapped_column(String(100), unique=True)
    read: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# The bus's tables in this schema: messages waiting to be published, messages handled.
outbox = add_outbox_table(Base.metadata)
inbox = add_inbox_table(Base.metadata)
