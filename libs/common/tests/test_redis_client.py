"""The process's Redis client: no PING before commands, and a stale connection recovered."""

import pytest
from redis.asyncio import Redis

from common.redis import Script, create_redis
from common.settings import ServiceSettings

pytestmark = pytest.mark.integration


async def test_no_health_check_ping_before_a_command(redis_url: str) -> None:
    redis = create_redis(ServiceSettings(redis={"url": redis_url}))
    try:
        assert redis.connection_pool.connection_kwargs["health_check_interval"] == 0
    finally:
        await redis.aclose()


async def test_a_pooled_connection_the_server_closed_is_replaced_by_the_retry(
    redis_url: str,
) -> None:
    """What a health check would have caught (a Redis restart, its idle timeout): the
    command fails on the dead connection and is retried once on a fresh one."""
    redis = create_redis(ServiceSettings(redis={"url": redis_url}))
    try:
        await redis.set("test:redis-client:stale", "1", ex=60)
        client_id = await redis.client_id()  # the one pooled connection
        other = Redis.from_url(redis_url)  # a connection of its own, outside the pool
        try:
            await other.client_kill_filter(_id=str(client_id))
        finally:
            await other.aclose()
        assert await redis.get("test:redis-client:stale") == "1"
        assert await redis.client_id() != client_id
    finally:
        await redis.aclose()


async def test_a_script_runs_by_its_sha_and_again_after_the_server_forgot_it(
    redis_url: str,
) -> None:
    """EVALSHA first; after SCRIPT FLUSH (a Redis restarted empty) the NOSCRIPT reply is
    answered with EVAL, which caches the script again for the next EVALSHA."""
    redis = create_redis(ServiceSettings(redis={"url": redis_url}))
    script = Script(redis, "return {KEYS[1], ARGV[1]}")
    try:
        await redis.script_flush()
        assert await script(["test:script:key"], ["one"]) == ["test:script:key", "one"]
        assert await redis.script_exists(script.sha) == [True]
        await redis.script_flush()
        assert await script(["test:script:key"], [2]) == ["test:script:key", "2"]
        assert await redis.script_exists(script.sha) == [True]
    finally:
        await redis.aclose()
