"""A webhook receiver for tests: a real HTTP/1.1 server on 127.0.0.1 that records each
request and answers what the test scripts, and the signature check a receiver makes.

One copy for the notifications service's tests (its dispatcher against receivers that fail,
stall or come back) and the e2e suite (a stack delivering to a receiver in the test
process). Signatures are checked with the Standard Webhooks reference library, never with
the service's own signing code, so a test proves what a real receiver would accept.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

Answer = Callable[[int], int]
"""The status to answer the n-th request (1-based) with."""


@dataclass
class Hit:
    """One request a receiver got, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def signature_is_valid(secret: str, hit: Hit) -> bool:
    """What a receiver does: verify with the Standard Webhooks reference library."""
    try:
        Webhook(secret).verify(hit.body, hit.headers)
    except WebhookVerificationError:
        return False
    return True


class Receiver:
    """A webhook endpoint on 127.0.0.1 (``port`` 0: an ephemeral one), started with
    :meth:`start` or ``async with``. ``answer(n)`` is the status of the n-th request.

    With ``secret`` set it behaves like a production receiver: a request that does not verify
    under that secret is answered 401 (and recorded so)."""

    def __init__(self, answer: Answer = lambda _: 200, port: int = 0) -> None:
        self.answer = answer
        self.port = port
        self.secret: str | None = None
        self.hits: list[Hit] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> "Receiver":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "Receiver":
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def successes(self) -> list[Hit]:
        return [hit for hit in self.hits if 200 <= hit.status < 300]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, _ = (await reader.readline()).decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            hit = Hit(method, path, headers, body, self.answer(len(self.hits) + 1))
            if self.secret is not None and not signature_is_valid(self.secret, hit):
                hit.status = 401
            self.hits.append(hit)
            writer.write(_response_head(hit.status))
            await writer.drain()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _response_head(status: int) -> bytes:
    """An empty response that closes the connection (a 204 carries no Content-Length)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    length = "" if status == HTTPStatus.NO_CONTENT else "Content-Length: 0\r\n"
    return f"HTTP/1.1 {status} {reason}\r\n{length}Connection: close\r\n\r\n".encode()
