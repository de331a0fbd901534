"""Edge limits: what a client may cost a process before any parsing, auth or load shedding.

One client with no account must not be able to take a process away from everybody else:

- a request body is at most ``max_body_bytes`` (413 problem+json), refused from its
  ``Content-Length`` at once, and counted while it streams (a chunked body has none);
- the whole body must arrive within ``body_timeout_seconds`` (408 problem+json);
- the request line and headers must arrive within ``header_timeout_seconds`` of the connection
  opening (or of the first byte of a keep-alive connection's next request): a 408 written by
  the HTTP protocol itself (:func:`edge_protocol`, given to uvicorn), since no ASGI
  app exists before the headers are complete;
- a stop closes no kept-alive connection under a request already on its way
  (:class:`_GentleDrain`, also in :func:`edge_protocol`).

Every refusal answers and then closes the connection (``Connection: close``): a body left
unread cannot be skipped safely, and a dropped connection tells a client nothing.

:class:`EdgeLimitsMiddleware` is plain ASGI and reads the body before the app sees the
request, so the load-shedding slot behind it is taken only once the body has arrived: a
stalled upload holds a connection and a small buffer, never a slot. A gateway, which must
stream bodies on rather than buffer them, mounts the same class with ``stream_body=True``: the
body then flows to the app as it arrives, counted and timed on the way; past a limit the app
is told the client left (it abandons its upstream request) and the client gets the 413 or 408.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from common.errors import PROBLEM_JSON, problem_response

try:  # uvicorn's faster parser when it is installed, as uvicorn's own "auto" would choose
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency of uvicorn[standard]
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
CLOSE = {"Connection": "close"}


class EdgeLimitsMiddleware:
    """Bound a request's body in size and in time before the app behind sees the request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout_seconds: float = 10.0,
        stream_body: bool = False,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.stream_body = stream_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        if self.stream_body:
            await self._streaming(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                body, disconnected = await self._read_body(receive)
        except TimeoutError:
            await problem_response(
                408,
                f"The request body did not arrive within {self.body_timeout_seconds:g} s.",
                instance=scope["path"],
                headers=CLOSE,
            )(scope, receive, send)
            return
        if body is None:
            await self._too_large(scope, receive, send)
            return
        if disconnected:
            return  # nobody is left to answer
        await self.app(scope, _replay(body, receive), send)

    async def _streaming(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The body passed on as it arrives, counted and timed; past a limit the app sees a
        disconnect and, if it has not answered yet, the client gets the 413 or 408."""
        owed: list[int] = []  # the status owed to the client once a limit is passed
        answered = False
        complete = False
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout_seconds

        async def counted() -> Message:
            nonlocal size, complete
            if owed:
                return {"type": "http.disconnect"}
            if complete:  # after the body only a disconnect can come, whenever it comes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                owed.append(408)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    owed.append(413)
                    return {"type": "http.disconnect"}
                complete = not message.get("more_body", False)
            return message

        async def watched(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)
        if not owed or answered:
            return
        if owed[0] == 413:
            await self._too_large(scope, receive, send)
            return
        await problem_response(
            408,
            f"The request body did not arrive within {self.body_timeout_seconds:g} s.",
            instance=scope["path"],
            headers=CLOSE,
        )(scope, receive, send)

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, bool]:
        """The whole body (None past the limit) and whether the client went away."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None, False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A 413, then the rest of the body read and dropped (for at most the body deadline)
        before the connection closes: closing on unread data would reset the connection,
        and the client could lose the answer."""
        response = problem_response(
            413,
            f"The request body is larger than {self.max_body_bytes} bytes.",
            instance=scope["path"],
            headers=CLOSE,
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.body_timeout_seconds):
                while (message := await receive())["type"] == "http.request":
                    if not message.get("more_body", False):
                        break
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, as one message; afterwards the real channel (a streaming response
    listens on it for the client's disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Request Timeout",
            "status": 408,
            "detail": f"The request headers did not arrive within {seconds:g} s.",
        }
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\n"
        b"content-type: " + PROBLEM_JSON.encode() + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class _HeaderDeadline:
    """The timer of one connection: armed when a request starts, cancelled once its headers
    are complete; when it fires, a 408 is written and the connection closed."""

    def __init__(self, protocol: Any, seconds: float) -> None:
        self.protocol = protocol
        self.seconds = seconds
        self.timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.seconds, self.expire)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self) -> None:
        self.timer = None
        transport = self.protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(_timeout_response(self.seconds))
            transport.close()


DRAIN_IDLE_SECONDS = 1.0  # how long an idle keep-alive connection may still bring a request


class _GentleDrain:
    """A graceful stop without the keep-alive race (RFC 9112 section 9.6).

    uvicorn's stop closes every idle keep-alive connection at once. A client may have sent a
    request on one an instant before: it meets a reset (``ReadError``) and cannot tell whether
    the request was served, a POST included. Here an idle connection is left open for
    ``DRAIN_IDLE_SECONDS``: a request that arrives on it is served with ``Connection: close``
    (the client learns, from a response, not a reset, to connect afresh, and the listener's
    successor takes it); one still idle then is closed, when no client is using it. A busy
    connection closes after its response, as before. The wait is part of uvicorn's graceful
    shutdown, bounded by its timeout.
    """

    draining = False

    def drain(self, protocol: Any, close_now: Callable[[], None]) -> None:
        if _idle(protocol):
            self.draining = True
            protocol.loop.call_later(DRAIN_IDLE_SECONDS, self._close_if_idle, protocol, close_now)
        else:
            protocol.cycle.keep_alive = False

    def request_started(self, protocol: Any) -> None:
        """A request that began while draining is the connection's last."""
        if self.draining and protocol.cycle is not None:
            protocol.cycle.keep_alive = False

    @staticmethod
    def _close_if_idle(protocol: Any, close_now: Callable[[], None]) -> None:
        if not protocol.transport.is_closing() and _idle(protocol):
            close_now()
        # else: closed already, or a request's cycle with keep_alive off closes it after
        # its response


def _idle(protocol: Any) -> bool:
    """No request in progress on the connection (uvicorn's own test in its ``shutdown``)."""
    return protocol.cycle is None or protocol.cycle.response_complete


def edge_protocol(header_timeout_seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with a deadline for the
    request line and headers, and a stop that drains kept-alive connections gently
    (:class:`_GentleDrain`): pass it as ``uvicorn.run(http=...)``."""
    if HttpToolsProtocol is not None:

        class HttpToolsAtTheEdge(HttpToolsProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                self.header_deadline = _HeaderDeadline(self, header_timeout_seconds)
                self.gentle = _GentleDrain()
                super().connection_made(transport)
                self.header_deadline.arm()

            def on_message_begin(self) -> None:
                self.header_deadline.arm()
                super().on_message_begin()

            def on_headers_complete(self) -> None:
                self.header_deadline.cancel()
                super().on_headers_complete()
                self.gentle.request_started(self)

            def shutdown(self) -> None:
                self.gentle.drain(self, self.transport.close)

            def connection_lost(self, exc: Exception | None) -> None:
                self.header_deadline.cancel()
                super().connection_lost(exc)

        return HttpToolsAtTheEdge

    class H11AtTheEdge(H11Protocol):  # pragma: no cover - used without httptools only
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self.header_deadline = _HeaderDeadline(self, header_timeout_seconds)
            self.gentle = _GentleDrain()
            super().connection_made(transport)
            self.header_deadline.arm()

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.header_deadline.arm()
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self.header_deadline.cancel()
                self.gentle.request_started(self)

        def shutdown(self) -> None:
            self.gentle.drain(self, super().shutdown)

        def connection_lost(self, exc: Exception | None) -> None:
            self.header_deadline.cancel()
            super().connection_lost(exc)

    return H11AtTheEdge
