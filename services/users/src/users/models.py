"""Tables of the ``users`` schema."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.bus import add_inbox_table, add_outbox_table
from common.db import schema_metadata


class Base(DeclarativeBase):
    metadata = schema_metadata("users")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("credit_limit_cents >= 0", name="credit_limit_non_negative"),
        CheckConstraint("status IN ('active', 'inactive')", name="status_known"),
        Index(
            "ix_users_welcome_sent_at_unwelcomed",
            "welcome_sent_at",
            postgresql_where=text("welcomed_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    credit_limit_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # The welcome notification: UserRegistered is announced again (welcome_sent_at moves on)
    # until notifications confirms it (welcomed_at), so a lost announcement is not lost.
    welcome_sent_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    welcomed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CreditReservation(Base):
    """The answer to one order's ReserveCredit, kept so that the answer never changes.

    ``active`` holds credit against the user's limit; ``released`` gave it back (or, with
    amount 0, marks an order released before its reservation arrived, so a late
    ReserveCredit cannot hold credit for a dead order); ``rejected`` records a refusal.
    """

    __tablename__ = "credit_reservations"
    __table_args__ = (
        CheckConstraint("amount_cents >= 0", name="amount_non_negative"),
        CheckConstraint("status IN ('active', 'released', 'rejected')", name="status_known"),
        Index(
            "ix_credit_reservations_user_id_active",
            "user_id",
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.users.id"))
    order_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    rejection_reason: Mapped[str | None] = mapped_column(String(32))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# The bus's tables in this schema: messages waiting to be published, messages handled.
outbox = add_outbox_table(Base.metadata)
inbox = add_inbox_table(Base.metadata)
