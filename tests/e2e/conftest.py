"""Black-box tests over HTTP against a running stack.

Customers' calls go through the gateway, ``GATEWAY_URL`` (default: port 8000, as `make up`);
``USERS_URL``, ``ORDERS_URL`` and ``NOTIFICATIONS_URL`` are each service's own port, for what
targets one service (its probes and metrics, drills that stop it). `make test` brings up a
private stack on other ports and sets them.
Fault drills (killing and starting processes) go through ``scripts/stack.sh`` with the
``STACK`` the suite runs against; they are skipped when ``STACK_CONTROL=0``.
"""

import asyncio
import os
import statistics
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from common.testing.polling import eventually

from . import harness

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000")
USERS_URL = os.environ.get("USERS_URL", "http://127.0.0.1:8001")
ORDERS_URL = os.environ.get("ORDERS_URL", "http://127.0.0.1:8002")
NOTIFICATIONS_URL = os.environ.get("NOTIFICATIONS_URL", "http://127.0.0.1:8003")
# Workers serve /healthz and /metrics on their own ports.
WORKER_URLS = {
    service: os.environ.get(f"{service.upper()}_WORKER_URL", f"http://127.0.0.1:{port}")
    for service, port in (("users", 9001), ("orders", 9002), ("notifications", 9003))
}
# REPLICAS=n stacks (scripts/stack.sh) run n of every process: worker slot k > 1 is
# `<service>-worker-k`, with its /metrics on the slot 1 port + 10 * (k - 1).
REPLICAS = int(os.environ.get("REPLICAS", "1"))
WORKER_SLOT_URLS = {
    service: [
        url.rsplit(":", 1)[0] + f":{int(url.rsplit(':', 1)[1]) + 10 * slot}"
        for slot in range(REPLICAS)
    ]
    for service, url in WORKER_URLS.items()
}
TIMEOUT = httpx.Timeout(10.0)
T = TypeVar("T")


@dataclass
class Stack:
    """The stack's clients and its process controls (for fault drills).

    ``users``, ``orders`` and ``notifications`` are the gateway (one address routes by path;
    three names keep each call saying which service it means); ``direct`` has each service's
    own port, for its probes and metrics.
    """

    users: httpx.AsyncClient
    orders: httpx.AsyncClient
    notifications: httpx.AsyncClient
    gateway: httpx.AsyncClient
    direct: dict[str, httpx.AsyncClient]

    def control(self, verb: str, process: str) -> None:
        if os.environ.get("STACK_CONTROL", "1") == "0":
            pytest.skip("STACK_CONTROL=0: this stack's processes are not ours to kill")
        command = [str(ROOT / "scripts" / "stack.sh"), verb, process]
        subprocess.run(command, check=True, timeout=60)  # noqa: S603 - our own script

    def control_every(self, verb: str, process: str) -> None:
        """``control`` on every slot of ``process`` (all its replicas: REPLICAS=n)."""
        for slot in range(1, REPLICAS + 1):
            self.control(verb, process if slot == 1 else f"{process}-{slot}")


@dataclass
class Customer:
    id: str
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
async def stack() -> AsyncIterator[Stack]:
    async with (
        httpx.AsyncClient(base_url=GATEWAY_URL, timeout=TIMEOUT) as gateway,
        httpx.AsyncClient(base_url=USERS_URL, timeout=TIMEOUT) as users,
        httpx.AsyncClient(base_url=ORDERS_URL, timeout=TIMEOUT) as orders,
        httpx.AsyncClient(base_url=NOTIFICATIONS_URL, timeout=TIMEOUT) as notifications,
    ):
        direct = {"users": users, "orders": orders, "notifications": notifications}
        yield Stack(gateway, gateway, gateway, gateway, direct)


E2E_PASSWORD = "e2e password 1"


def sign_up_body(credit_limit_cents: int = 100_000, **extra: Any) -> dict[str, Any]:
    """A new customer's ``POST /users`` body, with a fresh email."""
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.com"
    return {
        "email": email,
        "password": E2E_PASSWORD,
        "name": "E2E",
        **extra,
        "credit_limit_cents": credit_limit_cents,
    }


async def sign_up(stack: Stack, credit_limit_cents: int = 100_000, **extra: Any) -> Customer:
    body = sign_up_body(credit_limit_cents, **extra)
    email, password = body["email"], body["password"]
    created = await stack.users.post("/users", json=body)
    assert created.status_code == 201, created.text
    session = await stack.users.post("/users/sessions", json={"email": email, "password": password})
    assert session.status_code == 201, session.text
    return Customer(created.json()["id"], email, password, session.json()["token"])


@pytest.fixture
async def customer(stack: Stack) -> Customer:
    return await sign_up(stack)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert {"type", "title", "detail"} <= problem.keys()
    return problem


def order_body(*prices: int, sku: str = "sku-1") -> dict[str, Any]:
    return {"items": [{"sku": sku, "quantity": 1, "unit_price_cents": price} for price in prices]}


async def place(stack: Stack, customer: Customer, *prices: int, **headers: str) -> dict[str, Any]:
    response = await stack.orders.post(
        "/orders", json=order_body(*prices), headers={**customer.auth, **headers}
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/orders/{response.json()['id']}"
    order: dict[str, Any] = response.json()
    return order


SETTLED = {"APPROVED", "REJECTED", "CANCELLED"}


async def settled(
    stack: Stack, customer: Customer, order_id: str, timeout: float = 20.0
) -> dict[str, Any]:
    """The order once it reached a final status (and its saga stopped waiting)."""

    async def fetch() -> dict[str, Any]:
        order = (await stack.orders.get(f"/orders/{order_id}", headers=customer.auth)).json()
        saga = (await stack.orders.get(f"/orders/{order_id}/saga", headers=customer.auth)).json()
        return {**order, "saga": saga}

    result = await eventually(
        fetch,
        lambda o: (
            o["status"] in SETTLED and o["saga"]["state"] in {"settled", "awaiting_notification"}
        ),
        timeout=timeout,
    )
    if result["status"] == "APPROVED":
        # The module: fault drills delay their orders on purpose, so they are reported apart.
        module = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[0].rsplit("/", 1)[-1]
        APPROVAL_LATENCIES_MS.setdefault(module, []).append(_approval_ms(result))
    return result


def _approval_ms(order: dict[str, Any]) -> float:
    """POST to APPROVED, from the order's own timestamps (not from polling)."""
    created = datetime.fromisoformat(order["created_at"])
    updated = datetime.fromisoformat(order["updated_at"])
    return (updated - created).total_seconds() * 1000


APPROVAL_LATENCIES_MS: dict[str, list[float]] = {}
# One line per drill that is not a fault drill (the starvation drill), for the summary.
DRILL_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Each fault drill's figures (also as JSON); POST -> APPROVED per test module."""
    if harness.RESULTS:
        terminalreporter.section("fault drills")
        for figures in harness.RESULTS:
            terminalreporter.write_line(figures.summary())
        terminalreporter.write_line(f"figures as JSON: {harness.write_results()}")
    for line in DRILL_LINES:
        terminalreporter.write_line(line)
    for module, latencies in sorted(APPROVAL_LATENCIES_MS.items()):
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        terminalreporter.write_line(
            f"POST -> APPROVED in {module}: {len(ordered)} orders,"
            f" median {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"
        )


async def check_invariants(timeout: float = 30.0) -> None:
    """`make check-invariants` against the stack's database, polled until quiet and clean."""
    command = [str(ROOT / "scripts" / "stack.sh"), "check-invariants"]

    async def run() -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
        )

    result = await eventually(run, lambda r: r.returncode == 0, timeout=timeout)
    assert "invariants: ok" in result.stdout
