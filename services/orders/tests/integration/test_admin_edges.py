"""The console's last sharp edges (issue 17, defects 7, 9 and 10, and audited failed sign-ins):
server-side console sessions, odd inputs and out-of-range ids, ``no-store`` everywhere."""

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from common.auth import hash_token
from common.db import Database
from common.settings import with_changes
from common.testing.openapi import assert_no_server_errors, openapi_schema, stop_apps
from common.testing.plugin import asgi_client
from orders.main import create_app
from orders.models import OperatorAudit
from orders.settings import Settings

from .test_admin_api import OPERATOR, PREFIX, TOKEN

pytestmark = pytest.mark.integration

TOO_BIG = f"{2**64}-0"  # one past what a stream entry id part can hold


@pytest.fixture(scope="module")
async def client(orders_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    settings = with_changes(
        orders_settings,
        operator={"tokens": f"tester:{hash_token(TOKEN)}", "cookie_secure": False},
        bus={"stream_prefix": PREFIX},
        rate_limit={"enabled": False},
    )
    async with asgi_client(create_app(settings)) as http:
        yield http


async def sign_in(client: httpx.AsyncClient) -> str:
    response = await client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    session_id = client.cookies["orders_operator"]
    assert session_id != TOKEN
    return session_id


async def test_a_replayed_console_cookie_fails_after_sign_out(client: httpx.AsyncClient):
    """Defect 7: the cookie held the operator token, so sign-out ended nothing."""
    session_id = await sign_in(client)
    page = await client.get("/admin/")
    assert page.status_code == 200
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed_out = await client.post("/admin/logout", data={"csrf_token": csrf})
    assert signed_out.status_code in {200, 303}
    client.cookies.clear()

    client.cookies.set("orders_operator", session_id, path="/admin")
    replayed = await client.get("/admin/", follow_redirects=False)
    assert replayed.status_code == 303
    assert replayed.headers["location"].startswith("/admin/login")
    client.cookies.clear()


async def test_a_refused_operator_sign_in_is_audited(
    client: httpx.AsyncClient, orders_db: Database
):
    async with orders_db.session() as session:
        before = await session.scalar(
            select(OperatorAudit.at).order_by(OperatorAudit.at.desc()).limit(1)
        )
    refused = await client.post("/admin/login", data={"token": "not-an-operator-token"})
    assert refused.status_code == 401
    async with orders_db.session() as session:
        rows = (
            await session.scalars(
                select(OperatorAudit).where(
                    OperatorAudit.action == "console.login", OperatorAudit.outcome == "refused"
                )
            )
        ).all()
    assert any(before is None or row.at > before for row in rows)
    assert all("not-an-operator-token" not in str(row.detail) for row in rows)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/admin/dead-letters/{TOO_BIG}", {404, 422}),
        (f"/admin/dead-letters/0-{2**64}", {404, 422}),
        (f"/admin/dead-letters?cursor={TOO_BIG}", {400}),
        ("/admin/dead-letters?cursor=0-0", {400}),
    ],
)
async def test_out_of_range_dead_letter_ids_are_4xx_not_500(
    client: httpx.AsyncClient, path: str, status: set[int]
):
    """Defect 9 on the JSON API."""
    response = await client.get(path, headers=OPERATOR)
    assert response.status_code in status, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_redriving_an_out_of_range_id_says_it_failed(client: httpx.AsyncClient):
    response = await client.post(
        "/admin/dead-letters/redrive", json={"ids": [TOO_BIG]}, headers=OPERATOR
    )
    if response.status_code == 200:  # refused by the service
        assert response.json()["failed"][0]["id"] == TOO_BIG
    else:  # or by the schema
        assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/admin/?older_than_seconds=\u00b2", {200, 400}),  # a superscript two: isdigit()
        (f"/admin/ui/dead-letters/{TOO_BIG}", {404}),
        ("/admin/ui/dead-letters?cursor=0-0", {400}),
        (f"/admin/ui/dead-letters?cursor={TOO_BIG}", {400}),
    ],
)
async def test_the_console_answers_odd_inputs_with_4xx(
    client: httpx.AsyncClient, path: str, statuses: set[int]
):
    """Defect 9 in the console (``/admin/`` shows the form's error on the page itself)."""
    await sign_in(client)
    try:
        response = await client.get(path)
        assert response.status_code in statuses, response.text
        if response.status_code == 200:
            assert "whole number of seconds" in response.text
    finally:
        client.cookies.clear()


async def test_csrf_is_derived_from_the_session_not_the_token(client: httpx.AsyncClient):
    await sign_in(client)
    first = (await client.get("/admin/")).text
    client.cookies.clear()
    await sign_in(client)
    second = (await client.get("/admin/")).text
    client.cookies.clear()

    def csrf(page: str) -> str:
        return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]

    assert csrf(first) != csrf(second)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/admin/sagas", OPERATOR),
        ("/admin/audit", OPERATOR),
        ("/admin/sagas", {}),  # a 401 too
        ("/admin/dead-letters/not-a-stream-id", OPERATOR),  # a 422/404 too
        ("/admin/login", {}),
        ("/admin/", {}),  # the redirect to the login page
    ],
)
async def test_every_admin_response_is_no_store(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
):
    """Defect 10."""
    response = await client.get(path, headers=headers, follow_redirects=False)
    assert response.headers["cache-control"] == "no-store"


async def test_the_customer_api_keeps_its_own_caching(client: httpx.AsyncClient):
    response = await client.get("/healthz")
    assert response.headers.get("cache-control") != "no-store"


def test_no_generated_admin_request_is_a_server_error(orders_settings: Settings):
    """schemathesis over the document with the operator's token: /admin is exercised past
    its 401 (the customer-token run in test_openapi_property stops there)."""
    settings = with_changes(
        orders_settings,
        operator={"tokens": f"tester:{hash_token(TOKEN)}"},
        bus={"stream_prefix": PREFIX},
        rate_limit={"enabled": False},
    )
    schema = openapi_schema(create_app(settings))
    try:
        tally = assert_no_server_errors(schema, OPERATOR)
    finally:
        stop_apps()
    assert {
        "GET /admin/sagas",
        "GET /admin/dead-letters",
        "POST /admin/dead-letters/redrive",
    } <= set(tally.operations)
