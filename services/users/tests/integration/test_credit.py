"""Credit commands under concurrency: one user's reservations never overdraw their limit."""

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from common.bus import Outbox
from common.contracts import CreditReserved, ReserveCredit
from common.db import Database, create_engine
from common.redis import create_redis
from users import credit
from users.cache import UserCache
from users.models import CreditReservation, User, outbox
from users.settings import Settings

pytestmark = pytest.mark.integration


async def test_concurrent_reservations_never_overdraw(users_settings: Settings) -> None:
    redis = create_redis(users_settings)
    database = Database(
        create_engine(users_settings.model_copy(update={"db_pool_size": 20})),
        outbox=Outbox(redis, outbox, settings=users_settings),
    )
    cache = UserCache(redis, users_settings.user_cache_ttl_seconds)
    user_id = uuid.uuid4()
    try:
        async with database.transaction() as uow:
            uow.session.add(
                User(
                    id=user_id,
                    email=f"{user_id}@example.com",
                    name="Credit",
                    password_hash="-",
                    credit_limit_cents=5 * 1_000,
                )
            )

        async def reserve() -> object:
            command = ReserveCredit(order_id=uuid.uuid4(), user_id=user_id, amount_cents=1_000)
            async with database.transaction() as uow:
                return await credit.reserve_credit(uow, cache, command)

        replies = await asyncio.gather(*(reserve() for _ in range(20)))

        assert sum(isinstance(reply, CreditReserved) for reply in replies) == 5
        async with database.session() as session:
            held = await session.scalar(
                select(func.sum(CreditReservation.amount_cents)).where(
                    CreditReservation.user_id == user_id, CreditReservation.status == "active"
                )
            )
        assert held == 5 * 1_000
    finally:
        await database.dispose()
        await redis.aclose()
