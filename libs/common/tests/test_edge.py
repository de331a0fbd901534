"""Edge limits on a real socket: stalled bodies and headers, oversized bodies, open streams.

Each test serves ``create_service_app`` with uvicorn on 127.0.0.1 (common.testing.server), with
the header-deadline protocol ``serve`` gives uvicorn, and talks to it as an attacker would.
"""

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from starlette.responses import StreamingResponse

from common.auth import CurrentUser
from common.context import SHARED
from common.edge import DRAIN_IDLE_SECONDS, edge_protocol
from common.http import STREAM_SLOT, create_service_app
from common.settings import ServiceSettings
from common.testing.polling import eventually
from common.testing.server import served, serving

pytestmark = pytest.mark.integration

router = APIRouter()
release_streams = asyncio.Event()


@router.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}


@router.post("/echo")
async def echo(body: dict[str, Any]) -> dict[str, Any]:
    return body


@router.post("/private")
async def private(caller: CurrentUser, body: dict[str, Any]) -> dict[str, Any]:
    return body


@router.get("/stream", dependencies=[STREAM_SLOT])
async def stream() -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        await release_streams.wait()

    return StreamingResponse(events(), media_type="text/event-stream")


def opened_at_least(opened: list[httpx.Response], count: int) -> bool:
    return len(opened) >= count


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@router.get("/proxied-stream")
async def proxied_stream() -> StreamingResponse:
    """An event stream no STREAM_SLOT counted (what a gateway passes through)."""

    async def events() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        await release_streams.wait()

    return StreamingResponse(events(), media_type="text/event-stream")


def settings(database_url: str, redis_url: str, **extra: Any) -> ServiceSettings:
    return ServiceSettings(database_url=database_url, redis={"url": redis_url}, **extra)


async def raw_request(url: str, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    return reader, writer


async def answer_then_close(reader: asyncio.StreamReader, within: float) -> tuple[int, bytes]:
    """The status and body of the one response on the connection, read to its EOF: the
    server answered, then closed (never a silent drop)."""
    async with asyncio.timeout(within):
        data = await reader.read()  # until the server closes
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "the connection was closed without an answer"
    return int(head.split(b" ", 2)[1]), body


async def test_stalled_bodies_hold_no_slot_and_get_a_408_then_close(
    database_url: str, redis_url: str
) -> None:
    """Defect 1: 4 stalled bodies on a process with 2 slots; everyone else is still served."""
    app = create_service_app(
        settings(database_url, redis_url, http={"max_in_flight": 2, "body_timeout_seconds": 1.5}),
        title="t",
        routers=[router],
    )
    async with served(app) as url:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        stalled = [await raw_request(url, head) for _ in range(4)]
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            assert (await client.get("/ping")).status_code == 200
            assert (await client.post("/echo", json={"a": 1})).json() == {"a": 1}
        for reader, writer in stalled:
            status, body = await answer_then_close(reader, within=5)
            assert status == 408
            assert json.loads(body)["status"] == 408
            writer.close()


async def test_headers_that_never_end_get_a_408_then_close(
    database_url: str, redis_url: str
) -> None:
    app = create_service_app(settings(database_url, redis_url), title="t", routers=[router])
    async with served(app, http=edge_protocol(1.0)) as url:
        reader, writer = await raw_request(url, b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        status, body = await answer_then_close(reader, within=5)
        writer.close()
        assert status == 408
        assert json.loads(body)["title"] == "Request Timeout"
        # A connection that says nothing at all is answered the same way.
        reader, writer = await raw_request(url, b"")
        assert (await answer_then_close(reader, within=5))[0] == 408
        writer.close()
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            assert (await client.get("/ping")).status_code == 200  # in time: served


async def test_a_body_over_the_limit_is_a_413_before_auth_or_parsing(
    database_url: str, redis_url: str
) -> None:
    """Defect 3: an unauthenticated oversized body is refused for its size, unread."""
    app = create_service_app(
        settings(database_url, redis_url, http={"max_body_bytes": 1000}),
        title="t",
        routers=[router],
    )
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        declared = await client.post("/private", content=b"x" * 5000)
        assert declared.status_code == 413
        assert declared.headers["content-type"] == "application/problem+json"

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(10):
                yield b"y" * 200

        streamed = await client.post("/echo", content=chunked())
        assert streamed.status_code == 413
        assert (await client.post("/echo", json={"fits": True})).status_code == 200
        assert (await client.post("/private", json={})).status_code == 401


async def test_streams_hold_no_load_shed_slot_and_have_their_own_cap(
    database_url: str, redis_url: str
) -> None:
    """Defect 2: open streams leave the short requests their slots; one stream past the
    process's cap is a 503 with Retry-After."""
    release_streams.clear()
    app = create_service_app(
        settings(database_url, redis_url, http={"max_in_flight": 2, "max_streams": 3}),
        title="t",
        routers=[router],
    )
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        capacity = SHARED.of(app).capacity
        async with asyncio.TaskGroup() as streams:
            opened: list[httpx.Response] = []

            async def open_stream() -> None:
                async with client.stream("GET", "/stream") as response:
                    opened.append(response)
                    async for _ in response.aiter_bytes():
                        pass

            for count in range(1, 4):  # one after the other: opening takes a slot a moment
                streams.create_task(open_stream())
                await until(functools.partial(opened_at_least, opened, count))
            assert [response.status_code for response in opened] == [200, 200, 200]
            assert capacity.in_flight == 0
            assert (await client.get("/ping")).status_code == 200
            refused = await client.get("/stream")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            release_streams.set()
        await until(lambda: not capacity.streams and not capacity.in_flight)


async def test_an_event_stream_nobody_counted_gives_its_slot_back_too(
    database_url: str, redis_url: str
) -> None:
    release_streams.clear()
    app = create_service_app(
        settings(database_url, redis_url, http={"max_in_flight": 1}), title="t", routers=[router]
    )
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        capacity = SHARED.of(app).capacity
        async with client.stream("GET", "/proxied-stream") as response:
            assert response.status_code == 200
            await until(lambda: capacity.streams == 1)
            assert capacity.in_flight == 0
            assert (await client.get("/ping")).status_code == 200  # the only slot is free
            release_streams.set()
        await until(lambda: not capacity.streams and not capacity.in_flight)


PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


async def one_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of the next response on a kept-alive connection (its body read
    by its Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode().strip().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split(" ")[1]), headers


async def listener_closed(url: str) -> bool:
    """Whether the port refuses new connections: the server has begun its stop."""
    try:
        _, writer = await raw_request(url, b"")
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_a_stop_answers_a_request_sent_on_an_idle_kept_alive_connection(
    database_url: str, redis_url: str
) -> None:
    """The keep-alive race of a rolling restart: a client sends on a connection it kept
    alive just as the server stops. uvicorn alone closes idle connections at once (the
    client meets a reset and cannot tell whether its request ran); here the request is
    served with Connection: close, and a connection no one uses is closed soon after."""
    app = create_service_app(settings(database_url, redis_url), title="t", routers=[router])
    async with serving(app, http=edge_protocol(5.0)) as (url, server):
        busy_reader, busy = await raw_request(url, PING)
        idle_reader, idle = await raw_request(url, PING)
        for reader in (busy_reader, idle_reader):
            status, headers = await one_response(reader)
            assert (status, headers.get("connection")) == (200, None)  # kept alive

        server.should_exit = True
        await eventually(lambda: listener_closed(url), timeout=5, what="the server's stop")
        started = asyncio.get_running_loop().time()

        busy.write(PING)  # on its way as the stop began
        status, headers = await one_response(busy_reader)
        assert (status, headers["connection"]) == (200, "close")
        assert await asyncio.wait_for(busy_reader.read(), 5) == b""  # then closed

        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # unused: closed, later
        assert asyncio.get_running_loop().time() - started >= DRAIN_IDLE_SECONDS * 0.9
        busy.close()
        idle.close()


async def test_a_stop_under_load_drops_no_request_of_kept_alive_clients(
    database_url: str, redis_url: str
) -> None:
    """Twenty clients send back to back on kept-alive connections while the server stops:
    every request is answered (uvicorn alone dropped one to five per stop, measured), and
    once the listener is closed a client meets a refused connection, never a reset one."""
    app = create_service_app(settings(database_url, redis_url), title="t", routers=[router])
    dropped: list[str] = []
    answered = 0
    async with (
        serving(app, http=edge_protocol(5.0)) as (url, server),
        httpx.AsyncClient(
            base_url=url, timeout=5, limits=httpx.Limits(max_keepalive_connections=20)
        ) as client,
    ):

        async def customer() -> None:
            nonlocal answered
            while True:
                try:
                    response = await client.get("/ping")
                except httpx.ConnectError:
                    return  # the listener is closed: a new connection is refused
                except httpx.HTTPError as error:
                    dropped.append(repr(error))
                    continue
                assert response.status_code == 200
                answered += 1

        customers = [asyncio.create_task(customer()) for _ in range(20)]
        await until(lambda: answered >= 200)
        server.should_exit = True
        await asyncio.wait_for(asyncio.gather(*customers), 10)
    assert dropped == []
