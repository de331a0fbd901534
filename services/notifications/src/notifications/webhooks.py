"""Webhook mechanics without I/O policy: target checks, the signed request, the POST itself.

Targets: only ``http``/``https`` URLs without credentials, whose host resolves (DNS with a
timeout) to public addresses only; loopback, private, link-local, CGNAT, multicast and
reserved addresses are refused unless ``webhook_allow_private_targets`` is set. The check runs
at registration and again before every attempt (DNS can change), and the request then goes
to the address that was checked (the URL's host is kept in ``Host`` and in TLS SNI and
certificate checks), so a rebinding DNS answer cannot slip a private address in between.

Signature (documented in the README): ``Webhook-Signature: v1=<hex HMAC-SHA256(secret,
f"{Webhook-Timestamp}.{body}")>``, with ``Webhook-Id`` (the delivery id, stable across retries:
receivers deduplicate on it) and ``Webhook-Timestamp`` (Unix seconds of this attempt).
"""

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = frozenset({"http", "https"})
SIGNATURE_VERSION = "v1"
USER_AGENT = "shop-notifications-webhooks/1"
MAX_ERROR_LENGTH = 500


class TargetRefused(Exception):
    """The URL may not be called; ``str(exc)`` says why, in words fit for a 422 or a log."""


def check_url(url: str) -> str:
    """Syntax only (no DNS): an absolute http(s) URL with a host and no credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in SCHEMES:
        raise TargetRefused("the scheme must be http or https")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL must not contain credentials")
    if port == 0:
        raise TargetRefused("port 0 is not a valid port")
    return url


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, CGNAT, multicast..."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Target:
    """Where a URL's request goes: the checked address, and the URL's own host and port."""

    url: httpx.URL
    address: IPAddress

    @property
    def pinned_url(self) -> httpx.URL:
        return self.url.copy_with(host=str(self.address))


async def resolve(url: str, *, dns_timeout: float, allow_private: bool) -> Target:
    """Resolve the URL's host (at most ``dns_timeout`` seconds) and check every address."""
    check_url(url)
    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), dns_timeout
        )
    except TimeoutError as exc:
        raise TargetRefused(f"resolving {host!r} took longer than {dns_timeout} s") from exc
    except OSError as exc:
        raise TargetRefused(f"{host!r} does not resolve: {exc.strerror or exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"{host!r} does not resolve")
    if not allow_private:
        refused = sorted({str(a) for a in addresses if not is_public(a)})
        if refused:
            raise TargetRefused(
                f"{host!r} resolves to a private, loopback or link-local address "
                f"({', '.join(refused)})"
            )
    return Target(parsed, addresses[0])


def body_of(
    *,
    notification_id: uuid.UUID,
    kind: str,
    order_id: uuid.UUID | None,
    user_id: uuid.UUID,
    created_at: datetime,
) -> bytes:
    """The JSON body every delivery of a notification carries (the same on every retry)."""
    return json.dumps(
        {
            "id": str(notification_id),
            "kind": kind,
            "order_id": str(order_id) if order_id else None,
            "user_id": str(user_id),
            "created_at": created_at.isoformat(),
        },
        separators=(",", ":"),
    ).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex>``: HMAC-SHA256 with the webhook's secret over ``"{timestamp}." + body``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def signed_headers(
    *, delivery_id: uuid.UUID, attempt: int, secret: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Webhook-Id": str(delivery_id),
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": signature(secret, timestamp, body),
        "Webhook-Attempt": str(attempt),
    }


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def post(
    client: httpx.AsyncClient,
    target: Target,
    *,
    body: bytes,
    headers: dict[str, str],
    total_timeout: float,
) -> PostResult:
    """POST to the checked address; the whole call (connect to status line) within
    ``total_timeout`` seconds. Redirects are not followed and the response body is not read."""
    url = target.url
    request_headers = {**headers, "Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    try:
        async with asyncio.timeout(total_timeout):
            request = client.build_request(
                "POST",
                target.pinned_url,
                content=body,
                headers=request_headers,
                extensions=extensions,
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            await response.aclose()
    except TimeoutError:
        return PostResult(None, f"timed out after {total_timeout} s")
    except httpx.HTTPError as exc:
        return PostResult(None, _short(f"{type(exc).__name__}: {exc}"))
    return PostResult(response.status_code, None)


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"
