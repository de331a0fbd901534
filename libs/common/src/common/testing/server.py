"""An ASGI app served by uvicorn on an ephemeral port of 127.0.0.1, in the test's own loop:
for what only a real socket shows (stalled bodies and headers, streams, closed connections)."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class InProcessServer(uvicorn.Server):
    """uvicorn in the test's loop, without taking over the process's signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def served(app: ASGIApp, **config: Any) -> AsyncIterator[str]:
    """``app`` listening on 127.0.0.1 until the block ends; its base URL. ``config``: more
    ``uvicorn.Config`` options (``http=`` a protocol class, for instance)."""
    async with serving(app, **config) as (url, _):
        yield url


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, **config: Any) -> AsyncIterator[tuple[str, InProcessServer]]:
    """As :func:`served`, with the server too: a test may stop it (``should_exit``) while its
    clients still hold connections."""
    server = InProcessServer(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
            **config,
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done(), "the server stopped during start-up"
        assert time.monotonic() < deadline, "the server did not start within 10 s"
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
