"""Black-box tests over HTTP against a running stack.

Base URLs come from ``USERS_URL``, ``ORDERS_URL`` and ``NOTIFICATIONS_URL`` (defaults: the
ports `make up` uses). `make test` brings up a private stack on other ports and sets them.
Fault drills (killing and starting processes) go through ``scripts/stack.sh`` with the
``STACK`` the suite runs against; they are skipped when ``STACK_CONTROL=0``.
"""

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
USERS_URL = os.environ.get("USERS_URL", "http://127.0.0.1:8001")
ORDERS_URL = os.environ.get("ORDERS_URL", "http://127.0.0.1:8002")
NOTIFICATIONS_URL = os.environ.get("NOTIFICATIONS_URL", "http://127.0.0.1:8003")
TIMEOUT = httpx.Timeout(10.0)


@dataclass
class Stack:
    """The stack's three base URLs and its process controls (for fault drills)."""

    users: httpx.AsyncClient
    orders: httpx.AsyncClient
    notifications: httpx.AsyncClient

    def control(self, verb: str, process: str) -> None:
        if os.environ.get("STACK_CONTROL", "1") == "0":
            pytest.skip("STACK_CONTROL=0: this stack's processes are not ours to kill")
        subprocess.run([ROOT / "scripts" / "stack.sh", verb, process], check=True, timeout=60)


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
        httpx.AsyncClient(base_url=USERS_URL, timeout=TIMEOUT) as users,
        httpx.AsyncClient(base_url=ORDERS_URL, timeout=TIMEOUT) as orders,
        httpx.AsyncClient(base_url=NOTIFICATIONS_URL, timeout=TIMEOUT) as notifications,
    ):
        yield Stack(users, orders, notifications)


async def sign_up(stack: Stack, credit_limit_cents: int = 100_000, **extra: Any) -> Customer:
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.com"
    password = "e2e password 1"
    body = {"email": email, "password": password, "name": "E2E", **extra}
    created = await stack.users.post(
        "/users", json={**body, "credit_limit_cents": credit_limit_cents}
    )
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
