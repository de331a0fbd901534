"""Property: every request generated from the notifications OpenAPI document gets an answer
the document declares (status and media type), never a 5xx.

Real app, real Postgres and Redis; a session token on the operations that declare the
bearer scheme, so they are exercised past the 401. Rate limits are off (a 429 is not the point here,
and it would hide everything behind it).
"""

import uuid

import pytest
from redis.asyncio import Redis

from common.auth import create_session
from common.openapi import BEARER
from common.settings import with_changes
from common.testing.openapi import assert_no_server_errors, openapi_schema, stop_apps
from notifications.main import create_app
from notifications.settings import Settings

pytestmark = pytest.mark.integration

# Left out: the live stream never ends by itself (tests/integration/test_stream.py covers
# it over a real server), and creating a webhook resolves the generated URL's host in DNS,
# which is no place for a fuzzer (its validation is tested in test_webhooks_api.py).
STREAM = "/notifications/stream"
WEBHOOKS = "/notifications/webhooks"


@pytest.fixture(scope="module")
async def token(notifications_settings: Settings) -> str:
    redis = Redis.from_url(notifications_settings.redis.url)
    try:
        return (await create_session(redis, uuid.uuid4(), 600)).token
    finally:
        await redis.aclose()


def test_no_generated_request_is_a_server_error(notifications_settings: Settings, token: str):
    settings = with_changes(notifications_settings, rate_limit={"enabled": False})
    schema = openapi_schema(create_app(settings), exclude={(STREAM, "GET"), (WEBHOOKS, "POST")})
    try:
        tally = assert_no_server_errors(schema, tokens={BEARER: token})
    finally:
        stop_apps()
    assert set(tally.operations) >= {
        "GET /notifications/webhooks",
        "GET /notifications/webhooks/{webhook_id}/deliveries",
        "DELETE /notifications/webhooks/{webhook_id}",
        "GET /healthz",
        "GET /notifications",
        "GET /readyz",
    }
    assert tally.requests >= 20 * len(tally.operations)
