"""A registration is announced again until its welcome notification is confirmed."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from common.db import Database
from users import service
from users.models import User, outbox
from users.settings import Settings

from ..conftest import WorkerClients, insert_user

pytestmark = pytest.mark.integration


async def announcements(db: Database, user_id: uuid.UUID) -> int:
    async with db.session() as session:
        envelopes = (await session.execute(select(outbox.c.envelope))).scalars().all()
    return sum(
        1
        for e in envelopes
        if e["type"] == "users.UserRegistered" and e["payload"]["user_id"] == str(user_id)
    )


async def age_welcome(db: Database, user_id: uuid.UUID, seconds: float) -> None:
    async with db.transaction() as uow:
        await uow.session.execute(
            update(User)
            .where(User.id == user_id)
            .values(welcome_sent_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


async def test_an_unconfirmed_welcome_is_announced_again_until_confirmed(
    worker: WorkerClients, users_settings: Settings
) -> None:
    db = worker.database
    user_id = await insert_user(db)  # inserted directly: nothing announced yet
    timeout = users_settings.welcome.timeout_seconds

    async with db.transaction() as uow:  # not due yet
        await service.announce_unwelcomed_again(uow, timeout)
    assert await announcements(db, user_id) == 0

    await age_welcome(db, user_id, timeout + 1)
    async with db.transaction() as uow:
        await service.announce_unwelcomed_again(uow, timeout)
    assert await announcements(db, user_id) == 1

    async with db.transaction() as uow:
        await service.welcome_recorded(uow, user_id)
    await age_welcome(db, user_id, timeout + 1)
    async with db.transaction() as uow:
        await service.announce_unwelcomed_again(uow, timeout)
    assert await announcements(db, user_id) == 1  # confirmed: never again
