"""Rate limits: shared through Redis, per user or per address, 429 problem with headers.

Every test runs on a single Redis and on a Redis Cluster (``redis_target``)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter

from common.auth import CurrentUser, create_session
from common.http import create_service_app
from common.ratelimit import READ_LIMIT
from common.redis import create_redis
from common.settings import ServiceSettings
from common.testing.plugin import RedisTarget, asgi_client

pytestmark = pytest.mark.integration

router = APIRouter()


@router.get("/limited", dependencies=[READ_LIMIT])
async def limited() -> dict[str, str]:
    return {"ok": "yes"}


@router.get("/mine", dependencies=[READ_LIMIT])
async def mine(caller: CurrentUser) -> dict[str, str]:
    return {"user": str(caller.id)}


def settings_for(target: RedisTarget, read_limit: str) -> ServiceSettings:
    return ServiceSettings(
        service_name=f"ratelimit-{uuid.uuid4().hex[:8]}",  # a fresh namespace per app
        database_url=target.database_url,
        **target.settings(),
        rate_limit_read=read_limit,
    )


@pytest.fixture
async def client(redis_target: RedisTarget) -> AsyncIterator[httpx.AsyncClient]:
    app = create_service_app(settings_for(redis_target, "3/second"), title="t", routers=[router])
    async with asgi_client(app) as client:
        yield client


async def test_over_the_limit_is_a_429_problem_with_retry_after(client: httpx.AsyncClient):
    answers = [await client.get("/limited") for _ in range(4)]

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[3]
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["ratelimit-reset"]) <= 1


async def test_the_limit_resets_after_its_window(client: httpx.AsyncClient):
    for _ in range(3):
        await client.get("/limited")
    assert (await client.get("/limited")).status_code == 429

    deadline = time.monotonic() + 5
    status = 429
    while status == 429 and time.monotonic() < deadline:
        status = (await client.get("/limited")).status_code
        if status == 429:
            await _pause()
    assert status == 200


async def test_users_are_counted_apart_from_each_other_and_from_anonymous_callers(
    redis_target: RedisTarget,
):
    settings = settings_for(redis_target, "2/minute")
    app = create_service_app(settings, title="t", routers=[router])
    async with asgi_client(app) as client:
        redis = create_redis(settings)
        alice = await create_session(redis, uuid.uuid4(), 60)
        bob = await create_session(redis, uuid.uuid4(), 60)
        await redis.aclose()

        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        alice_codes = [
            (await client.get("/mine", headers=as_(alice.token))).status_code for _ in range(3)
        ]
        bob_codes = [
            (await client.get("/mine", headers=as_(bob.token))).status_code for _ in range(2)
        ]
        anonymous = (await client.get("/limited")).status_code

    assert alice_codes == [200, 200, 429]
    assert bob_codes == [200, 200]
    assert anonymous == 200


async def test_replicas_share_one_limit(redis_target: RedisTarget):
    settings = settings_for(redis_target, "2/minute")
    first = create_service_app(settings, title="a", routers=[router])
    second = create_service_app(settings, title="b", routers=[router])
    async with asgi_client(first) as one, asgi_client(second) as two:
        codes = [
            (await one.get("/limited")).status_code,
            (await two.get("/limited")).status_code,
            (await one.get("/limited")).status_code,
        ]
    assert codes == [200, 200, 429]


async def _pause() -> None:
    await asyncio.sleep(0.1)
