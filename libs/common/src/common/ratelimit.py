"""Rate limiting shared by every replica, in Redis, with one script per request.

Each route belongs to a group (``auth``, ``read``, ``write``) whose limit is a setting such as
``"600/minute"`` (the ``limits`` library's notation, parsed by it), so a benchmark can raise
it. The caller is counted per user when the request carries a valid bearer token and per
client address otherwise. A request over the limit gets a 429 problem with ``Retry-After``
and the IETF ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` headers.

The client address is the TCP peer's, unless that peer is a trusted proxy (the setting
``trusted_proxies``: the ingress controller's addresses): then it is the address the proxies
forwarded in ``X-Forwarded-For``, read from the right and skipping trusted hops, so a client
cannot pick its own bucket by sending the header itself (the left part is the client's to
write). From any other peer the header is ignored. uvicorn is started with its own
forwarded-header handling off (common.http.serve), so this is the only rule.

The strategy is a sliding-window counter: a counter per window, and the previous window's
count weighted by how much of it the sliding window still covers. No burst of twice the
limit at a window edge (as a fixed window allows), two small keys per caller. It is a Lua
function of our own rather than the ``limits`` library's strategies because it must run
inside a bigger script: :func:`caller_read` checks the session, counts the request and reads
the caller's cached views in one round trip, the hottest read path's only Redis call. The
keys carry the caller's hash tag (the user id, as the session key does), so on a Redis
Cluster a caller's session, counters and views share one slot. Window boundaries come from
the callers' clocks (replicas' clocks agree to well under a window).
"""

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from redis.asyncio import Redis
from starlette.types import Scope

from common.auth import (
    SESSION_VALID_LUA,
    AuthenticatedUser,
    bearer_token,
    caller_known,
    claimed_user,
    optional_user,
    remember_caller,
)
from common.context import SHARED
from common.errors import Problem, Unauthorized
from common.openapi import BEARER, raises
from common.redis import Script
from common.settings import ServiceSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# rate_limit(current, previous, limit, window_ms, elapsed_ms) -> {allowed, remaining, wait_ms}
# ``current`` counts this window, ``previous`` the one before; ``elapsed_ms`` is how far into
# this window we are. A limit below 0 means unlimited (still one call, no counting).
_SLIDING_WINDOW = """
local function rate_limit(current, previous, limit, window_ms, elapsed_ms)
  if limit < 0 then return {1, 0, 0} end
  local before = tonumber(redis.call('GET', previous) or '0')
  local now = tonumber(redis.call('GET', current) or '0')
  local used = math.floor(before * (window_ms - elapsed_ms) / window_ms) + now
  if used >= limit then
    local wait_ms = window_ms - elapsed_ms
    if now < limit and before > 0 then
      -- The previous window's weight must fall until one more request fits.
      wait_ms = math.ceil(window_ms * (1 - (limit - now) / before)) - elapsed_ms + 1
    end
    return {0, 0, math.max(wait_ms, 1)}
  end
  if redis.call('INCR', current) == 1 then
    redis.call('PEXPIRE', current, window_ms * 2)
  end
  return {1, limit - used - 1, 0}
end
"""

_HIT = (
    _SLIDING_WINDOW + "return rate_limit(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), "
    "tonumber(ARGV[3]))"
)

# KEYS: the session, the two counters, then the keys to read. ARGV: the user id the token
# names, then rate_limit's limit, window_ms, elapsed_ms.
# -> {0} when the session is not valid (common.auth's rule: none, expired, revoked, or a
#    forged id); {1, remaining, wait_ms} when over the limit; {2, remaining, values} otherwise.
_CALLER_READ = (
    SESSION_VALID_LUA
    + _SLIDING_WINDOW
    + """
if not session_valid(KEYS[1], ARGV[1]) then return {0} end
local verdict = rate_limit(KEYS[2], KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[3]),
                           tonumber(ARGV[4]))
if verdict[1] == 0 then return {1, verdict[2], verdict[3]} end
if #KEYS < 4 then return {2, verdict[2], {}} end
return {2, verdict[2], redis.call('MGET', unpack(KEYS, 4))}
"""
)


class TooManyRequests(Problem):
    status = 429


@dataclass(frozen=True)
class _Window:
    """Where a request falls: the counters of its window and how far into it it is."""

    current: str
    previous: str
    elapsed_ms: int


@dataclass(frozen=True)
class CallerRead:
    """What :func:`caller_read` found: the caller, and the values of the keys it asked for."""

    caller: AuthenticatedUser
    values: list[str | None]


class RateLimiter:
    """The limiter of one service process; created in the app's lifespan."""

    def __init__(
        self,
        redis: Redis,
        *,
        limits: dict[str, RateLimitItem],
        namespace: str,
        enabled: bool,
        trusted_proxies: tuple[IPNetwork, ...] = (),
    ) -> None:
        self.limits = limits
        self.namespace = namespace
        self.enabled = enabled
        self.trusted_proxies = trusted_proxies
        self._hit = Script(redis, _HIT)
        self._caller_read = Script(redis, _CALLER_READ)

    @classmethod
    def from_settings(cls, settings: ServiceSettings, redis: Redis) -> "RateLimiter":
        return cls(
            redis,
            limits={
                "auth": parse(settings.rate_limit.auth),
                "read": parse(settings.rate_limit.read),
                "write": parse(settings.rate_limit.write),
            },
            namespace=settings.service_name,
            enabled=settings.rate_limit.enabled,
            trusted_proxies=settings.trusted_proxies,
        )

    async def check(self, group: str, tag: str) -> None:
        """Count one request of the caller ``tag`` (a user id, or ``addr:<address>``); raise
        a 429 problem when it is over the limit. One round trip either way."""
        window = self._window(group, tag)
        allowed, remaining, wait_ms = await self._hit(
            keys=[window.current, window.previous],
            args=[*self._limit_args(group), window.elapsed_ms],
        )
        if not allowed:
            raise self._refusal(group, int(remaining), int(wait_ms))

    async def check_caller(
        self, token: str, group: str, keys_of: "KeysOf | None" = None
    ) -> CallerRead | None:
        """The caller behind ``token``, its request counted against ``group``, and the values
        of ``keys_of(caller id)``, in one round trip. None when the token has no session
        (nothing was counted); a 429 problem when the caller is over the limit."""
        claimed = claimed_user(token)
        if claimed is None:
            return None
        tag = str(claimed.id)
        keys = keys_of(claimed.id) if keys_of is not None else ()
        window = self._window(group, tag)
        reply = await self._caller_read(
            keys=[claimed.session_key, window.current, window.previous, *keys],
            args=[tag, *self._limit_args(group), window.elapsed_ms],
        )
        if reply[0] == 0:
            return None
        if reply[0] == 1:
            raise self._refusal(group, int(reply[1]), int(reply[2]))
        return CallerRead(claimed, [None if value is None else str(value) for value in reply[2]])

    def _limit_args(self, group: str) -> list[int]:
        item = self.limits[group]
        return [item.amount if self.enabled else -1, item.get_expiry() * 1000]

    def _window(self, group: str, tag: str) -> _Window:
        window_ms = self.limits[group].get_expiry() * 1000
        now_ms = int(time.time() * 1000)
        index, elapsed_ms = divmod(now_ms, window_ms)
        base = f"ratelimit:{{{tag}}}:{self.namespace}:{group}"
        return _Window(f"{base}:{index}", f"{base}:{index - 1}", elapsed_ms)

    def _refusal(self, group: str, remaining: int, wait_ms: int) -> TooManyRequests:
        item = self.limits[group]
        retry_after = max(1, math.ceil(wait_ms / 1000))
        return TooManyRequests(
            f"Rate limit of {item.amount} per {item.get_expiry()} s exceeded for {group!r}"
            f" requests; retry in {retry_after} s.",
            headers={
                "Retry-After": str(retry_after),
                "RateLimit-Limit": str(item.amount),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(retry_after),
            },
        )


KeysOf = Callable[[UUID], Sequence[str]]
"""The Redis keys a route wants read for the caller (the user id), e.g. its cached view.
They must carry the user's hash tag (``{<user id>}``), like the session and the counters."""


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


def address_bucket(address: str) -> str:
    """What an address is counted as: itself for IPv4, its /64 for IPv6 (one host usually
    holds a whole /64, so counting per full address would give it 2^64 buckets)."""
    parsed = _parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address


def _request_address(request: Request, trusted: tuple[IPNetwork, ...]) -> str:
    peer = request.client.host if request.client else None
    return address_bucket(client_address(peer, request.headers.getlist("x-forwarded-for"), trusted))


def rate_limit(group: str, *, by_address: bool = False) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: ``dependencies=[Depends(rate_limit("write"))]``. ``by_address``:
    always counted per client address, whatever token comes with the request (sign-up and
    login: a token must not buy a fresh bucket of password hashes)."""

    @raises(TooManyRequests)
    async def limited(request: Request) -> None:
        limiter = SHARED.of(request.app).rate_limiter
        if by_address:
            if limiter.enabled:
                await limiter.check(
                    group, f"addr:{_request_address(request, limiter.trusted_proxies)}"
                )
            return
        if not caller_known(request.scope) and await _counted_caller(request, group):
            return
        if not limiter.enabled:
            return
        user = await optional_user(request)  # known by now: None, or found by another limit
        if user is not None:
            tag = str(user.id)
        else:
            tag = f"addr:{_request_address(request, limiter.trusted_proxies)}"
        await limiter.check(group, tag)

    return limited


def caller_read(group: str, keys_of: KeysOf) -> Callable[[Request], Awaitable[CallerRead]]:
    """A route dependency for a signed-in caller's read: authentication, the ``group`` rate
    limit and the values of ``keys_of(caller id)`` in one Redis round trip (instead of a
    session lookup, a counter script and a read). The caller is then known to the request as
    :data:`common.auth.CurrentUser` would have found it."""

    @raises(Unauthorized, TooManyRequests, security=BEARER)
    async def read(request: Request) -> CallerRead:
        done = request.scope.pop(_CALLER_READ_KEY, None)
        if done is None or done[:2] != (group, keys_of):  # not read, or read for another use
            found = await _counted_caller(request, group, keys_of)
        elif isinstance(done[2], BaseException):
            raise done[2]
        else:
            found = done[2]
        if found is None:
            raise Unauthorized()
        return found

    return read


_CALLER_READ_KEY = "common.ratelimit.caller_read"


def remember_caller_read(
    scope: Scope, group: str, keys_of: KeysOf, outcome: CallerRead | BaseException | None
) -> None:
    """This request's caller read for ``group`` and ``keys_of`` is done (``common.fastread``,
    before routing): what it found, or what it raised. A route's :func:`caller_read` of the
    same group and keys takes it instead of reading again, so the request is counted once."""
    scope[_CALLER_READ_KEY] = (group, keys_of, outcome)


async def _counted_caller(
    request: Request, group: str, keys_of: KeysOf | None = None
) -> CallerRead | None:
    """The bearer token's session looked up and its request counted in one call
    (:meth:`RateLimiter.check_caller`); the caller, or None, is then the request's for
    ``CurrentUser``. None without a token or a session: nothing was counted."""
    token = bearer_token(request)
    if token is None:
        return None
    limiter = SHARED.of(request.app).rate_limiter
    found = await limiter.check_caller(token, group, keys_of)
    remember_caller(request.scope, found.caller if found is not None else None)
    return found


AUTH_LIMIT = Depends(rate_limit("auth", by_address=True))
READ_LIMIT = Depends(rate_limit("read"))
WRITE_LIMIT = Depends(rate_limit("write"))
