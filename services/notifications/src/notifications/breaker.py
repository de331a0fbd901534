"""A circuit breaker per webhook endpoint, its state shared by every worker through Redis.

closed --N consecutive failures--> open --cool-down--> half-open --probe ok--> closed
                                     ^                     |
                                     +----probe failed-----+

* Key: the endpoint is the webhook (its id), not its URL: two customers who register the
  same receiver each have their own breaker, so one cannot suspend the other's deliveries
  by failing on purpose. Its state lives in the hash
  ``notifications:breaker:{<sha256(endpoint)[:32]>}`` (``state``, ``failures``, ``open_until`` in
  Redis-clock milliseconds), refreshed to a TTL on every write so idle endpoints leave no key.
* Half-open is not stored: it is "open and the cool-down is over". Then exactly one caller
  wins the probe lock (``SET <key>:probe <token> NX PX <lease>``) and makes the one probe
  attempt; everyone else is told to wait. The lease bounds how long a dead worker's probe
  can hold the endpoint half-open.
* Both transitions are Lua scripts reading the Redis clock (``TIME``), so concurrent workers
  on different machines agree on the state and on time.

While open, callers get a ``retry_in`` and do not attempt: deliveries wait, they are neither
dropped nor counted as failed attempts.
"""

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter
from redis.asyncio import Redis

from common.redis import Script

logger = logging.getLogger(__name__)

BREAKER_TRANSITIONS = Counter(
    "notifications_webhook_breaker_transitions_total",
    "Circuit breaker state changes of webhook endpoints",
    ["from_state", "to_state"],
)

KEY_PREFIX = "notifications:breaker:"
KEY_TTL_SECONDS = 7 * 24 * 3600

# KEYS: state hash, probe lock. ARGV: probe token, probe lease ms, wait while probing ms.
# -> {"closed", 0} | {"probe", 0} | {"open", ms to wait}
_ADMIT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'open' then return {'closed', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if now < open_until then return {'open', open_until - now} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'probe', 0} end
return {'open', tonumber(ARGV[3])}
"""

# KEYS: state hash, probe lock. ARGV: 'success'|'failure', probe token or '', threshold,
# cool-down ms, key TTL s. -> the transition made: '' | 'closed>open' | 'half_open>closed'
# | 'half_open>open'
_RECORD = """
local is_probe = ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2]
if is_probe then redis.call('DEL', KEYS[2]) end
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local transition = ''
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'success' then
  if is_probe then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
    transition = 'half_open>closed'
  elseif state ~= 'open' then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
  end
else
  if is_probe then
    redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + tonumber(ARGV[4]))
    transition = 'half_open>open'
  elseif state ~= 'open' then
    local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
    if failures >= tonumber(ARGV[3]) then
      redis.call('HSET', KEYS[1], 'state', 'open', 'failures', 0,
                 'open_until', now + tonumber(ARGV[4]))
      transition = 'closed>open'
    else
      redis.call('HSET', KEYS[1], 'state', 'closed')
    end
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return transition
"""


@dataclass(frozen=True)
class Admission:
    """``allowed``: attempt now (``probe_token`` set when this is the half-open probe).
    Otherwise wait ``retry_in`` seconds."""

    allowed: bool
    probe_token: str | None = None
    retry_in: float = 0.0


def endpoint_key(endpoint: str) -> str:
    """The state hash's key; its hash tag puts the probe lock (``<key>:probe``), which the
    scripts touch with it, in the same Redis Cluster slot."""
    return KEY_PREFIX + "{" + hashlib.sha256(endpoint.encode()).hexdigest()[:32] + "}"


class CircuitBreaker:
    def __init__(
        self,
        redis: Redis,
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        probe_lease_seconds: float,
        probe_wait_seconds: float,
    ) -> None:
        self.redis = redis
        self.failure_threshold = failure_threshold
        self.cooldown_ms = max(1, round(cooldown_seconds * 1000))
        self.probe_lease_ms = max(1, round(probe_lease_seconds * 1000))
        self.probe_wait_ms = max(1, round(probe_wait_seconds * 1000))
        self._admit = Script(redis, _ADMIT)
        self._record = Script(redis, _RECORD)

    async def admit(self, endpoint: str) -> Admission:
        key = endpoint_key(endpoint)
        token = uuid.uuid4().hex
        verdict, wait_ms = await self._admit(
            keys=[key, key + ":probe"], args=[token, self.probe_lease_ms, self.probe_wait_ms]
        )
        if verdict == "closed":
            return Admission(True)
        if verdict == "probe":
            self._transition(endpoint, "open>half_open")
            return Admission(True, probe_token=token)
        return Admission(False, retry_in=int(wait_ms) / 1000)

    async def record(self, endpoint: str, *, success: bool, probe_token: str | None) -> None:
        key = endpoint_key(endpoint)
        transition = await self._record(
            keys=[key, key + ":probe"],
            args=[
                "success" if success else "failure",
                probe_token or "",
                self.failure_threshold,
                self.cooldown_ms,
                KEY_TTL_SECONDS,
            ],
        )
        if transition:
            self._transition(endpoint, str(transition))

    async def state(self, endpoint: str) -> Literal["closed", "open", "half_open"]:
        """For operators and tests: the endpoint's state as the next caller would see it."""
        state, open_until = await self.redis.hmget(endpoint_key(endpoint), ["state", "open_until"])
        if state != "open":
            return "closed"
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return "open" if now_ms < int(open_until or 0) else "half_open"

    def _transition(self, endpoint: str, transition: str) -> None:
        from_state, _, to_state = transition.partition(">")
        BREAKER_TRANSITIONS.labels(from_state, to_state).inc()
        log = logger.warning if to_state == "open" else logger.info
        log(
            "webhook circuit breaker " + to_state.replace("_", "-"),
            extra={"endpoint": endpoint_key(endpoint), "from": from_state, "to": to_state},
        )
