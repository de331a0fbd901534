"""A stand-in service for the proxy tests: it answers with what it received, streams, waits
and notices disconnects, over a real socket."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Observed:
    """What the stand-in saw: requests, request-body chunk sizes, stream disconnects."""

    requests: list[dict[str, object]] = field(default_factory=list)
    body_chunks: list[int] = field(default_factory=list)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    release_stream: asyncio.Event = field(default_factory=asyncio.Event)
    delays: dict[str, float] = field(default_factory=dict)


def stand_in(observed: Observed) -> Starlette:
    async def echo(request: Request) -> Response:
        size = 0
        async for chunk in request.stream():
            if chunk:
                observed.body_chunks.append(len(chunk))
                size += len(chunk)
        seen = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": {name: value for name, value in request.headers.items()},
            "body_size": size,
        }
        observed.requests.append(seen)
        return JSONResponse(seen, headers={"set-cookie": "console=1; Path=/admin; HttpOnly"})

    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("seconds", "5")))
        return JSONResponse({"slow": True})

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"data: first\n\n"
                await observed.release_stream.wait()
                yield b"data: second\n\n"
                await asyncio.sleep(3600)
            finally:
                observed.stream_closed.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def big(request: Request) -> Response:
        chunk = b"x" * 65536

        async def body() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield chunk

        return StreamingResponse(body(), media_type="application/octet-stream")

    async def overview_part(request: Request) -> Response:
        path = request.url.path
        if request.headers.get("authorization") != "Bearer good":
            return JSONResponse({"status": 401}, status_code=401)
        if path == "/users/me":
            body: object = {
                "id": "00000000-0000-0000-0000-000000000001",
                "email": "a@example.com",
                "name": "A",
                "status": "active",
                "credit_limit_cents": 100,
                "credit_available_cents": 50,
                "created_at": "2026-01-01T00:00:00Z",
            }
        elif path == "/orders":
            body = {"items": [], "next_cursor": None}
        else:
            body = {"items": [{"read": False}, {"read": True}], "next_cursor": None}
        await asyncio.sleep(observed.delays.get(path, 0.0))
        return Response(json.dumps(body), media_type="application/json")

    return Starlette(
        routes=[
            Route("/users/me", overview_part),
            Route("/orders", overview_part),
            Route("/notifications", overview_part),
            Route("/users/slow", slow),
            Route("/notifications/stream", stream),
            Route("/orders/big", big),
            Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        ]
    )
