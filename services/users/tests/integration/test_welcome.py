"""A registration is announced again until its welcome notification is confirmed."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from common.bus import Outbox
from common.db import Database, create_engine
from common.redis import create_redis
from users import service
from users.models import User, outbox
from users.settings import Settings

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
    users_settings: Settings,
) -> None:
    redis = create_redis(users_settings)
    db = Database(
        create_engine(users_settings), outbox=Outbox(redis, outbox, settings=users_settings)
    )
    try:
        user_id = uuid.uuid4()
        async with db.transaction() as uow:
            uow.session.add(
                User(
                    id=user_id,
                    email=f"{user_id}@example.com",
                    name="Welcome",
                    password_hash="-",
                    credit_limit_cents=0,
                )
            )
        sent = 0
        timeout = users_settings.welcome_timeout_seconds

        async with db.transaction() as uow:  # not due yet
            await service.announce_unwelcomed_again(uow, timeout)
        assert await announcements(db, user_id) == sent

        await age_welcome(db, user_id, timeout + 1)
        async with db.transaction() as uow:
            await service.announce_unwelcomed_again(uow, timeout)
        assert await announcements(db, user_id) == sent + 1

        async with db.transaction() as uow:
            await service.welcome_recorded(uow, user_id)
        await age_welcome(db, user_id, timeout + 1)
        async with db.transaction() as uow:
            await service.announce_unwelcomed_again(uow, timeout)
        assert await announcements(db, user_id) == sent + 1
    finally:
        await db.dispose()
        await redis.aclose()
