"""Fault drills of `make e2e-cluster`: a Redis Cluster primary killed, the Postgres replica down,
PgBouncer killed.

They run only where ``scripts/e2e_cluster.py`` started the stores (it sets ``E2E_CLUSTER_*``
and ``E2E_CLUSTER_PG_*``); against any other stack they are skipped.

* The primary that holds the bus (every stream and the dead letters share the ``{bus}``
  slot) is killed with SIGKILL during a burst of orders: its replica takes over, the
  clients follow the new slot map, requests that met the outage are retried by the client
  with the same ``Idempotency-Key`` (a 503 with ``Retry-After`` is the contract), and every
  order settles with exactly one notification. The killed node comes back as a replica.
* The Postgres replica is stopped: lists fall back to the primary (200, complete), then the
  replica is started again.
* PgBouncer, between every service and the primary past one replica, is killed with SIGKILL
  during a burst (supervisord starts it again): the pools' connections to it are dead, each is
  replaced on its next use, and every order settles with exactly one notification.
"""

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.testing.cluster import LocalPostgresPair, LocalRedisCluster
from common.testing.polling import eventually

from .conftest import (
    REPLICAS,
    Customer,
    Stack,
    check_invariants,
    order_body,
    settled,
    sign_up,
    sign_up_body,
)
from .test_orders import notifications_of

pytestmark = pytest.mark.skipif(
    "E2E_CLUSTER_PORT_BASE" not in os.environ, reason="needs the stores of make e2e-cluster"
)


def cluster() -> LocalRedisCluster:
    return LocalRedisCluster(
        int(os.environ["E2E_CLUSTER_PORT_BASE"]),
        replicas_per_primary=1,
        directory=Path(os.environ["E2E_CLUSTER_DIR"]),
    )


def postgres() -> LocalPostgresPair:
    port = int(os.environ["E2E_CLUSTER_PG_PORT"])
    return LocalPostgresPair(port, port + 1, directory=Path(os.environ["E2E_CLUSTER_PG_DIR"]))


async def place_retrying(stack: Stack, customer: Customer, price: int) -> str:
    """POST /orders, retried with one Idempotency-Key while the answer is a 503."""
    key = uuid.uuid4().hex

    async def attempt() -> Any:
        return await stack.orders.post(
            "/orders",
            json=order_body(price),
            headers={**customer.auth, "Idempotency-Key": key},
        )

    response = await eventually(attempt, lambda r: r.status_code != 503, timeout=30)
    assert response.status_code == 202, response.text
    order_id: str = response.json()["id"]
    return order_id


def covering(order_ids: set[str]) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda notices: order_ids <= {n["order_id"] for n in notices}


Placed = list[tuple[Customer, str]]


async def burst(stack: Stack, customers: list[Customer], count: int) -> Placed:
    """``count`` orders at once, round-robin over ``customers``, each retried on a 503."""
    ids = await asyncio.gather(
        *(place_retrying(stack, customers[i % len(customers)], 1_000) for i in range(count))
    )
    return [(customers[i % len(customers)], order_id) for i, order_id in enumerate(ids)]


async def assert_each_approved_and_announced_once(stack: Stack, placed: Placed) -> None:
    orders = [await settled(stack, c, order_id, timeout=90) for c, order_id in placed]
    assert {o["status"] for o in orders} == {"APPROVED"}
    for customer in {id(c): c for c, _ in placed}.values():
        mine = {order_id for c, order_id in placed if c is customer}

        async def notices(who: Customer = customer) -> list[dict[str, Any]]:
            return await notifications_of(stack, who)

        listed = await eventually(notices, covering(mine), timeout=60)
        per_order = Counter(n["order_id"] for n in listed if n["order_id"] in mine)
        assert set(per_order.values()) == {1}, per_order


async def test_the_bus_primary_killed_mid_burst_fails_over_and_every_order_settles_once(
    stack: Stack,
) -> None:
    redis = cluster()
    customers = [await sign_up(stack, credit_limit_cents=100_000) for _ in range(4)]
    victim = redis.owner_of("{bus}")

    before = await burst(stack, customers, 8)
    redis.kill_node(victim)
    during = await burst(stack, customers, 8)
    await asyncio.to_thread(redis.wait_failover, "{bus}", victim, 30)  # the replica took over
    redis.start_node(victim)  # rejoins as a replica of its successor
    after = await burst(stack, customers, 4)

    await assert_each_approved_and_announced_once(stack, before + during + after)
    await asyncio.to_thread(redis.wait_healthy, 30)
    await check_invariants(timeout=60)


# scripts/stack.sh's default: PgBouncer past one replica (POOLER=none runs without it).
POOLED = os.environ.get("POOLER", "pgbouncer" if REPLICAS > 1 else "none") == "pgbouncer"


@pytest.mark.skipif(not POOLED, reason="this stack runs without PgBouncer (POOLER)")
async def test_pgbouncer_killed_mid_burst_comes_back_and_every_order_settles_once(
    stack: Stack,
) -> None:
    """Requests that meet PgBouncer down are answered 503 and retried with their
    Idempotency-Key; the workers wait the outage out; supervisord starts PgBouncer again."""
    customers = [await sign_up(stack, credit_limit_cents=100_000) for _ in range(2)]
    before = await burst(stack, customers, 6)
    stack.control("kill", "pgbouncer")
    during = await burst(stack, customers, 6)
    after = await burst(stack, customers, 4)

    await assert_each_approved_and_announced_once(stack, before + during + after)
    # users-api's pools saw no write since the kill: their dead connections are pinged and
    # replaced before use once idle (common.db.ping_after_idle), or answered 503 once.
    await eventually(lambda: sign_up_once(stack), lambda status: status == 201, timeout=30)
    await check_invariants(timeout=60)


async def sign_up_once(stack: Stack) -> int:
    """One sign-up's status: the drill polls through 503s, which sign_up asserts against."""
    return (await stack.users.post("/users", json=sign_up_body(1_000))).status_code


async def test_the_replica_stopped_lists_fall_back_to_the_primary(stack: Stack) -> None:
    pair = postgres()
    customer = await sign_up(stack)
    order_id = await place_retrying(stack, customer, 500)
    await settled(stack, customer, order_id, timeout=60)

    await asyncio.to_thread(pair.stop_replica)
    try:
        for _ in range(3):
            listed = await stack.orders.get("/orders", headers=customer.auth)
            assert listed.status_code == 200, listed.text
            assert [o["id"] for o in listed.json()["items"]] == [order_id]
            notices = await stack.notifications.get("/notifications", headers=customer.auth)
            assert notices.status_code == 200, notices.text
    finally:
        await asyncio.to_thread(pair.start_replica)

    async def listed_again() -> list[str]:
        response = await stack.orders.get("/orders", headers=customer.auth)
        return [o["id"] for o in response.json()["items"]] if response.status_code == 200 else []

    await eventually(listed_again, lambda ids: ids == [order_id], timeout=30)
