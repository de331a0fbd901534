"""Control characters and lone surrogates in the users API are a 422 naming the field.

Before the constrained text type, a NUL in ``name`` reached PostgreSQL, which refuses
``\\u0000`` in text, and the client got a 500.
"""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common.settings import with_changes
from common.testing.plugin import asgi_client
from users.main import create_app
from users.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def users_client(users_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app of its own without rate limits: these requests must not eat the auth budget
    (30/minute per address) the other users tests share."""
    settings = with_changes(users_settings, rate_limit={"enabled": False})
    async with asgi_client(create_app(settings)) as client:
        yield client


def new_user(**overrides: Any) -> dict[str, Any]:
    body = {
        "email": f"t-{uuid.uuid4().hex[:10]}@example.com",
        "password": "correct horse battery",
        "name": "Ada Lovelace",
        "credit_limit_cents": 1_000,
    }
    body.update(overrides)
    return body


async def post_raw(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    """The body as JSON with every non-ASCII character escaped: ``\\ud800`` stays a lone
    surrogate on the wire (httpx's own encoder cannot encode one)."""
    return await client.post(
        path, content=json.dumps(body), headers={"Content-Type": "application/json"}
    )


def refused_fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert all(e["type"] == "text_forbidden_character" for e in problem["errors"]), problem
    return {error["field"] for error in problem["errors"]}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Ada\x00Lovelace"),
        ("name", "Ada\ud800"),
        ("name", "Ada\tLovelace"),
        ("name", "Ada\u0085"),  # C1 NEXT LINE
        ("password", "correct horse\x00battery"),
        ("password", "correct horse\nbattery"),
        ("email", "ada\x00@example.com"),
    ],
)
async def test_register_refuses_control_characters_naming_the_field(
    users_client: httpx.AsyncClient, field: str, value: str
):
    response = await post_raw(users_client, "/users", new_user(**{field: value}))

    assert refused_fields(response) == {field}
    assert field in response.json()["detail"]


async def test_login_refuses_a_nul_in_the_password(users_client: httpx.AsyncClient):
    body = {"email": "ada@example.com", "password": "x\x00y"}

    response = await post_raw(users_client, "/users/sessions", body)

    assert refused_fields(response) == {"password"}


async def test_printable_unicode_is_welcome(users_client: httpx.AsyncClient):
    response = await post_raw(users_client, "/users", new_user(name="Zoë Ünal 李 🚀"))

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Zoë Ünal 李 🚀"
