"""Business rules of the notifications service.

Writes take a :class:`common.db.UnitOfWork`, reads a session; nothing here commits.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from common.contracts import NotificationKind, NotificationRecorded
from common.db import UnitOfWork
from common.errors import Conflict, NotFound, Problem
from common.pagination import Page, build_page, decode_cursor
from notifications import repository, webhooks
from notifications.live import LivePublisher
from notifications.models import Notification, Webhook
from notifications.schemas import (
    NotificationOut,
    WebhookAttemptOut,
    WebhookCreate,
    WebhookOut,
)
from notifications.secretbox import SecretBox
from notifications.settings import Settings

logger = logging.getLogger(__name__)


async def list_notifications(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, cursor: str | None
) -> Page[NotificationOut]:
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.list_notifications(session, user_id, limit=limit + 1, after=after)
    return build_page(
        rows, limit, item=NotificationOut.model_validate, key=lambda n: (n.created_at, n.id)
    )


@dataclass(frozen=True)
class Fanout:
    """Where a new notification goes once its unit of work commits: the user's live
    streams, and the webhook dispatcher (woken when deliveries were queued)."""

    live: LivePublisher
    wake_dispatcher: Callable[[], None]


async def record(
    uow: UnitOfWork,
    fanout: Fanout,
    *,
    user_id: uuid.UUID,
    kind: NotificationKind,
    order_id: uuid.UUID | None,
) -> Notification:
    """Store the notification once, whatever the redeliveries (unique dedup key).

    A new one is also queued for each of the user's webhooks and PUBLISHed to the user's
    live streams, both only if this unit of work commits.
    """
    recorded = await repository.record_notification(
        uow.connection, _candidate(user_id, kind, order_id)
    )
    assert recorded.notification is not None  # the conflict that skipped the insert was its
    _fan_out(uow, fanout, recorded)
    return recorded.notification


async def record_and_confirm(
    uow: UnitOfWork,
    fanout: Fanout,
    *,
    user_id: uuid.UUID,
    kind: NotificationKind,
    order_id: uuid.UUID | None,
) -> None:
    """Record the notification and confirm it (NotificationRecorded), every time it is asked:
    the saga (an outcome) or the users service (a welcome) announces again until confirmed.

    One statement (the worker's handlers are common.bus.OneStatement: no transaction): the
    notification, its deliveries, its confirmation and the announcement's inbox row. A
    notification recorded before (announced again) takes a second one: its confirmation,
    which names the notification stored first, with the inbox row.
    """
    candidate = _candidate(user_id, kind, order_id)
    confirmation = uow.prepare(_confirmation(candidate))
    recorded = await repository.record_notification(
        uow.connection, candidate, [confirmation], uow.inbox_claim
    )
    uow.written(recorded.written)
    _fan_out(uow, fanout, recorded)
    if recorded.created:
        return
    if recorded.notification is None:  # its dedup key's row is gone (retention): nothing
        logger.warning("announced notification no longer stored", extra={"kind": kind})
        return
    again = uow.prepare(_confirmation(recorded.notification))
    uow.written(await repository.confirm(uow.connection, [again], uow.inbox_claim))


def _candidate(
    user_id: uuid.UUID, kind: NotificationKind, order_id: uuid.UUID | None
) -> Notification:
    subject = order_id or user_id
    return Notification(
        id=uuid.uuid4(),
        user_id=user_id,
        kind=kind,
        order_id=order_id,
        dedup_key=f"{kind}:{subject}",
    )


def _confirmation(notification: Notification) -> NotificationRecorded:
    return NotificationRecorded(
        notification_id=notification.id,
        order_id=notification.order_id,
        user_id=notification.user_id,
        kind=NotificationKind(notification.kind),
    )


def _fan_out(uow: UnitOfWork, fanout: Fanout, recorded: repository.Recorded) -> None:
    """A new notification goes to the user's webhooks and live streams once committed."""
    if not recorded.created or recorded.notification is None:
        return
    if recorded.queued:
        uow.after_commit(fanout.wake_dispatcher)
    fanout.live.publish_after_commit(uow, recorded.notification)


# -- webhooks ------------------------------------------------------------------------------


def _url_problem(reason: str) -> Problem:
    return Problem(
        f"Invalid request: url ({reason}).",
        status=422,
        errors=[{"field": "url", "in": "body", "message": reason, "type": "url_refused"}],
    )


async def check_webhook_target(url: str, settings: Settings) -> None:
    """Refuse (422 naming ``url``) a URL that is not http(s) or whose host does not resolve
    to public addresses only (unless private targets are allowed)."""
    try:
        await webhooks.resolve(
            url,
            dns_timeout=settings.webhook.dns_timeout_seconds,
            allow_private=settings.webhook.allow_private_targets,
        )
    except webhooks.TargetRefused as exc:
        raise _url_problem(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class WebhookSecret:
    """A webhook with its newly generated signing secret in clear: what creating a webhook or
    rotating its secret returns, for the router to show once (it is stored encrypted)."""

    webhook: Webhook
    secret: str = field(repr=False)


async def create_webhook(
    uow: UnitOfWork,
    settings: Settings,
    box: SecretBox,
    user_id: uuid.UUID,
    body: WebhookCreate,
) -> WebhookSecret:
    """Call :func:`check_webhook_target` first (DNS; outside any transaction). The answer is
    the only place the generated secret ever appears in clear."""
    session = uow.session
    await repository.lock_user(session, user_id)  # concurrent creations respect the limit
    if await repository.count_webhooks(session, user_id) >= settings.webhook.max_per_user:
        raise Conflict(
            f"A user can register at most {settings.webhook.max_per_user} webhooks;"
            " delete one first."
        )
    secret = webhooks.new_secret()
    webhook = Webhook(
        id=uuid.uuid4(), user_id=user_id, url=body.url, secret_ciphertext=box.encrypt(secret)
    )
    stored = await repository.insert_webhook(session, webhook)
    return WebhookSecret(stored, secret)


async def rotate_webhook_secret(
    uow: UnitOfWork,
    settings: Settings,
    box: SecretBox,
    user_id: uuid.UUID,
    webhook_id: uuid.UUID,
) -> WebhookSecret:
    """A new secret signs every delivery from now on; the current one keeps signing too
    (a second signature) for the grace period, so the receiver can switch without a gap.
    Rotating again within the grace period ends the older secret's grace at once."""
    session = uow.session
    webhook = await repository.get_webhook(session, user_id, webhook_id, for_update=True)
    if webhook is None:
        raise NotFound("No such webhook.")
    secret = webhooks.new_secret()
    grace = settings.webhook.secret_rotation_grace_seconds
    if grace > 0:
        webhook.previous_secret_ciphertext = webhook.secret_ciphertext
        webhook.previous_secret_expires_at = datetime.now(UTC) + timedelta(seconds=grace)
    else:
        webhook.previous_secret_ciphertext = None
        webhook.previous_secret_expires_at = None
    webhook.secret_ciphertext = box.encrypt(secret)
    await session.flush()
    return WebhookSecret(webhook, secret)


async def list_webhooks(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, cursor: str | None
) -> Page[WebhookOut]:
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.list_webhooks(session, user_id, limit=limit + 1, after=after)
    return build_page(
        rows, limit, item=WebhookOut.model_validate, key=lambda w: (w.created_at, w.id)
    )


async def delete_webhook(uow: UnitOfWork, user_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    if not await repository.delete_webhook(uow.session, user_id, webhook_id):
        raise NotFound("No such webhook.")


async def list_attempts(
    session: AsyncSession,
    user_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
) -> Page[WebhookAttemptOut]:
    """Every attempt of every delivery to the user's webhook, newest first."""
    if await repository.get_webhook(session, user_id, webhook_id) is None:
        raise NotFound("No such webhook.")
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.list_attempts(session, webhook_id, limit=limit + 1, after=after)
    return build_page(
        rows, limit, item=WebhookAttemptOut.model_validate, key=lambda a: (a.at, a.id)
    )
