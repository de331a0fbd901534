"""The unit of work's database side against a real Postgres."""

import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from common.db import (
    ConnectionBudgetExceeded,
    Database,
    PoolBounds,
    check_connection_budget,
    create_engine,
)
from common.settings import ServiceSettings

pytestmark = pytest.mark.integration


async def test_a_read_session_whose_server_connection_died_closes_without_raising(
    database_url: str,
) -> None:
    """Postgres restarted between a read and the end of its request: closing the session
    (a rollback on a dead connection) must not raise, or a request dependency's teardown
    would make the server drop the client's connection after the answer."""
    database = Database(create_engine(ServiceSettings(database_url=database_url)))
    try:
        async with database.session() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with database.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                await other.commit()
        # The pool threw the dead connection away; the next read works.
        async with database.session() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


async def _pooled_backend_killed(database_url: str, *, idle_ping_seconds: float) -> Database:
    """A one-connection pool whose connection was used, returned, then killed on the server
    (what a Postgres or PgBouncer restart does to every pooled connection)."""
    database = Database(
        create_engine(
            ServiceSettings(database_url=database_url),
            pool=PoolBounds(1, 0),
            idle_ping_seconds=idle_ping_seconds,
        )
    )
    async with database.engine.connect() as connection:
        pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    killer = create_engine(ServiceSettings(database_url=database_url), pool=PoolBounds(1, 0))
    try:
        async with killer.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    finally:
        await killer.dispose()
    return database


async def test_a_pooled_connection_that_died_while_idle_is_replaced_before_use(
    database_url: str,
) -> None:
    database = await _pooled_backend_killed(database_url, idle_ping_seconds=0)
    try:
        async with database.session() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


async def test_a_connection_in_steady_use_is_not_pinged_so_its_death_is_met(
    database_url: str,
) -> None:
    """Why the ping waits for idleness: a connection handed out again within the threshold
    gets no round trip first, and a dead one is met by the statement itself (a 503 upstream,
    after which the pool replaces it)."""
    database = await _pooled_backend_killed(database_url, idle_ping_seconds=60)
    try:
        with pytest.raises(DBAPIError):
            async with database.session() as session:
                await session.execute(text("SELECT 1"))
        async with database.session() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


async def _server_limits(database: Database) -> tuple[int, int]:
    async with database.engine.connect() as connection:
        limit = int((await connection.execute(text("SHOW max_connections"))).scalar_one())
        reserved = (await connection.execute(text("SHOW superuser_reserved_connections"))).one()
    return limit, int(reserved[0])


async def test_a_pool_that_fits_the_free_connections_starts(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.db")  # the log line is part of the check
    database = Database(create_engine(ServiceSettings(database_url=database_url)))
    try:
        await check_connection_budget(database.engine, PoolBounds(2, 1), process="orders-api")
    finally:
        await database.dispose()
    [checked] = [r for r in caplog.records if r.getMessage() == "connection budget checked"]
    assert checked.__dict__["component"] == "orders-api"
    assert checked.__dict__["pool_most"] == 3


async def test_a_pool_bigger_than_the_server_allows_refuses_to_start_and_says_why(
    database_url: str,
) -> None:
    database = Database(create_engine(ServiceSettings(database_url=database_url)))
    try:
        limit, reserved = await _server_limits(database)
        # Even on an otherwise empty server, this pool could not open every connection.
        too_big = PoolBounds(limit - reserved, 1, ("worker_db_pool_size", "worker_db_max_overflow"))
        with pytest.raises(ConnectionBudgetExceeded) as refused:
            await check_connection_budget(
                database.engine, too_big, process="orders-worker", prefix="ORDERS_"
            )
    finally:
        await database.dispose()
    message = str(refused.value)
    assert message.startswith(f"orders-worker: its Postgres pool may open {too_big.most} ")
    assert f"ORDERS_WORKER_DB_POOL_SIZE={limit - reserved}" in message
    assert f"max_connections {limit}, {reserved} reserved for superusers" in message


async def test_a_pool_behind_a_transaction_pooler_is_not_held_to_the_servers_budget(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its connections are the pooler's clients: thousands may share a few server ones."""
    caplog.set_level(logging.INFO, logger="common.db")
    database = Database(create_engine(ServiceSettings(database_url=database_url)))
    try:
        await check_connection_budget(
            database.engine, PoolBounds(10_000, 0), process="orders-api", behind_pooler=True
        )
    finally:
        await database.dispose()
    assert any("behind a connection pooler" in r.getMessage() for r in caplog.records)


async def test_an_unreachable_server_is_not_checked(unused_tcp_port: int) -> None:
    """Started during an outage, a process starts and reports it in /readyz, as ever."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{unused_tcp_port}/nothing"
    database = Database(
        create_engine(ServiceSettings(database_url=url, db={"pool_timeout_seconds": 2}))
    )
    try:
        await check_connection_budget(database.engine, PoolBounds(10_000, 0), process="orders-api")
    finally:
        await database.dispose()


def test_workers_have_smaller_default_pools_that_fit_two_replicas_in_100() -> None:
    settings = ServiceSettings()
    api, worker = PoolBounds.api(settings), PoolBounds.worker(settings)
    assert worker.most < api.most
    assert worker.size >= settings.bus.batches_in_flight  # each batch holds a connection
    services, replicas, operators = 3, 2, 10
    assert services * replicas * (api.most + worker.most) + operators <= 100
