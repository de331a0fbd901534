"""Rate limiting shared by every replica, backed by Redis through the ``limits`` library.

Each route belongs to a group (``auth``, ``read``, ``write``) whose limit is a setting such as
``"600/minute"``, so a benchmark can raise it. The caller is counted per user when the
request carries a valid bearer token and per client address otherwise. A request over the
limit gets a 429 problem with ``Retry-After`` and the IETF ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` headers.

The client address is the TCP peer's, unless that peer is a trusted proxy (the setting
``trusted_proxies``: the ingress controller's addresses): then it is the address the proxies
forwarded in ``X-Forwarded-For``, read from the right and skipping trusted hops, so a client
cannot pick its own bucket by sending the header itself (the left part is the client's to
write). From any other peer the header is ignored. uvicorn is started with its own
forwarded-header handling off (common.http.serve), so this is the only rule.

The sliding-window-counter strategy is used: two counters per key, no burst of twice the
limit at a window edge (as a fixed window allows), and cheaper than a moving-window log.
On a Redis Cluster (``redis_cluster_nodes``) the library's cluster storage is used; it puts
each key's two counters in one slot with a hash tag of its own.
"""

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from common.auth import optional_user
from common.errors import Problem
from common.redis import cluster_options, retry_options
from common.settings import ServiceSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TooManyRequests(Problem):
    status = 429


@dataclass(frozen=True)
class RateLimiter:
    """The limiter of one service process; created in the app's lifespan."""

    strategy: SlidingWindowCounterRateLimiter
    limits: dict[str, RateLimitItem]
    namespace: str
    enabled: bool
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "RateLimiter":
        return cls(
            strategy=SlidingWindowCounterRateLimiter(_storage(settings)),
            limits={
                "auth": parse(settings.rate_limit_auth),
                "read": parse(settings.rate_limit_read),
                "write": parse(settings.rate_limit_write),
            },
            namespace=settings.service_name,
            enabled=settings.rate_limit_enabled,
            trusted_proxies=settings.trusted_proxies,
        )

    async def check(self, group: str, identity: str) -> None:
        """Count one request; raise a 429 problem when it is over the limit.

        An allowed request costs one Redis round trip; the window's statistics (for the
        headers) are read only for a refused one, which keeps the hot path cheap.
        """
        item = self.limits[group]
        if await self.strategy.hit(item, self.namespace, group, identity):
            return
        stats = await self.strategy.get_window_stats(item, self.namespace, group, identity)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            f"Rate limit of {item.amount} per {item.get_expiry()} s exceeded for {group!r}"
            f" requests; retry in {retry_after} s.",
            headers={
                "Retry-After": str(retry_after),
                "RateLimit-Limit": str(item.amount),
                "RateLimit-Remaining": str(stats.remaining),
                "RateLimit-Reset": str(retry_after),
            },
        )


def _storage(settings: ServiceSettings) -> RedisStorage:
    if settings.redis_cluster_nodes:
        auth = f":{settings.redis_cluster_password}@" if settings.redis_cluster_password else ""
        return RedisClusterStorage(
            f"async+redis+cluster://{auth}{settings.redis_cluster_nodes}",
            implementation="redispy",
            key_prefix="ratelimit",
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
            **cluster_options(),
        )
    return RedisStorage(
        settings.redis_url.replace("redis://", "async+redis://", 1),
        implementation="redispy",
        key_prefix="ratelimit",
        socket_timeout=settings.redis_timeout_seconds,
        **retry_options(),  # the first check after a Redis restart must not fail
    )


def _parse_address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, forwarded_for: list[str], trusted: tuple[IPNetwork, ...]
) -> str:
    """The address a request is counted under.

    ``peer`` is the TCP peer, ``forwarded_for`` every ``X-Forwarded-For`` header value in
    order. While the hop at hand is a trusted proxy, the next one to the left is believed;
    the first untrusted hop is the client. A hop that is not an IP address ends the walk at
    the last believed one: its sender is not a proxy we know.
    """
    if peer is None:
        return "unknown"
    current = _parse_address(peer)
    if current is None or not trusted:
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    while _is_trusted(current, trusted) and hops:
        previous = _parse_address(hops.pop())
        if previous is None:
            break
        current = previous
    return str(current)


def _is_trusted(address: IPAddress, trusted: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in trusted)


def _request_address(request: Request, trusted: tuple[IPNetwork, ...]) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), trusted)


def rate_limit(group: str) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: ``dependencies=[Depends(rate_limit("write"))]``."""

    async def limited(request: Request) -> None:
        limiter: RateLimiter = request.app.state.rate_limiter
        if not limiter.enabled:
            return
        user = await optional_user(request)
        if user is not None:
            identity = f"user:{user.id}"
        else:
            identity = f"addr:{_request_address(request, limiter.trusted_proxies)}"
        await limiter.check(group, identity)

    return limited


AUTH_LIMIT = Depends(rate_limit("auth"))
READ_LIMIT = Depends(rate_limit("read"))
WRITE_LIMIT = Depends(rate_limit("write"))
