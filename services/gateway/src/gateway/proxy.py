"""The streaming reverse proxy: path prefix -> service, as plain ASGI.

Plain ASGI (a middleware in front of the FastAPI router) because it is the hot path: a
proxied request meets no routing table, no dependency injection and no response model.
Bodies stream both ways in the chunks they arrive in; an event stream reaches the client as
the service writes it, and a client that goes away closes the upstream request.
"""

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from yarl import URL

from common.errors import problem_response, request_ids
from common.ratelimit import client_address
from gateway.settings import Settings
from gateway.upstreams import ROUTES, Upstream, UpstreamUnavailable

logger = logging.getLogger("gateway.proxy")

# Never forwarded in either direction (RFC 9110 7.6.1), plus what the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
REQUEST_SET_BY_GATEWAY = frozenset(
    {
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        b"x-correlation-id",
    }
)
# The gateway's own server adds Date and Server, and its middleware X-Request-ID.
RESPONSE_SET_BY_GATEWAY = frozenset({b"date", b"server", b"x-request-id"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
EVENT_STREAM = "text/event-stream"


class ClientGone(Exception):
    """The client disconnected while its request body was still coming."""


@dataclass(frozen=True)
class Route:
    """The route a path belongs to: its service and its deadline."""

    service: str
    prefix: str
    deadline: float

    @property
    def path(self) -> str:
        """The label of the route in metrics and access logs (``/orders/*``)."""
        return self.prefix + "/*"


def route_of(path: str, deadlines: dict[str, float], default_deadline: float) -> Route | None:
    """The route of ``path`` (``/orders``, ``/orders/...``), or None: not proxied."""
    first = path[1:].partition("/")[0]
    service = ROUTES.get(first)
    if service is None:
        return None
    prefix = "/" + first
    return Route(service, prefix, deadlines.get(prefix, default_deadline))


def traceparent(incoming: bytes | None) -> bytes:
    """The W3C trace context the services get: the client's if well formed, else a new one."""
    if incoming is not None and len(incoming) == 55 and incoming[:3] == b"00-":
        return incoming
    return b"00-" + secrets.token_hex(16).encode() + b"-" + secrets.token_hex(8).encode() + b"-01"


def forwarded_headers(
    scope: Scope, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> list[tuple[str, str]]:
    """The request headers the service gets.

    ``X-Forwarded-For`` is replaced by one address: the client's as the gateway sees it (the
    peer, or what a trusted proxy in front forwarded). A client's own header never reaches
    a service, which trusts the gateway's word alone.
    """
    headers: list[tuple[str, str]] = []
    forwarded_for: list[str] = []
    incoming_trace: bytes | None = None
    host = b""
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))
        elif name == b"traceparent":
            incoming_trace = value
        elif name == b"host":
            host = value
        elif name not in HOP_BY_HOP and name not in REQUEST_SET_BY_GATEWAY:
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
    client = scope.get("client")
    peer = client[0] if client else None
    # Without a forwarded header there is nothing to weigh: the peer is the client (and
    # parsing its address on every request was 4% of the gateway's CPU in a profile).
    address = client_address(peer, forwarded_for, trusted) if forwarded_for else peer or "unknown"
    ids = request_ids(scope)
    headers.append(("x-forwarded-for", address))
    headers.append(("x-forwarded-proto", scope.get("scheme", "http")))
    if host:
        headers.append(("x-forwarded-host", host.decode("latin-1")))
    if ids is not None:
        request_id, correlation_id = ids
        headers.append(("x-request-id", request_id))
        headers.append(("x-correlation-id", correlation_id))
    headers.append(("traceparent", traceparent(incoming_trace).decode()))
    return headers


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    """The client's body, chunk by chunk as it arrives (never gathered whole)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _client_left(exc: BaseException) -> bool:
    """aiohttp reports a failing request body as its own error, with ours as the cause."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientGone):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Proxy:
    """Sends one request to its upstream and streams the answer back."""

    def __init__(self, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]):
        self.trusted = trusted

    async def __call__(
        self, upstream: Upstream, route: Route, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(route.deadline) as deadline:
                await self._exchange(upstream, scope, receive, send_tracked, deadline)
        except UpstreamUnavailable as exc:
            await self._refuse(scope, receive, send, exc.service, exc.retry_after, started)
        except TimeoutError:
            upstream.breaker.failed()
            if not started:
                detail = f"The {upstream.name} service did not answer within {route.deadline:g} s."
                await problem_response(504, detail, instance=scope["path"])(scope, receive, send)
        except ClientGone:
            pass  # nobody to answer; leaving the block closed the upstream request
        except (aiohttp.ClientError, OSError) as exc:
            if _client_left(exc):
                return  # the client went away mid-upload: the service is not to blame
            # The connection broke after the request went out: the service may have acted
            # on it, so it is not retried; the client is told the answer was lost.
            upstream.breaker.failed()
            logger.warning("upstream %s failed: %s", upstream.name, type(exc).__name__)
            await self._refuse(scope, receive, send, upstream.name, 1.0, started)

    async def _exchange(
        self,
        upstream: Upstream,
        scope: Scope,
        receive: Receive,
        send: Send,
        deadline: asyncio.Timeout,
    ) -> None:
        response = await self._send_request(upstream, scope, receive)
        try:
            upstream.breaker.succeeded()
            headers = [
                (name.lower(), value)
                for name, value in response.raw_headers
                if name.lower() not in HOP_BY_HOP and name.lower() not in RESPONSE_SET_BY_GATEWAY
            ]
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            if response.content_type == EVENT_STREAM:
                deadline.reschedule(None)  # a stream lives as long as its client wants
            if response.content_length is None:
                await self._relay_until_disconnect(response, receive, send)
            else:
                await self._relay(response, send)
        finally:
            response.release()

    async def _send_request(
        self, upstream: Upstream, scope: Scope, receive: Receive
    ) -> aiohttp.ClientResponse:
        """The request out, its body streamed; one more try when no connection was made and
        the request is idempotent and has no body (nothing reached the service)."""
        method: str = scope["method"]
        query = scope.get("query_string", b"")
        target = upstream.origin + scope.get("raw_path", scope["path"].encode())
        if query:
            target += b"?" + query
        url = URL(target.decode("latin-1"), encoded=True)
        headers = forwarded_headers(scope, self.trusted)
        has_body = _has_body(scope)
        retry = method in IDEMPOTENT and not has_body
        upstream.admit()
        for attempt in (1, 2):
            data = _request_body(receive) if has_body else None
            try:
                return await upstream.session.request(
                    method, url, headers=headers, data=data, allow_redirects=False
                )
            # No connection was made, whether refused, unresolvable or not accepted in time
            # (a stopped container's address answers nothing): nothing reached the service.
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                upstream.breaker.failed()
                if not retry or attempt == 2:
                    raise UpstreamUnavailable(upstream.name, 1.0) from None
                upstream.admit()
        raise AssertionError("unreachable")

    @staticmethod
    async def _relay(response: aiohttp.ClientResponse, send: Send) -> None:
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _relay_until_disconnect(
        self, response: aiohttp.ClientResponse, receive: Receive, send: Send
    ) -> None:
        """A body of unknown length (an event stream) is relayed while a second task waits
        for the client to leave; whichever ends first ends the other."""
        relay = asyncio.ensure_future(self._relay(response, send))
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({relay, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, watcher):
                task.cancel()
            for task in (relay, watcher):
                with contextlib.suppress(asyncio.CancelledError, ClientGone):
                    await task
        if relay.done() and not relay.cancelled() and relay.exception() is not None:
            raise relay.exception()  # type: ignore[misc]

    @staticmethod
    async def _refuse(
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        retry_after: float,
        started: bool,
    ) -> None:
        if started:
            return  # the answer has begun; ending it short is all that is left to do
        response = problem_response(
            503,
            f"The {service} service is unavailable; retry shortly.",
            instance=scope["path"],
            headers={"Retry-After": str(max(1, round(retry_after)))},
            service=service,
        )
        await response(scope, receive, send)


class ProxyMiddleware:
    """In front of the gateway's own routes: a proxied path goes to its service.

    ``upstreams_of``: the app's upstreams (opened by its lifespan, after this is built)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        proxy: Proxy,
        settings: Settings,
        upstreams_of: Callable[[Scope], Mapping[str, Upstream]],
    ) -> None:
        self.app = app
        self.proxy = proxy
        self.settings = settings
        self.upstreams_of = upstreams_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        route = route_of(scope["path"], settings.route.deadlines, settings.route.deadline_seconds)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # the metrics and access log label: the route's prefix
        upstream = self.upstreams_of(scope)[route.service]
        await self.proxy(upstream, route, scope, receive, send)
