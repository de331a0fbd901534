"""The proxy against a real stand-in service on loopback: routing, forwarded headers,
streaming both ways, disconnects, deadlines, the retry rule and the breaker."""

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from gateway.context import GATEWAY

from .upstream_app import Observed, stand_in

pytestmark = pytest.mark.integration


@pytest.fixture
async def upstream(loopback):
    observed = Observed()
    async with loopback.serving(stand_in(observed)) as url:
        yield url, observed


@pytest.fixture
async def front(loopback, upstream):
    url, _ = upstream
    async with loopback.gateway(
        users_url=url, orders_url=url, notifications_url=url, route={"deadline_seconds": 2.0}
    ) as gateway:
        yield gateway


async def test_each_prefix_reaches_its_service_with_path_query_and_body(front):
    async with httpx.AsyncClient(base_url=front.url) as client:
        for path in ("/users/x", "/orders/1/cancel", "/admin/sagas", "/notifications/webhooks"):
            response = await client.post(path + "?a=1&b=%2F", content=b"{}")
            assert response.status_code == 200, path
            assert response.json()["path"] == path
            assert response.json()["query"] == "a=1&b=%2F"
            assert response.json()["body_size"] == 2
        assert response.headers["set-cookie"] == "console=1; Path=/admin; HttpOnly"


async def test_unknown_prefix_is_the_gateways_own_404(front):
    async with httpx.AsyncClient(base_url=front.url) as client:
        response = await client.get("/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_forwarded_headers_replace_what_the_client_claims(front, upstream):
    async with httpx.AsyncClient(base_url=front.url) as client:
        response = await client.get(
            "/users/echo",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "abc-1"},
        )
    seen = response.json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the peer; the forged address is dropped
    assert seen["x-request-id"] == "abc-1"
    assert response.headers["x-request-id"] == "abc-1"
    assert response.headers.get_list("x-request-id") == ["abc-1"]
    version, trace_id, parent_id, flags = seen["traceparent"].split("-")
    assert (version, len(trace_id), len(parent_id), flags) == ("00", 32, 16, "01")


async def test_a_trusted_proxy_in_front_is_believed(loopback, upstream):
    url, _ = upstream
    async with (
        loopback.gateway(users_url=url, trusted_proxies="127.0.0.1") as front,
        httpx.AsyncClient(base_url=front.url) as client,
    ):
        response = await client.get("/users/echo", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.json()["headers"]["x-forwarded-for"] == "203.0.113.9"


async def test_a_client_traceparent_is_carried_through(front):
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with httpx.AsyncClient(base_url=front.url) as client:
        response = await client.get("/users/echo", headers={"traceparent": incoming})
    assert response.json()["headers"]["traceparent"] == incoming


async def test_request_body_streams_in_chunks(front, upstream):
    _, observed = upstream

    async def body() -> AsyncIterator[bytes]:
        for _ in range(16):  # 1 MiB: the most a body may be (the edge limit)
            yield b"y" * 65536
            await asyncio.sleep(0)

    async with httpx.AsyncClient(base_url=front.url, timeout=10) as client:
        response = await client.post("/orders/upload", content=body())
    assert response.json()["body_size"] == 16 * 65536
    assert len(observed.body_chunks) > 1  # it was never one whole body


async def test_response_body_streams(front):
    async with (
        httpx.AsyncClient(base_url=front.url, timeout=10) as client,
        client.stream("GET", "/orders/big") as response,
    ):
        sizes = [len(chunk) async for chunk in response.aiter_raw()]
    assert sum(sizes) == 64 * 65536
    assert len(sizes) > 1


async def test_event_stream_passes_through_live_and_closes_upstream_on_disconnect(front, upstream):
    _, observed = upstream
    async with httpx.AsyncClient(base_url=front.url, timeout=10) as client:
        async with client.stream("GET", "/notifications/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            assert await anext(lines) == "data: first"  # before the service's stream ended
            observed.release_stream.set()
            assert (await anext(lines)) in {"", "data: second"}
            # The route deadline (2 s) does not end an event stream.
            await asyncio.sleep(2.5)
        async with asyncio.timeout(10):
            await observed.stream_closed.wait()  # the client left: the service saw it


async def test_slow_service_is_a_504_at_the_route_deadline(front):
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=front.url, timeout=10) as client:
        response = await client.get("/users/slow?seconds=5")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert "users" in response.json()["detail"]
    assert time.monotonic() - started < 4


async def test_refused_connection_is_a_503_naming_the_service_retried_once_if_idempotent(
    loopback,
):
    url, holder = loopback.refused_url()
    with holder:
        async with (
            loopback.gateway(orders_url=url, breaker={"failures": 100}) as front,
            httpx.AsyncClient(base_url=front.url) as client,
        ):
            breaker = GATEWAY.of(front.app).upstreams["orders"].breaker
            response = await client.get("/orders/1")
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.json()["service"] == "orders"
            assert breaker.failures == 2  # tried twice: nothing reached the service
            response = await client.post("/orders", content=b"{}")
            assert response.status_code == 503
            assert breaker.failures == 3  # a POST with a body is never sent twice


async def test_breaker_opens_after_failures_and_lets_a_trial_through_later(loopback, upstream):
    url, _ = upstream
    dead, holder = loopback.refused_url()
    with holder:
        async with (
            loopback.gateway(users_url=dead, breaker={"failures": 2, "open_seconds": 1.0}) as front,
            httpx.AsyncClient(base_url=front.url) as client,
        ):
            upstream_of_users = GATEWAY.of(front.app).upstreams["users"]
            assert (await client.get("/users/x")).status_code == 503  # two failures: open
            assert upstream_of_users.breaker.state == "open"
            # The service comes back; the open breaker still refuses without trying.
            upstream_of_users.base_url = url
            upstream_of_users.origin = url.encode()
            refused = await client.get("/users/x")
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["service"] == "users"
            deadline = time.monotonic() + 5
            while (await client.get("/users/x")).status_code != 200:
                assert time.monotonic() < deadline, "the breaker never let a trial through"
                await asyncio.sleep(0.1)
            assert upstream_of_users.breaker.state == "closed"


async def test_a_client_leaving_mid_upload_is_not_the_services_failure(front, upstream):
    _, observed = upstream
    _reader, writer = await asyncio.open_connection(*front.url.removeprefix("http://").split(":"))
    writer.write(
        b"POST /orders/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000\r\n\r\n"
        + b"z" * 65536
    )
    await writer.drain()
    deadline = time.monotonic() + 5
    while not observed.body_chunks:  # the first chunk reached the service
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    writer.close()
    breaker = GATEWAY.of(front.app).upstreams["orders"].breaker
    await asyncio.sleep(0.5)
    assert breaker.failures == 0
    async with httpx.AsyncClient(base_url=front.url) as client:
        assert (await client.get("/orders/after")).status_code == 200


@contextlib.contextmanager
def never_accepting_url() -> Iterator[str]:
    """A port that listens but whose accept queue is full: the kernel drops further SYNs, so a
    connection attempt hangs, as to the address of a stopped container on a bridge network."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # more than the queue holds (listen(0) keeps one or two)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


async def test_a_connection_never_accepted_is_a_503_not_a_504(loopback):
    with never_accepting_url() as url:
        async with (
            loopback.gateway(
                orders_url=url,
                breaker={"failures": 100},
                upstream={"connect_timeout_seconds": 0.3},
                route={"deadline_seconds": 10.0},
            ) as front,
            httpx.AsyncClient(base_url=front.url, timeout=15) as client,
        ):
            started = time.monotonic()
            response = await client.get("/orders/1")
            assert response.status_code == 503, response.text
            assert response.json()["service"] == "orders"
            assert time.monotonic() - started < 5  # two connect timeouts, not the deadline


async def test_a_body_over_the_limit_is_a_413_at_the_gateway_declared_or_streamed(front, upstream):
    _, observed = upstream
    calls_before = len(observed.body_chunks)

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"z" * 65536

    async with httpx.AsyncClient(base_url=front.url, timeout=10) as client:
        declared = await client.post("/orders/upload", content=b"x" * (1024 * 1024 + 1))
        streamed = await client.post("/orders/upload", content=chunked())

    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert len(observed.body_chunks) - calls_before < 20  # the upstream never got it whole


async def test_a_stalled_body_is_a_408_at_the_gateway(loopback, upstream):
    url, _ = upstream
    async with loopback.gateway(
        users_url=url, orders_url=url, notifications_url=url, http={"body_timeout_seconds": 0.5}
    ) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /orders/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nx")
        await writer.drain()
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(4096), timeout=5)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 3
