"""Gateway tests run the gateway and stand-in services as real HTTP servers on loopback:
what is tested is what crosses the sockets (streaming, disconnects, connection failures)."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.types import ASGIApp

from gateway.main import create_app
from gateway.settings import Settings


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port; yields its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # proxy_headers off, as common.http.serve runs the real thing.
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        listener.close()


def refused_url() -> tuple[str, socket.socket]:
    """A loopback address where nothing listens (bound, so no other test takes the port):
    connecting is refused at once."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{holder.getsockname()[1]}", holder


@dataclass
class Gateway:
    url: str
    settings: Settings
    app: object = field(repr=False)


@asynccontextmanager
async def gateway(**settings: object) -> AsyncIterator[Gateway]:
    """A gateway in front of the given upstream URLs (``users_url=...``), served on loopback."""
    config = Settings(**settings)  # type: ignore[arg-type]
    app = create_app(config)
    async with serving(app) as url:
        yield Gateway(url, config, app)


@dataclass(frozen=True)
class Loopback:
    """The helpers above, handed to tests as one fixture (tests do not import conftest)."""

    serving = staticmethod(serving)
    gateway = staticmethod(gateway)
    refused_url = staticmethod(refused_url)


@pytest.fixture
def loopback() -> Loopback:
    return Loopback()
