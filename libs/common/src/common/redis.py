"""Redis client factory. One pooled client per process, created in the lifespan."""

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.settings import ServiceSettings


def retry_options() -> dict[str, Any]:
    """Retry a command once when its pooled connection turns out to be dead.

    After a Redis restart every connection in the pool is stale: without this, the first
    command on each fails, and a client sees 503s for seconds after Redis is back. One retry
    on a fresh connection is enough, and it never doubles a command: a command that failed
    with a connection error was not answered, and the bus's own writes are idempotent or
    guarded by the inbox.
    """
    return {
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    }


def create_redis(settings: ServiceSettings) -> Redis:
    """A client whose every call has a timeout, so a stuck Redis never hangs a request."""
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        max_connections=settings.redis_max_connections,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
        **retry_options(),
    )
