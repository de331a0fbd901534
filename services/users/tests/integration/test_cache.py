"""The user view cache: hits, and invalidation after a reservation or a release."""

import uuid

import httpx
import pytest
from prometheus_client import REGISTRY

from common.bus import Outbox
from common.contracts import ReleaseCredit, ReserveCredit
from common.db import Database, create_engine
from common.redis import create_redis
from users import credit
from users.cache import UserCache
from users.models import outbox
from users.settings import Settings

from .test_users_api import bearer, register_and_login

pytestmark = pytest.mark.integration


def cache_lookups(result: str) -> float:
    return REGISTRY.get_sample_value("users_cache_requests_total", {"result": result}) or 0.0


async def test_a_reservation_or_release_is_visible_at_once_despite_the_cache(
    users_client: httpx.AsyncClient, users_settings: Settings
):
    user, token = await register_and_login(users_client, credit_limit_cents=10_000)
    user_id = uuid.UUID(user["id"])

    async def available() -> int:
        response = await users_client.get("/users/me", headers=bearer(token))
        value: int = response.json()["credit_available_cents"]
        return value

    misses, hits = cache_lookups("miss"), cache_lookups("hit")
    assert await available() == 10_000  # miss: read from Postgres, cached
    assert await available() == 10_000  # hit
    assert (cache_lookups("miss") - misses, cache_lookups("hit") - hits) == (1, 1)

    # What the users worker does: units of work that invalidate the view after commit.
    redis = create_redis(users_settings)
    database = Database(
        create_engine(users_settings), outbox=Outbox(redis, outbox, settings=users_settings)
    )
    cache = UserCache(redis, users_settings.user_cache_ttl_seconds)
    order_id = uuid.uuid4()
    try:
        async with database.transaction() as uow:
            await credit.reserve_credit(
                uow, cache, ReserveCredit(order_id=order_id, user_id=user_id, amount_cents=4_000)
            )
        assert await available() == 6_000

        async with database.transaction() as uow:
            await credit.release_credit(
                uow, cache, ReleaseCredit(order_id=order_id, user_id=user_id)
            )
        assert await available() == 10_000
    finally:
        await redis.aclose()
        await database.dispose()
