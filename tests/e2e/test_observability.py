"""One order's story across the three services: logs, metrics."""

import json
import subprocess
import uuid

import httpx

from common.testing.polling import eventually

from .conftest import ORDERS_URL, ROOT, WORKER_SLOT_URLS, Stack, place, settled, sign_up


def stack_logs() -> list[dict[str, object]]:
    """Every JSON line `make logs` prints for this stack."""
    output = subprocess.run(  # noqa: S603 - our own script
        [str(ROOT / "scripts" / "stack.sh"), "logs"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_one_grep_follows_an_order_through_every_service(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    correlation_id = f"story-{uuid.uuid4()}"
    placed = await place(stack, customer, 1_234, **{"X-Correlation-ID": correlation_id})
    order = await settled(stack, customer, placed["id"])
    assert order["status"] == "APPROVED"

    def story() -> list[dict[str, object]]:
        return [line for line in stack_logs() if line.get("correlation_id") == correlation_id]

    async def services_in_story() -> set[object]:
        return {line["service"] for line in story()}

    await eventually(
        services_in_story, lambda services: services >= {"users", "orders", "notifications"}
    )
    lines = story()
    assert any(line.get("order_id") == placed["id"] for line in lines)
    # The HTTP request that started it is in the story too, with its method and path.
    assert any(line.get("path") == "/orders" and line.get("method") == "POST" for line in lines)


async def orders_api_metrics() -> str:
    """One orders-api replica's metrics, on a fresh connection: with REPLICAS=n the replicas
    share the port, so each new connection may reach another one, and only the replica that
    served the POST counts it."""
    async with httpx.AsyncClient(base_url=ORDERS_URL, timeout=10) as client:
        return (await client.get("/metrics")).text


async def test_metrics_cover_requests_bus_and_saga(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    placed = await place(stack, customer, 100)
    await settled(stack, customer, placed["id"])

    posted = 'http_requests_total{method="POST",route="/orders",status="202"}'
    api = await eventually(
        orders_api_metrics, lambda text: posted in text, timeout=10, what="POST /orders counted"
    )
    assert "http_request_duration_seconds_bucket" in api

    async with httpx.AsyncClient(timeout=10) as client:
        # Every replica's metrics of a worker, together: any of them may have done the work.
        workers = {
            name: "".join([(await client.get(f"{url}/metrics")).text for url in urls])
            for name, urls in WORKER_SLOT_URLS.items()
        }
    assert 'saga_outcomes_total{reason="",result="approved"}' in workers["orders"]
    assert "saga_duration_seconds_bucket" in workers["orders"]
    for name in ("users", "orders", "notifications"):
        assert "bus_messages_handled_total" in workers[name]
        assert "bus_consumer_lag" in workers[name]
        assert "bus_consumer_pending" in workers[name]
    assert "bus_messages_published_total" in workers["users"]
    assert "bus_handle_latency_seconds_bucket" in workers["orders"]
