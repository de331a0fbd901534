"""Redis client factory. One pooled client per process, created in the lifespan."""

from redis.asyncio import Redis

from common.settings import ServiceSettings


def create_redis(settings: ServiceSettings) -> Redis:
    """A client whose every call has a timeout, so a stuck Redis never hangs a request."""
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        max_connections=settings.redis_max_connections,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )
