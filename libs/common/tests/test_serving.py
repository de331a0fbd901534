"""common.serving: uvicorn's server waking once a second, and at once on SIGTERM."""

import asyncio
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from common.serving import TICK_SECONDS
from common.testing.polling import eventually

APP = Path(__file__).with_name("serving_app.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _get(port: int, path: str = "/") -> httpx.Response | None:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return await client.get(f"http://127.0.0.1:{port}{path}")
    except httpx.TransportError:
        return None


async def test_it_serves_with_a_date_header_and_stops_at_once_on_sigterm() -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(APP), str(port), cwd=APP.parent
    )
    try:
        response = await eventually(lambda: _get(port), timeout=30, what="the app answering")
        assert response is not None
        assert response.text == "hello"
        assert response.headers["date"].endswith("GMT")  # refreshed by the main loop's tick
        # What start-up built is out of the garbage collector's reach (freeze_startup_heap):
        # tens of thousands of objects even for this one-route app (imports, uvicorn, the app).
        frozen = await _get(port, "/frozen")
        assert frozen is not None
        assert int(frozen.text) > 10_000
        # Idle long enough for the main loop to be in its one-second wait, then stop it.
        await eventually(lambda: _get(port), what="a second answer")
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
        elapsed = time.monotonic() - stopped_at
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # uvicorn's graceful shutdown, then the signal raised again (its exit status, as before).
    assert process.returncode == -signal.SIGTERM
    # Woken by the signal, not by the next tick (uvicorn's own loop polled every 0.1 s).
    assert elapsed < TICK_SECONDS
