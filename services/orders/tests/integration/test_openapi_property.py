"""Property: no request generated from the orders OpenAPI document is answered with a 5xx.

Real app, real Postgres and Redis; a session token on every request, so the authenticated
operations are exercised past the 401. Rate limits are off (a 429 is not the point here,
and it would hide everything behind it).
"""

import uuid

import pytest
from redis.asyncio import Redis

from common.auth import create_session
from common.testing.openapi import assert_no_server_errors, openapi_schema, stop_apps
from orders.main import create_app
from orders.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def token(orders_settings: Settings) -> str:
    redis = Redis.from_url(orders_settings.redis_url)
    try:
        return (await create_session(redis, uuid.uuid4(), 600)).token
    finally:
        await redis.aclose()


def test_no_generated_request_is_a_server_error(orders_settings: Settings, token: str):
    settings = orders_settings.model_copy(update={"rate_limit_enabled": False})
    schema = openapi_schema(create_app(settings))
    try:
        tally = assert_no_server_errors(schema, {"Authorization": f"Bearer {token}"})
    finally:
        stop_apps()
    assert set(tally.operations) >= {
        "GET /orders",
        "GET /healthz",
        "POST /orders",
        "POST /orders/{order_id}/cancel",
        "GET /orders/{order_id}",
        "GET /orders/{order_id}/saga",
        "GET /readyz",
    }
    assert tally.requests >= 20 * len(tally.operations)
