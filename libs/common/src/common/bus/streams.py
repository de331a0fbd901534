"""Stream keys, consumer groups and trimming.

Keys: every bus key starts with ``settings.bus.stream_prefix`` (``bus:``), so a message
whose contract says ``STREAM = "users.events"`` travels on ``bus:users.events``, and dead
letters live on ``bus:dead-letters``. A different prefix isolates another environment (or a
test) sharing the same Redis.

Trimming: a stream is trimmed with ``XTRIM MINID`` to the oldest entry that some group may
still need: for each group, its smallest pending (delivered, unacknowledged) id, or else the
entry after its last-delivered id. The bound is computed and applied in one Lua script, so no
consumer can read or acknowledge in between; trimming therefore never drops an entry a group
has not acknowledged. On top of that the newest ``stream.min_retention`` entries and those
younger than ``stream.min_retention_seconds`` are always kept, for operators and debugging.
A stream with no group at all is left alone: nobody has consumed it yet.

A group that does not exist cannot hold entries back, so before each trim every group that a
contract on the stream names (``Message.CONSUMERS``) is created (from ``0``) if missing.
After a Redis restart the first worker back would otherwise trim past what the groups of
the workers not back yet have never read.
"""

import logging
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common.contracts import groups_reading
from common.redis import Script
from common.settings import ServiceSettings

logger = logging.getLogger("common.bus.streams")

DEAD_LETTERS = "dead-letters"


def stream_key(prefix: str, stream: str) -> str:
    """The Redis key of a contract stream: ``bus:`` + ``Message.STREAM``."""
    return f"{prefix}{stream}"


def dead_letter_key(prefix: str) -> str:
    return f"{prefix}{DEAD_LETTERS}"


def text(value: Any) -> str:
    """Redis replies are str or bytes depending on the client's ``decode_responses``."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


async def ensure_group(redis: Redis, key: str, group: str) -> None:
    """Create ``group`` on ``key`` reading from the start (``0``); the stream too if needed.

    Starting at ``0`` rather than ``$`` means a service deployed after its producer still
    gets every message the stream holds.
    """
    try:
        await redis.xgroup_create(key, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


# KEYS[1]: stream. ARGV[1]: newest entries always kept. ARGV[2]: keep entries younger than
# this many milliseconds. Returns {minid, trimmed} or nil when nothing may be trimmed.
_TRIM_SCRIPT = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function after(id)
  local ms, seq = parse(id)
  return string.format('%d-%d', ms, seq + 1)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return nil end
local minid = nil
for _, group in ipairs(groups) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  local needed = after(last)
  local pending = redis.call('XPENDING', KEYS[1], name)
  if pending[1] > 0 and less(pending[2], needed) then needed = pending[2] end
  if minid == nil or less(needed, minid) then minid = needed end
end
local keep = tonumber(ARGV[1])
if keep > 0 then
  if redis.call('XLEN', KEYS[1]) <= keep then return nil end
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', keep)
  local oldest_kept = newest[#newest][1]
  if less(oldest_kept, minid) then minid = oldest_kept end
end
local keep_ms = tonumber(ARGV[2])
if keep_ms > 0 then
  local now = redis.call('TIME')
  local floor = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - keep_ms
  local floor_id = string.format('%d-0', floor)
  if less(floor_id, minid) then minid = floor_id end
end
return {minid, redis.call('XTRIM', KEYS[1], 'MINID', minid)}
"""


class StreamTrimmer:
    """Trims the given streams so they stay bounded without losing unacknowledged entries."""

    def __init__(self, redis: Redis, keys: Iterable[str], *, settings: ServiceSettings) -> None:
        self.redis = redis
        self.keys = tuple(sorted(set(keys)))
        self.prefix = settings.bus.stream_prefix
        self.min_retention = settings.stream.min_retention
        self.min_retention_ms = int(settings.stream.min_retention_seconds * 1000)
        self._script = Script(redis, _TRIM_SCRIPT)

    async def trim(self, key: str) -> int:
        """Trim one stream now; returns how many entries were removed."""
        for group in groups_reading(key.removeprefix(self.prefix)):
            await ensure_group(self.redis, key, group)
        result = await self._script(keys=[key], args=[self.min_retention, self.min_retention_ms])
        if not result:
            return 0
        trimmed = int(result[1])
        if trimmed:
            logger.debug(
                "stream trimmed", extra={"stream": key, "minid": text(result[0]), "n": trimmed}
            )
        return trimmed

    async def trim_all(self) -> dict[str, int]:
        return {key: await self.trim(key) for key in self.keys}
