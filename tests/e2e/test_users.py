"""The users contract of docs/design.md section 5, over HTTP, against the running stack."""

import uuid
from typing import Any

import pytest

from common.version import VERSION

from .conftest import Stack, assert_problem, sign_up


async def test_every_service_serves_probes_docs_and_request_ids(stack: Stack):
    for client in stack.direct.values():
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json() == {"status": "ready", "version": VERSION}
        metrics = (await client.get("/metrics")).text
        assert "http_requests_total" in metrics
        assert f'version="{VERSION}"' in metrics  # build_info{service, version}
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
        echoed = await client.get("/healthz", headers={"X-Request-ID": "e2e-req-1"})
        assert echoed.headers["x-request-id"] == "e2e-req-1"


async def test_register_login_me_logout(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=12_345)

    me = await stack.users.get("/users/me", headers=customer.auth)
    by_id = await stack.users.get(f"/users/{customer.id}", headers=customer.auth)

    assert me.status_code == by_id.status_code == 200
    assert me.json() == by_id.json()
    assert me.json()["credit_limit_cents"] == me.json()["credit_available_cents"] == 12_345
    assert me.json()["status"] == "active"

    assert (
        await stack.users.delete("/users/sessions/current", headers=customer.auth)
    ).status_code == 204
    # Revoked at once in every service, not only in the one that issued it.
    assert_problem(await stack.users.get("/users/me", headers=customer.auth), 401)
    assert_problem(await stack.orders.get("/orders", headers=customer.auth), 401)
    assert_problem(await stack.notifications.get("/notifications", headers=customer.auth), 401)


async def test_duplicate_email_is_409(stack: Stack):
    customer = await sign_up(stack)
    again = await stack.users.post(
        "/users",
        json={
            "email": customer.email,
            "password": "another one",
            "name": "X",
            "credit_limit_cents": 1,
        },
    )
    assert_problem(again, 409)


async def test_wrong_password_is_401(stack: Stack):
    customer = await sign_up(stack)
    response = await stack.users.post(
        "/users/sessions", json={"email": customer.email, "password": "not the password"}
    )
    assert_problem(response, 401)


async def test_another_users_id_is_404(stack: Stack):
    alice = await sign_up(stack)
    bob = await sign_up(stack)
    assert_problem(await stack.users.get(f"/users/{bob.id}", headers=alice.auth), 404)
    assert_problem(await stack.users.get(f"/users/{uuid.uuid4()}", headers=alice.auth), 404)


VALID = {"email": "x@example.com", "password": "long enough", "name": "X", "credit_limit_cents": 0}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"password": "short"}, "password"),
        ({"name": ""}, "name"),
        ({"email": "nope"}, "email"),
        ({"credit_limit_cents": 10**9}, "credit_limit_cents"),
        ({"credit_limit_cents": None}, "credit_limit_cents"),
    ],
)
async def test_bad_registrations_are_422_naming_the_field(
    stack: Stack, override: dict[str, Any], field: str
):
    body = {key: value for key, value in {**VALID, **override}.items() if value is not None}
    problem = assert_problem(await stack.users.post("/users", json=body), 422)
    assert field in {error["field"] for error in problem["errors"]}


async def test_malformed_json_and_unknown_routes_are_problems(stack: Stack):
    malformed = await stack.users.post(
        "/users", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(malformed, 400)
    assert_problem(await stack.users.get("/no/such/route"), 404)
    assert_problem(await stack.users.put("/users/me"), 405)


async def test_lists_are_the_callers_own_and_empty_at_first(stack: Stack):
    customer = await sign_up(stack)
    for client, path in ((stack.orders, "/orders"), (stack.notifications, "/notifications")):
        response = await client.get(path, headers=customer.auth, params={"limit": 100})
        assert response.status_code == 200
        body = response.json()
        assert body["next_cursor"] is None
        assert all(item.get("user_id", customer.id) == customer.id for item in body["items"])
        assert_problem(await client.get(path, headers=customer.auth, params={"limit": 0}), 422)
        assert_problem(await client.get(path, headers=customer.auth, params={"cursor": "%%%"}), 400)
