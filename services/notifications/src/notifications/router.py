"""HTTP routes of the notifications service: parse, call the service, shape the response."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response, status
from fastapi.responses import StreamingResponse

from common.auth import CurrentUser
from common.errors import Conflict, NotFound, Problem
from common.http import STREAM_SLOT, DatabaseDep, RedisDep
from common.openapi import raises, sends_location
from common.pagination import Cursor, Limit, Page, decode_cursor
from common.ratelimit import READ_LIMIT, WRITE_LIMIT
from common.replica import LaggingSession
from notifications import service
from notifications.context import NotificationsContextDep
from notifications.live import NotificationStream, StreamSlots
from notifications.schemas import (
    NotificationOut,
    WebhookAttemptOut,
    WebhookCreate,
    WebhookOut,
    WebhookWithSecret,
)

router = APIRouter(prefix="/notifications", tags=["notifications"])

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=200,
        description="The id of the last event received: the stream resumes after it.",
    ),
]


def _shown_once(created: service.WebhookSecret) -> WebhookWithSecret:
    """The webhook as every answer shows it, plus its secret in clear (this once)."""
    shown = WebhookOut.model_validate(created.webhook)
    return WebhookWithSecret(**shown.model_dump(), secret=created.secret)


@router.get("", response_model=Page[NotificationOut], dependencies=[READ_LIMIT])
async def list_notifications(
    caller: CurrentUser, session: LaggingSession, limit: Limit = 20, cursor: Cursor = None
) -> Page[NotificationOut]:
    """From the read replica when there is one (common.replica)."""
    return await service.list_notifications(session, caller.id, limit=limit, cursor=cursor)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    dependencies=[READ_LIMIT, STREAM_SLOT],
    summary="Server-sent events of the caller's new notifications",
    responses={200: {"content": {"text/event-stream": {}}}},
)
@raises(400, 429)  # 400: a Last-Event-ID this stream did not send; 429: too many open streams
async def stream_notifications(
    context: NotificationsContextDep,
    caller: CurrentUser,
    db: DatabaseDep,
    redis: RedisDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """``event: notification`` with the notification as ``data`` and a resumable ``id``;
    a comment line every heartbeat. Reconnect with ``Last-Event-ID`` to miss nothing.

    At most ``stream.max_per_user`` open streams per user (429 with ``Retry-After`` beyond);
    logging out (``DELETE /users/sessions/current``) ends the token's streams at once."""
    after = None
    if last_event_id:
        try:
            after = decode_cursor(last_event_id)
        except Problem as exc:
            raise Problem(
                "Last-Event-ID is not an event id of this stream.",
                status=400,
                errors=[{"field": "Last-Event-ID", "in": "header", "message": "invalid id"}],
            ) from exc
    settings = context.settings
    hub = context.live_hub
    if not await hub.ready(settings.redis.timeout_seconds):
        raise Problem(
            "The live stream is unavailable right now; retry shortly.",
            status=503,
            headers={"Retry-After": "2"},
        )
    slots = StreamSlots(
        redis, cap=settings.stream.max_per_user, lease_seconds=settings.stream.slot_lease_seconds
    )
    slot_id = uuid.uuid4().hex
    if not await slots.acquire(caller.id, slot_id):
        raise Problem(
            f"At most {settings.stream.max_per_user} notification streams can be open at once"
            " per user; close one first.",
            status=429,
            headers={"Retry-After": str(slots.retry_after_seconds)},
        )
    stream = NotificationStream(
        hub=hub,
        db=db,
        redis=redis,
        user=caller,
        after=after,
        settings=settings,
        slots=slots,
        slot_id=slot_id,
    )
    return StreamingResponse(
        stream.events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookWithSecret,
    dependencies=[WRITE_LIMIT],
)
@raises(Conflict)  # the user's webhook limit
@sends_location
async def create_webhook(
    body: WebhookCreate,
    context: NotificationsContextDep,
    response: Response,
    caller: CurrentUser,
    db: DatabaseDep,
) -> WebhookWithSecret:
    """Register an endpoint. The answer carries its Standard Webhooks signing secret
    (``whsec_...``): the only time it is shown."""
    settings = context.settings
    await service.check_webhook_target(body.url, settings)
    async with db.transaction() as uow:
        created = await service.create_webhook(uow, settings, context.secret_box, caller.id, body)
    response.headers["Location"] = f"/notifications/webhooks/{created.webhook.id}"
    response.headers["Cache-Control"] = "no-store"
    return _shown_once(created)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    dependencies=[WRITE_LIMIT],
)
@raises(NotFound)
async def rotate_webhook_secret(
    webhook_id: uuid.UUID,
    context: NotificationsContextDep,
    response: Response,
    caller: CurrentUser,
    db: DatabaseDep,
) -> WebhookWithSecret:
    """A new secret, shown once. Until ``previous_secret_expires_at`` deliveries carry two
    signatures (new and old), so the receiver can switch to the new secret without a gap."""
    async with db.transaction() as uow:
        rotated = await service.rotate_webhook_secret(
            uow, context.settings, context.secret_box, caller.id, webhook_id
        )
    response.headers["Cache-Control"] = "no-store"
    return _shown_once(rotated)


@router.get("/webhooks", response_model=Page[WebhookOut], dependencies=[READ_LIMIT])
async def list_webhooks(
    caller: CurrentUser, session: LaggingSession, limit: Limit = 20, cursor: Cursor = None
) -> Page[WebhookOut]:
    return await service.list_webhooks(session, caller.id, limit=limit, cursor=cursor)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[WRITE_LIMIT],
)
@raises(NotFound)
async def delete_webhook(webhook_id: uuid.UUID, caller: CurrentUser, db: DatabaseDep) -> Response:
    async with db.transaction() as uow:
        await service.delete_webhook(uow, caller.id, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=Page[WebhookAttemptOut],
    dependencies=[READ_LIMIT],
)
@raises(NotFound)
async def list_deliveries(
    webhook_id: uuid.UUID,
    caller: CurrentUser,
    session: LaggingSession,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[WebhookAttemptOut]:
    """Every attempt of every delivery to the webhook, newest first (may lag)."""
    return await service.list_attempts(session, caller.id, webhook_id, limit=limit, cursor=cursor)
