"""An outcome's notification and its confirmation, as the worker records them: one statement
with the announcement's inbox row (no transaction), once per outcome, confirmed every time."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from common.contracts import NotificationKind, NotificationRecorded
from common.db import Database, InboxClaim
from notifications import service
from notifications.models import Notification, inbox, outbox
from notifications.service import Fanout

pytestmark = pytest.mark.integration


async def _announce(database: Database, fanout: Fanout, claim: InboxClaim, **event: Any) -> None:
    async with database.single_statement() as uow:
        uow.inbox_claim = claim
        await service.record_and_confirm(uow, fanout, kind=NotificationKind.ORDER_APPROVED, **event)


async def _confirmations(database: Database, order_id: uuid.UUID) -> list[str]:
    """The notification ids the outbox's NotificationRecorded rows for ``order_id`` name."""
    async with database.session() as session:
        envelopes = (
            await session.execute(select(outbox.c.envelope).order_by(outbox.c.id))
        ).scalars()
        return [
            e["payload"]["notification_id"]
            for e in envelopes
            if e["type"] == NotificationRecorded.TYPE and e["payload"]["order_id"] == str(order_id)
        ]


async def _stored(database: Database, order_id: uuid.UUID) -> list[str]:
    async with database.session() as session:
        query = select(Notification.id).where(Notification.order_id == order_id)
        return [
            str(notification_id) for notification_id in (await session.execute(query)).scalars()
        ]


async def _inbox_rows(database: Database, *claims: InboxClaim) -> int:
    async with database.session() as session:
        query = select(func.count()).where(inbox.c.message_id.in_([c.message_id for c in claims]))
        return int((await session.execute(query)).scalar_one())


async def test_an_outcome_is_stored_once_and_confirmed_each_time_it_is_announced(
    database: Database, fanout: Fanout, new_user: Any
) -> None:
    user = await new_user()
    event = {"user_id": user.id, "order_id": uuid.uuid4()}
    first = InboxClaim(uuid.uuid4(), "notifications", datetime.now(UTC))
    again = InboxClaim(uuid.uuid4(), "notifications", datetime.now(UTC))  # the saga's re-send

    await _announce(database, fanout, first, **event)
    [stored] = await _stored(database, event["order_id"])
    assert await _confirmations(database, event["order_id"]) == [stored]

    await _announce(database, fanout, first, **event)  # the same message, redelivered
    assert await _confirmations(database, event["order_id"]) == [stored]  # nothing more

    await _announce(database, fanout, again, **event)  # announced again: confirmed again
    assert await _stored(database, event["order_id"]) == [stored]
    assert await _confirmations(database, event["order_id"]) == [stored, stored]
    assert await _inbox_rows(database, first, again) == 2
