"""The gateway (DESIGN.md section 5): one address for everything, its merged document, the
composite read, and what it does when one service behind it is down."""

import time

import httpx
import pytest

from common.testing.polling import eventually

from .conftest import Stack, assert_problem, place, settled, sign_up
from .harness import stack_control_allowed

needs_control = pytest.mark.skipif(
    not stack_control_allowed(), reason="STACK_CONTROL=0: this stack's processes are not ours"
)


async def test_gateway_serves_its_probes_docs_and_request_ids(stack: Stack):
    assert (await stack.gateway.get("/healthz")).status_code == 200
    assert (await stack.gateway.get("/readyz")).json()["status"] == "ready"
    assert "http_requests_total" in (await stack.gateway.get("/metrics")).text
    docs = await stack.gateway.get("/docs")
    assert docs.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in docs.text
    assert (await stack.gateway.get("/docs/assets/swagger-ui-bundle.js")).status_code == 200
    echoed = await stack.gateway.get("/users/me", headers={"X-Request-ID": "e2e-gw-1"})
    assert echoed.headers.get_list("x-request-id") == ["e2e-gw-1"]


async def test_merged_document_has_every_services_operations(stack: Stack):
    merged = (await stack.gateway.get("/openapi.json")).json()
    for service, client in stack.direct.items():
        own = (await client.get("/openapi.json")).json()
        public = {path for path in own["paths"] if path.split("/")[1] in {service, "admin"}}
        assert public <= merged["paths"].keys(), service
        for path in public:
            assert merged["paths"][path].keys() == own["paths"][path].keys()
    assert "/me/overview" in merged["paths"]
    # One scheme per credential: the services' identical bearer schemes are kept once.
    schemes: set[str] = set()
    for client in stack.direct.values():
        own = (await client.get("/openapi.json")).json()
        schemes |= own.get("components", {}).get("securitySchemes", {}).keys()
    assert set(merged["components"].get("securitySchemes", {})) == schemes
    operation_ids = [
        operation["operationId"]
        for item in merged["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    assert len(operation_ids) == len(set(operation_ids))


async def test_overview_has_user_orders_and_unread_count(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    placed = await place(stack, customer, 100)
    await settled(stack, customer, placed["id"])

    overview = await eventually(
        lambda: stack.gateway.get("/me/overview", headers=customer.auth),
        lambda response: response.json().get("unread_notifications", 0) >= 1,
    )

    body = overview.json()
    assert body["degraded"] == []
    assert body["user"]["id"] == customer.id
    assert [order["id"] for order in body["orders"]] == [placed["id"]]
    assert body["orders"][0]["status"] in {"APPROVED", "REJECTED"}


async def test_overview_without_a_token_is_401(stack: Stack):
    assert_problem(await stack.gateway.get("/me/overview"), 401)


@needs_control
async def test_one_service_down_behind_the_gateway_degrades_only_its_part(stack: Stack):
    customer = await sign_up(stack)
    stack.control_every("stop", "orders-api")
    try:
        started = time.monotonic()
        overview = await stack.gateway.get("/me/overview", headers=customer.auth)
        assert time.monotonic() - started < 5  # the part deadline, not a hang
        assert overview.status_code == 200, overview.text
        assert overview.json()["degraded"] == ["orders"]
        assert overview.json()["orders"] is None
        assert overview.json()["user"]["id"] == customer.id

        refused = await stack.orders.get("/orders", headers=customer.auth)
        problem = assert_problem(refused, 503)
        assert problem["service"] == "orders"
        assert int(refused.headers["retry-after"]) >= 1
        assert (await stack.users.get("/users/me", headers=customer.auth)).status_code == 200
        notifications = await stack.notifications.get("/notifications", headers=customer.auth)
        assert notifications.status_code == 200
    finally:
        stack.control_every("start", "orders-api")

    async def orders_answer() -> int:
        try:
            return (await stack.orders.get("/orders", headers=customer.auth)).status_code
        except httpx.TransportError:
            return 0

    await eventually(orders_answer, lambda status: status == 200, timeout=60)
