"""Credit commands under concurrency: one user's reservations never overdraw their limit."""

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from common.contracts import CreditReserved, ReserveCredit
from users import credit
from users.cache import UserCache
from users.models import CreditReservation

from ..conftest import WorkerClients, insert_user

pytestmark = pytest.mark.integration


async def test_concurrent_reservations_never_overdraw(worker: WorkerClients) -> None:
    cache = UserCache(worker.redis, ttl_seconds=60)
    user_id = await insert_user(worker.database, credit_limit_cents=5 * 1_000)

    async def reserve() -> object:
        command = ReserveCredit(order_id=uuid.uuid4(), user_id=user_id, amount_cents=1_000)
        async with worker.database.transaction() as uow:
            return await credit.reserve_credit(uow, cache, command)

    replies = await asyncio.gather(*(reserve() for _ in range(20)))

    assert sum(isinstance(reply, CreditReserved) for reply in replies) == 5
    async with worker.database.session() as session:
        held = await session.scalar(
            select(func.sum(CreditReservation.amount_cents)).where(
                CreditReservation.user_id == user_id, CreditReservation.status == "active"
            )
        )
    assert held == 5 * 1_000
