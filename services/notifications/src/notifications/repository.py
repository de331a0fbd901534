"""Every query of the notifications service."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    and_,
    case,
    delete,
    extract,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Outgoing
from common.bus.statements import InboxRow, OutboxRows
from common.db import DriverConnection, InboxClaim
from notifications.models import (
    Notification,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    inbox,
    outbox,
)

CursorKey = tuple[datetime, uuid.UUID]

# pg_advisory_xact_lock(namespace, key): the two-int form, so these locks never collide with
# another schema's single-bigint ones. "NOTI" in ASCII.
_LOCK_NAMESPACE = 0x4E4F5449


# -- notifications -------------------------------------------------------------------------


async def list_notifications(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    after: CursorKey | None,
) -> Sequence[Notification]:
    """Newest first, strictly older than ``after``."""
    statement = select(Notification).where(Notification.user_id == user_id)
    if after is not None:
        statement = statement.where(tuple_(Notification.created_at, Notification.id) < after)
    statement = statement.order_by(Notification.created_at.desc(), Notification.id.desc())
    return (await session.execute(statement.limit(limit))).scalars().all()


async def notifications_since(
    session: AsyncSession, user_id: uuid.UUID, *, after: CursorKey, limit: int
) -> Sequence[Notification]:
    """Oldest first, strictly newer than ``after``: what a stream has not sent yet."""
    statement = (
        select(Notification)
        .where(
            Notification.user_id == user_id,
            tuple_(Notification.created_at, Notification.id) > after,
        )
        .order_by(Notification.created_at, Notification.id)
        .limit(limit)
    )
    return (await session.execute(statement)).scalars().all()


async def latest_notification_key(session: AsyncSession, user_id: uuid.UUID) -> CursorKey | None:
    statement = (
        select(Notification.created_at, Notification.id)
        .where(Notification.user_id == user_id)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(1)
    )
    row = (await session.execute(statement)).first()
    return (row.created_at, row.id) if row is not None else None


async def lock_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Serialise the transactions that record notifications for one user, until commit.

    With ``created_at = clock_timestamp()`` taken under this lock, a user's notifications
    commit in ``(created_at, id)`` order, which is what lets a stream resume from a cursor
    without missing a notification that committed after a newer-looking one.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
        {"namespace": _LOCK_NAMESPACE, "key": _lock_key(user_id)},
    )


def _lock_key(user_id: uuid.UUID) -> int:
    return int.from_bytes(user_id.bytes[:4], "big", signed=True)


# The notification's hot path in one round trip: the user's lock (taken first: the INSERT reads
# from it), the insert unless its dedup key exists, one pending delivery per webhook, and, if
# it was inserted, the confirmation's outbox row ($8..$10) and the announcement's inbox row
# ($11..$13). An asyncpg prepared statement on the unit of work's connection
# (common.db.UnitOfWork.connection): it runs for every order outcome, so no SQLAlchemy
# compilation per call. The lock is a transaction's: held until this statement's commit, when
# it runs on its own (a single-statement unit of work), as it would be until COMMIT.
_NEW_INBOX = InboxRow(inbox, 11, when="EXISTS (SELECT 1 FROM inserted)")
_NEW_OUTBOX = OutboxRows(outbox, 8, when="EXISTS (SELECT 1 FROM inserted)")
_RECORD = f"""
    WITH locked AS (
        SELECT pg_advisory_xact_lock($1::int, $2::int)
    ), inserted AS (
        INSERT INTO notifications.notifications (id, user_id, kind, order_id, dedup_key, created_at)
        SELECT $3::uuid, $4::uuid, $5::varchar, $6::uuid, $7::varchar, clock_timestamp() FROM locked
        WHERE {_NEW_INBOX.unseen}
        ON CONFLICT (dedup_key) DO NOTHING
        RETURNING id, user_id, kind, order_id, dedup_key, read, created_at
    ), queued AS (
        INSERT INTO notifications.webhook_deliveries (id, webhook_id, notification_id)
        SELECT gen_random_uuid(), webhooks.id, inserted.id
        FROM notifications.webhooks JOIN inserted ON webhooks.user_id = inserted.user_id
        ON CONFLICT (webhook_id, notification_id) DO NOTHING
        RETURNING 1
    ), {_NEW_INBOX.cte}, {_NEW_OUTBOX.cte}
    SELECT inserted.*, (SELECT count(*) FROM queued) AS queued, {_NEW_OUTBOX.ids} FROM inserted
"""  # noqa: S608 - names from models
_NOTIFICATION_COLUMNS = ("id", "user_id", "kind", "order_id", "dedup_key", "read", "created_at")
_BY_DEDUP_KEY = f"""
    SELECT {", ".join(_NOTIFICATION_COLUMNS)}
    FROM notifications.notifications WHERE dedup_key = $1
"""  # noqa: S608
# A notification recorded before (announced again): its confirmation's outbox row ($1..$3),
# with the announcement's inbox row ($4..$6): nothing when that was handled already.
_AGAIN_INBOX = InboxRow(inbox, 4)
_AGAIN_OUTBOX = OutboxRows(outbox, 1, when=_AGAIN_INBOX.first_time)
_CONFIRM = f"WITH {_AGAIN_INBOX.cte}, {_AGAIN_OUTBOX.cte} SELECT {_AGAIN_OUTBOX.ids}"


@dataclass(frozen=True)
class Recorded:
    """What recording a notification did: the one stored under its dedup key (None only if
    that was dropped meanwhile), whether this call inserted it, how many deliveries it
    queued, and the outbox rows it wrote."""

    notification: Notification | None
    created: bool
    queued: int = 0
    written: list[tuple[int, Outgoing]] = field(default_factory=list)


async def record_notification(
    connection: DriverConnection,
    notification: Notification,
    outgoing: Sequence[Outgoing] = (),
    claim: InboxClaim | None = None,
) -> Recorded:
    """Store ``notification`` unless one with its dedup key exists, under the user's lock (see
    :func:`lock_user`), queue a delivery per webhook of the user, and write ``outgoing``'s
    outbox rows and the ``claim``'s inbox row: one statement, all of it only if the
    notification is new (and the claim's message was not handled before). Otherwise, the
    stored notification, for the caller to confirm (:func:`confirm`)."""
    row = await connection.fetchrow(
        _RECORD,
        _LOCK_NAMESPACE,
        _lock_key(notification.user_id),
        notification.id,
        notification.user_id,
        notification.kind,
        notification.order_id,
        notification.dedup_key,
        *OutboxRows.params(outgoing),
        *InboxRow.params(claim),
    )
    if row is not None:
        stored = Notification(**{name: row[name] for name in _NOTIFICATION_COLUMNS})
        return Recorded(stored, True, int(row["queued"]), OutboxRows.written(row, outgoing))
    existing = await connection.fetchrow(_BY_DEDUP_KEY, notification.dedup_key)
    return Recorded(None if existing is None else Notification(**dict(existing)), False)


async def confirm(
    connection: DriverConnection, outgoing: Sequence[Outgoing], claim: InboxClaim | None = None
) -> list[tuple[int, Outgoing]]:
    """Write a confirmation's outbox rows with the ``claim``'s inbox row (none of it when the
    claim's message was handled before): one statement."""
    row = await connection.fetchrow(_CONFIRM, *OutboxRows.params(outgoing), *InboxRow.params(claim))
    return OutboxRows.written(row, outgoing)


# -- webhooks ------------------------------------------------------------------------------


async def count_webhooks(session: AsyncSession, user_id: uuid.UUID) -> int:
    statement = select(func.count()).select_from(Webhook).where(Webhook.user_id == user_id)
    return int((await session.execute(statement)).scalar_one())


async def insert_webhook(session: AsyncSession, webhook: Webhook) -> Webhook:
    session.add(webhook)
    await session.flush()
    await session.refresh(webhook)
    return webhook


async def list_webhooks(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, after: CursorKey | None
) -> Sequence[Webhook]:
    statement = select(Webhook).where(Webhook.user_id == user_id)
    if after is not None:
        statement = statement.where(tuple_(Webhook.created_at, Webhook.id) < after)
    statement = statement.order_by(Webhook.created_at.desc(), Webhook.id.desc()).limit(limit)
    return (await session.execute(statement)).scalars().all()


async def get_webhook(
    session: AsyncSession, user_id: uuid.UUID, webhook_id: uuid.UUID, *, for_update: bool = False
) -> Webhook | None:
    statement = select(Webhook).where(Webhook.id == webhook_id, Webhook.user_id == user_id)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def delete_webhook(session: AsyncSession, user_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
    """Delete the webhook (its deliveries and attempts go with it); False if not the user's."""
    statement = (
        delete(Webhook)
        .where(Webhook.id == webhook_id, Webhook.user_id == user_id)
        .returning(Webhook.id)
    )
    return (await session.execute(statement)).first() is not None


async def list_attempts(
    session: AsyncSession, webhook_id: uuid.UUID, *, limit: int, after: CursorKey | None
) -> Sequence[WebhookAttempt]:
    statement = select(WebhookAttempt).where(WebhookAttempt.webhook_id == webhook_id)
    if after is not None:
        statement = statement.where(tuple_(WebhookAttempt.at, WebhookAttempt.id) < after)
    statement = statement.order_by(WebhookAttempt.at.desc(), WebhookAttempt.id.desc())
    return (await session.execute(statement.limit(limit))).scalars().all()


# -- the delivery queue --------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    """A leased delivery and everything needed to attempt it."""

    id: uuid.UUID
    claim_id: uuid.UUID
    attempts: int  # made before this one
    webhook_id: uuid.UUID
    url: str
    # Encrypted signing secrets: the current one, then the previous one while in its grace.
    secret_ciphertexts: list[str]
    notification_id: uuid.UUID
    user_id: uuid.UUID
    kind: str
    order_id: uuid.UUID | None
    created_at: datetime


async def claim_due_deliveries(
    session: AsyncSession, *, limit: int, lease_seconds: float
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries, oldest due first, skipping rows another worker
    has locked: ``next_attempt_at`` moves past the lease, so none is claimed twice at once,
    and a worker that dies mid-attempt leaves the row due again when the lease ends."""
    due = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.attempts,
            Webhook.id.label("webhook_id"),
            Webhook.url,
            Webhook.secret_ciphertext,
            case(
                (
                    Webhook.previous_secret_expires_at > func.now(),
                    Webhook.previous_secret_ciphertext,
                ),
                else_=None,
            ).label("previous_secret_ciphertext"),
            Notification.id.label("notification_id"),
            Notification.user_id,
            Notification.kind,
            Notification.order_id,
            Notification.created_at,
        )
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .join(Notification, Notification.id == WebhookDelivery.notification_id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= func.now())
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)
    )
    rows = (await session.execute(due)).all()
    if not rows:
        return []
    claim_id = uuid.uuid4()
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_([row.id for row in rows]))
        .values(
            claim_id=claim_id,
            next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds),
            updated_at=func.now(),
        )
    )
    return [
        ClaimedDelivery(
            id=row.id,
            claim_id=claim_id,
            attempts=row.attempts,
            webhook_id=row.webhook_id,
            url=row.url,
            secret_ciphertexts=[
                c for c in (row.secret_ciphertext, row.previous_secret_ciphertext) if c
            ],
            notification_id=row.notification_id,
            user_id=row.user_id,
            kind=row.kind,
            order_id=row.order_id,
            created_at=row.created_at,
        )
        for row in rows
    ]


async def defer_delivery(
    session: AsyncSession, delivery: ClaimedDelivery, *, seconds: float
) -> None:
    """Give the lease back without an attempt: due again in ``seconds``."""
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id, WebhookDelivery.claim_id == delivery.claim_id)
        .values(
            claim_id=None,
            next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds),
            updated_at=func.now(),
        )
    )


async def record_attempt(
    session: AsyncSession,
    delivery: ClaimedDelivery,
    *,
    at: datetime,
    status_code: int | None,
    error: str | None,
    outcome: str,
    duration_ms: float,
    retry_in_seconds: float | None,
) -> WebhookAttempt | None:
    """Store an attempt and move the delivery on (succeeded, failed, or due again later).

    Only the holder of the current lease records: returns None (nothing written) when the
    lease was lost or the webhook was deleted meanwhile, else the stored attempt.
    """
    status = {"succeeded": "succeeded", "gave_up": "failed"}.get(outcome, "pending")
    next_attempt_at = (
        func.now() + func.make_interval(0, 0, 0, 0, 0, 0, retry_in_seconds)
        if retry_in_seconds is not None
        else None
    )
    updated = (
        await session.execute(
            update(WebhookDelivery)
            .where(
                and_(
                    WebhookDelivery.id == delivery.id,
                    WebhookDelivery.claim_id == delivery.claim_id,
                    WebhookDelivery.status == "pending",
                )
            )
            .values(
                status=status,
                attempts=delivery.attempts + 1,
                claim_id=None,
                next_attempt_at=next_attempt_at,
                updated_at=func.now(),
            )
            .returning(WebhookDelivery.next_attempt_at)
        )
    ).first()
    if updated is None:
        return None
    attempt = WebhookAttempt(
        id=uuid.uuid4(),
        delivery_id=delivery.id,
        webhook_id=delivery.webhook_id,
        notification_id=delivery.notification_id,
        attempt=delivery.attempts + 1,
        at=at,
        status_code=status_code,
        error=error,
        outcome=outcome,
        duration_ms=duration_ms,
        next_attempt_at=updated.next_attempt_at,
    )
    session.add(attempt)
    await session.flush()
    return attempt


async def seconds_until_next_due(session: AsyncSession) -> float | None:
    """How long until the earliest pending delivery is due (<= 0: now); None: none pending."""
    statement = select(
        extract("epoch", func.min(WebhookDelivery.next_attempt_at) - func.now())
    ).where(WebhookDelivery.status == "pending")
    value = (await session.execute(statement)).scalar_one_or_none()
    return float(value) if value is not None else None
