"""The users worker handles exactly what the contracts say the users group consumes."""

from redis.asyncio import Redis

from common.testing.contracts import assert_handles_what_contracts_name
from users.cache import UserCache
from users.consumers import handlers


def test_the_worker_handles_what_the_contracts_name() -> None:
    cache = UserCache(Redis(), ttl_seconds=60)  # never connects: the map is only built
    assert_handles_what_contracts_name("users", handlers(cache))
