"""The starvation drill (issue 17): one client with no special rights attacks every way it can at
once, on loopback, for a bounded time, while a well-behaved customer keeps shopping.

* 64 stalled request bodies on users-api (headers say 100 bytes, one arrives);
* 64 open notification streams (13 accounts, at most 5 each);
* a sign-up and login flood from the same address (every request a password hash).

The customer's requests must all be 2xx with a p99 under 1 s; then the attackers stop and the
services hold nothing open (their in-flight and stream gauges fall back to 0). The figures go
to the run's terminal summary, pass or fail.
"""

import asyncio
import contextlib
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from common.testing.polling import eventually

from .conftest import (
    DRILL_LINES,
    NOTIFICATIONS_URL,
    USERS_URL,
    Customer,
    Stack,
    order_body,
    sign_up,
)

ATTACK_SECONDS = 8.0
STALLED_BODIES = 64
STREAMS = 64
STREAMS_PER_ACCOUNT = 5
FLOODERS = 16


@dataclass
class DrillFigures:
    customer_statuses: Counter[int] = field(default_factory=Counter)
    customer_latencies: list[float] = field(default_factory=list)
    flood_statuses: Counter[int] = field(default_factory=Counter)
    streams_opened: int = 0
    stalled_answers: Counter[str] = field(default_factory=Counter)

    def p99(self) -> float:
        """The 99th percentile within the observed range ('inclusive'): the default 'exclusive'
        method extrapolates past the largest sample when there are fewer than 100 of them (a
        CI run reported p99 1155 ms over a max of 978 ms)."""
        return statistics.quantiles(self.customer_latencies, n=100, method="inclusive")[98]

    def hashes_per_second(self) -> float:
        """Responses that cost a hash (a created user, a checked password) per second."""
        return (self.flood_statuses[201] + self.flood_statuses[401]) / ATTACK_SECONDS


async def stall_a_body(stop: asyncio.Event, figures: DrillFigures) -> None:
    url = urlsplit(USERS_URL)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(
            b"POST /users/sessions HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        read = asyncio.create_task(reader.read(200))
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if read in done:
            status = read.result().split(b" ", 2)[1:2]
            figures.stalled_answers[status[0].decode() if status else "closed"] += 1
        else:
            figures.stalled_answers["open until the attacker left"] += 1
        for task in (read, stopped):
            task.cancel()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def hold_a_stream(
    client: httpx.AsyncClient, account: Customer, stop: asyncio.Event, figures: DrillFigures
) -> None:
    async with client.stream("GET", "/notifications/stream", headers=account.auth) as response:
        assert response.status_code == 200, await response.aread()
        figures.streams_opened += 1
        chunks = response.aiter_bytes().__aiter__()
        reading = asyncio.ensure_future(chunks.__anext__())
        while not stop.is_set():
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if reading.done():
                reading = asyncio.ensure_future(chunks.__anext__())
        reading.cancel()


async def flood(client: httpx.AsyncClient, stop: asyncio.Event, figures: DrillFigures) -> None:
    while not stop.is_set():
        email = f"flood-{uuid.uuid4().hex[:12]}@example.com"
        body = {"email": email, "password": "flood password"}
        if uuid.uuid4().int % 2:
            response = await client.post("/users/sessions", json=body)
        else:
            response = await client.post(
                "/users", json={**body, "name": "Flood", "credit_limit_cents": 0}
            )
        figures.flood_statuses[response.status_code] += 1
        if response.status_code in {429, 503}:
            await asyncio.sleep(0.01)  # an attacker ignores Retry-After; a little, not at all


async def shop(
    stack: Stack, customer: Customer, stop: asyncio.Event, figures: DrillFigures
) -> None:
    calls: list[Callable[[], Awaitable[httpx.Response]]] = [
        lambda: stack.users.get("/users/me", headers=customer.auth),
        lambda: stack.notifications.get("/notifications", headers=customer.auth),
        lambda: stack.orders.post("/orders", json=order_body(100), headers=customer.auth),
        lambda: stack.orders.get("/orders", headers=customer.auth),
    ]
    while not stop.is_set():
        for call in calls:
            started = time.perf_counter()
            response = await call()
            figures.customer_latencies.append(time.perf_counter() - started)
            figures.customer_statuses[response.status_code] += 1


async def gauge(url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


@contextlib.asynccontextmanager
async def attacker_clients() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with (
        httpx.AsyncClient(base_url=USERS_URL, timeout=30, limits=limits) as users,
        httpx.AsyncClient(base_url=NOTIFICATIONS_URL, timeout=30, limits=limits) as notifications,
    ):
        yield users, notifications


async def _streams_open(customer: Customer, count: int = 2) -> list[int]:
    """The statuses of ``count`` streams opened at once (new connections: every replica)."""

    async def open_one(client: httpx.AsyncClient) -> int:
        async with client.stream("GET", "/notifications/stream", headers=customer.auth) as r:
            return r.status_code

    async with httpx.AsyncClient(base_url=NOTIFICATIONS_URL, timeout=10) as client:
        return list(await asyncio.gather(*(open_one(client) for _ in range(count))))


async def test_one_client_cannot_starve_the_others(stack: Stack):
    customer = await sign_up(stack)
    accounts = [await sign_up(stack) for _ in range(-(-STREAMS // STREAMS_PER_ACCOUNT))]
    # The drill starts on a healthy stack: an earlier drill (a Redis Cluster fail-over in
    # e2e-cluster) may leave a service's live streams a while to come back, and a stream
    # refused then (503, retry) is that drill's aftermath, not this attacker's doing.
    prober = await sign_up(stack)
    await eventually(
        lambda: _streams_open(prober),
        lambda statuses: set(statuses) == {200},
        timeout=120,
        interval=1.0,
        what="notification streams open",
    )
    figures = DrillFigures()
    stop = asyncio.Event()
    async with attacker_clients() as (users, notifications):
        attackers = [
            *(asyncio.create_task(stall_a_body(stop, figures)) for _ in range(STALLED_BODIES)),
            *(
                asyncio.create_task(
                    hold_a_stream(notifications, accounts[i // STREAMS_PER_ACCOUNT], stop, figures)
                )
                for i in range(STREAMS)
            ),
            *(asyncio.create_task(flood(users, stop, figures)) for _ in range(FLOODERS)),
        ]
        shopper = asyncio.create_task(shop(stack, customer, stop, figures))
        await asyncio.sleep(ATTACK_SECONDS)  # the attack's length, not a synchronisation
        stop.set()
        await shopper
        results = await asyncio.gather(*attackers, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]

    summary = (
        f"edge drill: customer {sum(figures.customer_statuses.values())} requests"
        f" {dict(figures.customer_statuses)}, p99 {figures.p99() * 1000:.0f} ms,"
        f" max {max(figures.customer_latencies) * 1000:.0f} ms; streams {figures.streams_opened};"
        f" stalled bodies {dict(figures.stalled_answers)}; flood {dict(figures.flood_statuses)},"
        f" {figures.hashes_per_second():.1f} hashes/s forced"
    )
    DRILL_LINES.append(summary)
    assert not failures, failures[:3]
    assert set(figures.customer_statuses) <= {200, 201, 202}, summary
    assert figures.p99() < 1.0, summary
    assert figures.streams_opened == STREAMS, summary

    async def nothing_left_open() -> bool:
        return (
            await gauge(USERS_URL, "http_requests_in_flight") == 0
            and await gauge(NOTIFICATIONS_URL, "http_requests_in_flight") == 0
            and await gauge(NOTIFICATIONS_URL, "http_streams_open") == 0
        )

    await eventually(nothing_left_open, timeout=15)
