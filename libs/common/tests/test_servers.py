"""The private servers every drill starts (common.testing.servers), on throwaway ports."""

import shutil

import asyncpg
import pytest
from redis.asyncio import Redis

from common.testing.cluster import free_port_run
from common.testing.plugin import worker_port
from common.testing.servers import (
    PostgresServer,
    RedisServer,
    ServerError,
    port_open,
    private_directory,
)

pytestmark = pytest.mark.integration


async def test_a_private_postgres_starts_keeps_its_data_across_a_restart_and_stops() -> None:
    port = free_port_run(worker_port(17400), 1)
    server = PostgresServer(private_directory("test-pg") / "pg", port)
    server.initialise()
    server.start()
    try:
        connection = await asyncpg.connect(server.url())
        await connection.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        await connection.close()
        with pytest.raises(ServerError, match="already taken"):
            server.start()
        server.restart()
        connection = await asyncpg.connect(server.url())
        assert await connection.fetchval("SELECT n FROM kept") == 7
        await connection.close()
    finally:
        server.stop()
        shutil.rmtree(server.data.parent, ignore_errors=True)
    assert not port_open(port)


async def test_a_private_redis_comes_back_empty_after_a_restart() -> None:
    port = free_port_run(worker_port(17440), 1)
    server = RedisServer(private_directory("test-redis"), port)
    server.start()
    try:
        client = Redis(port=port)
        await client.set("lost", "on restart")
        server.restart()
        assert await client.get("lost") is None
        await client.aclose()
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
    assert not server.pings()
