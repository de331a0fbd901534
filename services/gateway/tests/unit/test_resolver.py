"""The gateway's name lookups have a deadline: a resolver that never answers is a refused
connection (503), not a request held until the route's deadline (504).

A hung resolver cannot be arranged for real on demand (in Docker mode it is the host's
resolver, unreachable from the compose network, for the name of a stopped service), so the
loop's ``getaddrinfo`` is replaced by one that never returns, the system boundary only.
"""

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from gateway.upstreams import BoundedResolver


def hang_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, on the running loop, a name lookup never answers."""

    async def never_answers(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", never_answers)


async def test_a_lookup_past_its_deadline_is_an_os_error(monkeypatch: pytest.MonkeyPatch) -> None:
    hang_lookups(monkeypatch)
    started = time.monotonic()
    with pytest.raises(OSError, match=r"no address within 0\.2 s") as raised:
        await BoundedResolver(0.2).resolve("orders-api", 8002)
    assert not isinstance(raised.value, TimeoutError)  # aiohttp would pass that through
    assert time.monotonic() - started < 2


async def test_aiohttp_reports_it_as_a_connection_never_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hang_lookups(monkeypatch)
    connector = aiohttp.TCPConnector(resolver=BoundedResolver(0.2))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get("http://orders-api:8002/orders")


async def test_a_name_that_resolves_still_resolves() -> None:
    (address, *_) = await BoundedResolver(2.0).resolve("localhost", 80)
    assert address["port"] == 80
