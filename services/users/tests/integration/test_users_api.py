"""The users HTTP contract (docs/design.md section 5) against real Postgres and Redis."""

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from users.settings import Settings

pytestmark = pytest.mark.integration


def new_user(**overrides: Any) -> dict[str, Any]:
    body = {
        "email": f"u-{uuid.uuid4().hex[:10]}@example.com",
        "password": "correct horse battery",
        "name": "Ada Lovelace",
        "credit_limit_cents": 50_000,
    }
    body.update(overrides)
    return body


async def register_and_login(
    client: httpx.AsyncClient, **overrides: Any
) -> tuple[dict[str, Any], str]:
    body = new_user(**overrides)
    created = await client.post("/users", json=body)
    assert created.status_code == 201, created.text
    login = await client.post(
        "/users/sessions", json={"email": body["email"], "password": body["password"]}
    )
    assert login.status_code == 201, login.text
    return created.json(), login.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert {"type", "title", "detail"} <= problem.keys()
    return problem


async def test_register_returns_the_user_with_its_full_credit(users_client: httpx.AsyncClient):
    body = new_user(email="Mixed.Case@Example.com")
    response = await users_client.post("/users", json=body)

    assert response.status_code == 201
    user = response.json()
    assert response.headers["location"] == f"/users/{user['id']}"
    assert user["email"] == "mixed.case@example.com"
    assert user["name"] == "Ada Lovelace"
    assert user["status"] == "active"
    assert user["credit_limit_cents"] == user["credit_available_cents"] == 50_000
    assert "password" not in response.text
    assert set(user) == {
        "id", "email", "name", "status", "credit_limit_cents", "credit_available_cents",
        "created_at",
    }  # fmt: skip


async def test_duplicate_email_is_409_whatever_its_case(users_client: httpx.AsyncClient):
    body = new_user()
    assert (await users_client.post("/users", json=body)).status_code == 201

    again = await users_client.post("/users", json={**body, "email": body["email"].upper()})

    assert_problem(again, 409)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "short"),
        ("password", "x" * 129),
        ("name", ""),
        ("name", "n" * 101),
        ("email", "not-an-email"),
        ("credit_limit_cents", -1),
        ("credit_limit_cents", 100_000_001),
        ("credit_limit_cents", "lots"),
    ],
)
async def test_out_of_range_fields_are_422_naming_the_field(
    users_client: httpx.AsyncClient, field: str, value: Any
):
    response = await users_client.post("/users", json=new_user(**{field: value}))

    problem = assert_problem(response, 422)
    assert [error["field"] for error in problem["errors"]] == [field]


async def test_malformed_json_is_400(users_client: httpx.AsyncClient):
    response = await users_client.post(
        "/users", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert_problem(response, 400)


async def test_login_issues_a_token_that_reads_me(users_client: httpx.AsyncClient):
    user, token = await register_and_login(users_client)

    me = await users_client.get("/users/me", headers=bearer(token))

    assert me.status_code == 200
    assert me.json() == user


@pytest.mark.parametrize("password", ["wrong password", "correct horse battery!"])
async def test_wrong_credentials_are_401(users_client: httpx.AsyncClient, password: str):
    body = new_user()
    await users_client.post("/users", json=body)

    response = await users_client.post(
        "/users/sessions", json={"email": body["email"], "password": password}
    )

    assert_problem(response, 401)


async def test_unknown_email_is_401(users_client: httpx.AsyncClient):
    response = await users_client.post(
        "/users/sessions", json={"email": "nobody@example.com", "password": "whatever1"}
    )
    assert_problem(response, 401)


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-token", "Basic abc"])
async def test_missing_or_bad_token_is_401(users_client: httpx.AsyncClient, header: str | None):
    headers = {"Authorization": header} if header else {}
    response = await users_client.get("/users/me", headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_user_sees_only_themself(users_client: httpx.AsyncClient):
    alice, alice_token = await register_and_login(users_client)
    bob, _ = await register_and_login(users_client)

    own = await users_client.get(f"/users/{alice['id']}", headers=bearer(alice_token))
    other = await users_client.get(f"/users/{bob['id']}", headers=bearer(alice_token))
    missing = await users_client.get(f"/users/{uuid.uuid4()}", headers=bearer(alice_token))

    assert own.status_code == 200
    assert own.json()["id"] == alice["id"]
    # Another user's id and an id nobody has are indistinguishable to the caller.
    assert assert_problem(other, 404)["title"] == assert_problem(missing, 404)["title"]


async def test_malformed_user_id_is_422(users_client: httpx.AsyncClient):
    _, token = await register_and_login(users_client)
    response = await users_client.get("/users/not-a-uuid", headers=bearer(token))
    assert assert_problem(response, 422)["errors"][0]["field"] == "user_id"


async def test_logout_revokes_the_token_at_once(users_client: httpx.AsyncClient):
    _, token = await register_and_login(users_client)

    logout = await users_client.delete("/users/sessions/current", headers=bearer(token))
    after = await users_client.get("/users/me", headers=bearer(token))

    assert logout.status_code == 204
    assert_problem(after, 401)


async def test_available_credit_subtracts_only_active_reservations(
    users_client: httpx.AsyncClient, users_settings: Settings
):
    user, token = await register_and_login(users_client, credit_limit_cents=10_000)
    engine = create_async_engine(users_settings.database_url)
    async with engine.begin() as connection:
        for amount, status in [(2_500, "active"), (1_000, "active"), (4_000, "released")]:
            await connection.execute(
                text(
                    "INSERT INTO users.credit_reservations (id, user_id, order_id, amount_cents,"
                    " status) VALUES (:id, :user_id, :order_id, :amount, :status)"
                ),
                {
                    "id": uuid.uuid4(),
                    "user_id": user["id"],
                    "order_id": uuid.uuid4(),
                    "amount": amount,
                    "status": status,
                },
            )
    await engine.dispose()

    me = (await users_client.get("/users/me", headers=bearer(token))).json()

    assert me["credit_limit_cents"] == 10_000
    assert me["credit_available_cents"] == 10_000 - 2_500 - 1_000
