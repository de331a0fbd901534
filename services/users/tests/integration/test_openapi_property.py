"""Property: every request generated from the users OpenAPI document gets an answer
the document declares (status and media type), never a 5xx.

Real app, real Postgres and Redis; a session token on the operations that declare the
bearer scheme, so they are exercised past the 401. Rate limits are off (a 429 is not the
point here, and it would hide everything behind it).
"""

import uuid

import pytest

from common.openapi import BEARER
from common.settings import with_changes
from common.testing.openapi import assert_no_server_errors, openapi_schema, stop_apps
from common.testing.plugin import asgi_client
from users.main import create_app
from users.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def property_settings(users_settings: Settings) -> Settings:
    return with_changes(users_settings, rate_limit={"enabled": False})


@pytest.fixture(scope="module")
async def token(property_settings: Settings) -> str:
    body = {
        "email": f"prop-{uuid.uuid4().hex[:10]}@example.com",
        "password": "correct horse battery",
        "name": "Property Tester",
        "credit_limit_cents": 10_000,
    }
    async with asgi_client(create_app(property_settings)) as client:
        assert (await client.post("/users", json=body)).status_code == 201
        login = await client.post(
            "/users/sessions", json={k: body[k] for k in ("email", "password")}
        )
        assert login.status_code == 201, login.text
        issued: str = login.json()["token"]
        return issued


def test_no_generated_request_is_a_server_error(property_settings: Settings, token: str):
    schema = openapi_schema(create_app(property_settings))
    try:
        tally = assert_no_server_errors(schema, tokens={BEARER: token})
    finally:
        stop_apps()
    assert set(tally.operations) >= {
        "POST /users/sessions",
        "GET /users/me",
        "GET /healthz",
        "DELETE /users/sessions/current",
        "POST /users",
        "GET /users/{user_id}",
        "GET /readyz",
    }
    assert tally.requests >= 20 * len(tally.operations)
