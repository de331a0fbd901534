"""Property: every request generated from the orders OpenAPI document gets an answer the
document declares (status and media type), never a 5xx.

Real app, real Postgres and Redis; a customer's session token on the operations that declare
the bearer scheme and an operator's on /admin (its own scheme), so every authenticated
operation is exercised past the 401/403. Rate limits are off (a 429 is not the point here,
and it would hide everything behind it).
"""

import secrets
import uuid

import pytest
from redis.asyncio import Redis

from common.auth import create_session, hash_token
from common.openapi import BEARER, OPERATOR
from common.settings import with_changes
from common.testing.openapi import assert_no_server_errors, openapi_schema, stop_apps
from orders.main import create_app
from orders.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def token(orders_settings: Settings) -> str:
    redis = Redis.from_url(orders_settings.redis.url)
    try:
        return (await create_session(redis, uuid.uuid4(), 600)).token
    finally:
        await redis.aclose()


def test_no_generated_request_is_a_server_error(orders_settings: Settings, token: str):
    operator_token = secrets.token_urlsafe(32)
    settings = with_changes(
        orders_settings,
        rate_limit={"enabled": False},
        operator={"tokens": f"prop:{hash_token(operator_token)}"},
    )
    schema = openapi_schema(create_app(settings))
    try:
        tally = assert_no_server_errors(schema, tokens={BEARER: token, OPERATOR: operator_token})
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
        "GET /admin/sagas",
        "POST /admin/dead-letters/redrive",
    }
    assert tally.requests >= 20 * len(tally.operations)
