"""Webhook mechanics without I/O policy: target checks, secrets, the signed request, the POST.

Targets: only ``http``/``https`` URLs without credentials, whose host resolves (DNS with a
timeout) to public addresses only; loopback, private, link-local, CGNAT, multicast and
reserved addresses are refused, and so is every IPv6 form that carries an IPv4 address
(IPv4-mapped and -compatible, NAT64, 6to4, Teredo) unless the IPv4 inside is public and the
form is one a real network uses (see :func:`is_public`), unless
``webhook.allow_private_targets`` is set. The check runs at registration and again before
every attempt (DNS can change), and the request then goes to the address that was checked
(the URL's host is kept in ``Host`` and in TLS SNI and certificate checks), so a rebinding DNS
answer cannot slip a private address in between.

Signing follows the Standard Webhooks specification (https://www.standardwebhooks.com), so a
receiver verifies with any of its libraries: the secret is ``whsec_<base64 of 32 random
bytes>``; ``webhook-id`` is the delivery id (stable across retries: receivers deduplicate on
it), ``webhook-timestamp`` the Unix seconds of this attempt, and ``webhook-signature`` is
``v1,<base64 HMAC-SHA256(base64-decoded secret, f"{id}.{timestamp}.{body}")>``, several of
them space-separated while a rotated-out secret is still in its grace period.
"""

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx
import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = frozenset({"http", "https"})
SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32  # the specification asks for 24 to 64
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
    check_host(parts.hostname)
    return url


MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
ASCII_LABEL = re.compile(r"[a-z0-9_-]+")


def check_host(host: str) -> None:
    """A host name DNS can carry, or an IP literal; the refusal names the rule it broke.

    Checked before any lookup: a name the resolver cannot even encode (an empty label, a
    label over 63 characters, a broken ``xn--`` label, a soft hyphen) would otherwise fail
    deep in the resolver with an error of its own."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    name = host.removesuffix(".")
    if len(name) > MAX_HOST_LENGTH:
        raise TargetRefused(f"the host name is longer than {MAX_HOST_LENGTH} characters")
    for label in name.split("."):
        _check_label(label)


def _check_label(label: str) -> None:
    if not label:
        raise TargetRefused("the host name has an empty label (two dots in a row, or a dot first)")
    if len(label) > MAX_LABEL_LENGTH:
        raise TargetRefused(f"a host name label is longer than {MAX_LABEL_LENGTH} characters")
    if label.startswith("-") or label.endswith("-"):
        raise TargetRefused("a host name label starts or ends with a hyphen")
    if label.isascii() and not label.startswith("xn--"):
        if not ASCII_LABEL.fullmatch(label):
            raise TargetRefused(
                "a host name label has a character other than letters, digits, '-' and '_'"
            )
        return
    try:
        encoded = idna.encode(label)
    except (idna.IDNAError, UnicodeError) as exc:
        raise TargetRefused(
            f"a host name label is not a valid internationalised name (IDNA: {exc})"
        ) from exc
    if len(encoded) > MAX_LABEL_LENGTH:
        raise TargetRefused(f"a host name label is longer than {MAX_LABEL_LENGTH} characters")


# IPv6 ranges whose addresses carry an IPv4 address. Where the IPv4 decides where a packet
# goes (a NAT64 gateway, a 6to4 or Teredo relay, a dual-stack socket), a private IPv4 inside
# reaches a private host: "is the IPv6 address global?" is not the question to ask.
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: IPv4 in the last 32 bits
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: any layout, site-local
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056, deprecated by RFC 7526
TEREDO = ipaddress.IPv6Network("2001::/32")  # RFC 4380
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291, deprecated
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

# Forms refused whatever they carry: deprecated or site-local, no webhook needs them, and a
# relay or gateway on the path decides where they really go.
REFUSED_V6_NETWORKS = (NAT64_LOCAL_USE, SIX_TO_FOUR, TEREDO, IPV4_COMPATIBLE)


def _v4_is_public(address: ipaddress.IPv4Address) -> bool:
    return address.is_global and not address.is_multicast


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, CGNAT, multicast, reserved;
    for IPv6, none of the forms that embed an IPv4 address, except IPv4-mapped and NAT64
    well-known-prefix addresses of a public IPv4 (what DNS64 and dual-stack resolvers give)."""
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_is_public(address)
    if address in IPV4_MAPPED:
        assert address.ipv4_mapped is not None
        return _v4_is_public(address.ipv4_mapped)
    if address in NAT64_WELL_KNOWN:
        return _v4_is_public(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    if any(address in network for network in REFUSED_V6_NETWORKS):
        return False
    return address.is_global and not address.is_multicast


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes (shown to its owner once)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: its base64 part, decoded (as the libraries do)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


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
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
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
    except (UnicodeError, ValueError) as exc:  # the resolver's own encoding refused it
        raise TargetRefused(f"{host!r} is not a host name that can be resolved") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"{host!r} does not resolve")
    # The addresses themselves are not named: that would map internal names for anyone.
    if not allow_private and any(not is_public(address) for address in addresses):
        raise TargetRefused(
            f"{host!r} resolves to a private, loopback or link-local address"
            " (or another that is not public)"
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
    """The JSON body every delivery of a notification carries (the same on every retry), in
    the specification's recommended envelope: ``type``, ``timestamp`` and ``data`` (the
    notification as ``GET /notifications`` shows it, plus ``user_id``)."""
    created = created_at.isoformat()
    return json.dumps(
        {
            "type": f"notification.{kind}",
            "timestamp": created,
            "data": {
                "id": str(notification_id),
                "kind": kind,
                "order_id": str(order_id) if order_id else None,
                "user_id": str(user_id),
                "created_at": created,
            },
        },
        separators=(",", ":"),
    ).encode()


def signature(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` over ``"{message_id}.{timestamp}." + body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def signed_headers(
    *,
    delivery_id: uuid.UUID,
    attempt: int,
    secrets: list[str],
    body: bytes,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The request's headers, one signature per secret (the current one first; a rotated-out
    one still in its grace period after it), space-separated as the specification allows."""
    if not secrets:
        raise ValueError("a delivery needs at least one secret")
    timestamp = int(time.time()) if timestamp is None else timestamp
    message_id = str(delivery_id)
    signatures = [
        signature(secret, message_id=message_id, timestamp=timestamp, body=body)
        for secret in secrets
    ]
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
        "webhook-attempt": str(attempt),  # not in the specification: informational only
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
    request_headers = {**headers, "host": url.netloc.decode("ascii")}
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
