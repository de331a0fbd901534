"""The unit of work's transaction: one pooled connection, the driver and the ORM in it.

The hot path writes through ``uow.connection`` (asyncpg, no Session); cold paths use
``uow.session``, made on first use. Both must be one transaction, committed or rolled back
whole, and the connection must go back to the pool (or be thrown away when broken) however
the block ends.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import Database, NoTransaction, PoolBounds, UnitOfWorkClosed, create_engine
from common.redis import AfterCommit
from common.settings import ServiceSettings
from common.unavailable import is_unavailable

pytestmark = pytest.mark.integration


class Boom(Exception):
    pass


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A one-connection pool: a connection not given back fails the next transaction."""
    database = Database(
        create_engine(
            ServiceSettings.model_validate(
                {"database_url": database_url, "db": {"pool_timeout_seconds": 2}}
            ),
            pool=PoolBounds(1, 0),
        )
    )
    async with database.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE IF NOT EXISTS uow_rows (key text PRIMARY KEY)"))
        await connection.execute(text("TRUNCATE uow_rows"))
    yield database
    await database.dispose()


async def _keys(database: Database) -> list[str]:
    async with database.session() as session:
        rows = await session.execute(text("SELECT key FROM uow_rows ORDER BY key"))
        return list(rows.scalars())


async def test_the_driver_connection_alone_commits_without_a_session(database: Database) -> None:
    async with database.transaction() as uow:
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('driver')")
        made_a_session = uow._session is not None

    assert await _keys(database) == ["driver"]
    assert not made_a_session
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_the_session_made_on_first_use_shares_the_drivers_transaction(
    database: Database,
) -> None:
    async with database.transaction() as uow:
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('driver')")
        seen = await uow.session.execute(text("SELECT count(*) FROM uow_rows"))
        assert seen.scalar_one() == 1  # the driver's uncommitted row: one transaction
        await uow.session.execute(text("INSERT INTO uow_rows VALUES ('session')"))

    assert await _keys(database) == ["driver", "session"]
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def _insert_then_fail(database: Database, *, with_session: bool) -> None:
    async with database.transaction() as uow:
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('driver')")
        if with_session:
            await uow.session.execute(text("INSERT INTO uow_rows VALUES ('session')"))
        raise Boom


@pytest.mark.parametrize("with_session", [False, True])
async def test_an_exception_rolls_back_both_and_returns_the_connection(
    database: Database, with_session: bool
) -> None:
    with pytest.raises(Boom):
        await _insert_then_fail(database, with_session=with_session)

    assert await _keys(database) == []
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_session_touched_but_never_used_still_commits_the_drivers_writes(
    database: Database,
) -> None:
    """The session begins its transaction only at its first statement; an untouched one
    commits nothing, and the driver's writes must not be left to the pool's rollback."""
    async with database.transaction() as uow:
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('driver')")
        assert uow.session is not None

    assert await _keys(database) == ["driver"]


async def _insert_twice(database: Database) -> None:
    async with database.transaction() as uow:
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('same')")
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('same')")


async def test_a_failed_statement_rolls_back_and_the_next_transaction_works(
    database: Database,
) -> None:
    with pytest.raises(asyncpg.UniqueViolationError):
        await _insert_twice(database)

    async with database.transaction() as uow:
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('next')")
    assert await _keys(database) == ["next"]


async def _killed_mid_transaction(database: Database, killer: AsyncEngine) -> tuple[int, Exception]:
    """The backend's pid, and what the unit of work raised once its backend was killed."""
    try:
        async with database.transaction() as uow:
            pid = int(await uow.connection.fetchval("SELECT pg_backend_pid()"))
            async with killer.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
            await uow.connection.execute("INSERT INTO uow_rows VALUES ('lost')")
    except Exception as exc:
        return pid, exc
    raise AssertionError("a statement on a killed connection succeeded")


async def test_a_connection_killed_mid_transaction_is_discarded_not_pooled(
    database: Database, database_url: str
) -> None:
    killer = create_engine(ServiceSettings(database_url=database_url), pool=PoolBounds(1, 0))
    try:
        pid, error = await _killed_mid_transaction(database, killer)
    finally:
        await killer.dispose()
    assert is_unavailable(error)  # a 503 for a client, a pause for the bus, never a 500

    async with database.transaction() as uow:  # a fresh connection, not the dead one
        assert await uow.connection.fetchval("SELECT pg_backend_pid()") != pid
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('after')")
    assert await _keys(database) == ["after"]


async def test_a_unit_of_work_cannot_be_used_after_its_transaction(database: Database) -> None:
    async with database.transaction() as uow:
        pass

    with pytest.raises(UnitOfWorkClosed):
        uow.connection  # noqa: B018
    with pytest.raises(UnitOfWorkClosed):
        uow.session  # noqa: B018


async def test_autocommit_commits_each_statement_with_no_transaction(database: Database) -> None:
    async with database.autocommit() as connection:
        await connection.execute("INSERT INTO uow_rows VALUES ('alone')")
        assert not connection.is_in_transaction()
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute("INSERT INTO uow_rows VALUES ('alone')")
        await connection.execute("INSERT INTO uow_rows VALUES ('after a failure')")

    assert await _keys(database) == ["after a failure", "alone"]
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@asynccontextmanager
async def _outside_a_transaction(
    database: Database, kind: str
) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose statements commit on their own: ``autocommit()``'s, or a
    single-statement unit of work's."""
    if kind == "autocommit":
        async with database.autocommit() as connection:
            yield connection
    else:
        async with database.single_statement() as uow:
            yield uow.connection


async def _interrupted(database: Database, kind: str) -> int:
    """The backend whose statement a timeout cancelled mid-flight."""
    pid = 0
    try:
        async with asyncio.timeout(0.2), _outside_a_transaction(database, kind) as connection:
            pid = int(await connection.fetchval("SELECT pg_backend_pid()"))
            await connection.execute("SELECT pg_sleep(5)")
    except TimeoutError:
        return pid
    raise AssertionError("pg_sleep(5) finished within 0.2 s")


@pytest.mark.parametrize("kind", ["autocommit", "single_statement"])
async def test_a_statement_cancelled_mid_flight_discards_its_connection(
    database: Database, kind: str
) -> None:
    pid = await _interrupted(database, kind)

    async with _outside_a_transaction(database, kind) as connection:  # a fresh one
        assert await connection.fetchval("SELECT pg_backend_pid()") != pid


async def test_a_single_statement_unit_of_work_commits_each_statement_with_no_transaction(
    database: Database,
) -> None:
    ran_after: list[bool] = []
    async with database.single_statement() as uow:
        assert not uow.connection.is_in_transaction()
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('one')")
        assert await _keys_elsewhere(database) == ["one"]  # committed already, on its own
        uow.after_commit(lambda: ran_after.append(True))

    assert ran_after == [True]
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def _keys_elsewhere(database: Database) -> list[str]:
    """The committed keys, read on a connection of its own (the pool has one, in use)."""
    url = database.engine.url.set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        return [row[0] for row in await connection.fetch("SELECT key FROM uow_rows ORDER BY key")]
    finally:
        await connection.close()


async def test_a_single_statement_unit_of_work_refuses_what_needs_a_commit(
    database: Database,
) -> None:
    """The ORM session and publish() write at COMMIT, which this unit of work has none of."""
    async with database.single_statement() as uow:
        with pytest.raises(NoTransaction):
            uow.session  # noqa: B018
        with pytest.raises(NoTransaction, match="write them in the statement"):
            uow.publish(object())  # type: ignore[arg-type]
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def _single_statement_then_fail(database: Database, ran_after: list[bool]) -> None:
    async with database.single_statement() as uow:
        await uow.connection.execute("INSERT INTO uow_rows VALUES ('kept')")
        uow.after_commit(lambda: ran_after.append(True))
        raise Boom


async def test_a_single_statement_unit_of_work_that_raises_keeps_its_statement(
    database: Database,
) -> None:
    ran_after: list[bool] = []
    with pytest.raises(Boom):
        await _single_statement_then_fail(database, ran_after)

    assert await _keys(database) == ["kept"]  # its own commit: nothing to roll back
    assert ran_after == []  # but the block failed: no after-commit work
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def _queue_then_fail(database: Database, commands: AfterCommit) -> None:
    async with database.transaction() as uow:
        uow.after_commit_redis(commands)
        raise Boom


async def test_redis_commands_run_once_committed_never_after_a_rollback(
    database: Database, redis: Redis
) -> None:
    key = f"uow-test:{{{uuid.uuid4().hex}}}"  # one slot on a cluster
    reported: list[bool] = []
    with pytest.raises(Boom):
        await _queue_then_fail(database, AfterCommit(redis, lambda pipe: pipe.incr(key)))

    async with database.transaction() as uow:
        count = AfterCommit(redis, lambda pipe: pipe.incr(key), done=reported.append)
        uow.after_commit_redis(count)
        uow.after_commit_redis(count)
        wrong = AfterCommit(redis, lambda pipe: pipe.lpush(key, "x"), done=reported.append)
        uow.after_commit_redis(wrong)  # WRONGTYPE: reported, logged, the commit stands
        assert await redis.get(key) is None  # nothing before the commit

    assert await redis.get(key) == "2"  # the rolled-back one never ran
    assert reported == [True, True, False]


@asynccontextmanager
async def _connection_of(database: Database, kind: str) -> AsyncIterator[asyncpg.Connection]:
    """The connection of a unit of work (``transaction``), or one outside a transaction."""
    if kind == "transaction":
        async with database.transaction() as uow:
            yield uow.connection
    else:
        async with _outside_a_transaction(database, kind) as connection:
            yield connection


async def _backend_alive(database: Database, pid: int) -> bool:
    async with database.autocommit() as connection:
        query = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)"
        return bool(await connection.fetchval(query, pid))


@pytest.mark.parametrize("kind", ["transaction", "single_statement", "autocommit"])
async def test_an_overflow_connection_given_back_to_a_full_pool_is_closed_cleanly(
    database_url: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``pool_size`` a connection given back is closed, an await on the driver: it must
    run where SQLAlchemy can await (its greenlet), not fail, be logged, and leave the Postgres
    session open (the bench's overflow churn at 100 sagas/s did)."""
    settings = ServiceSettings.model_validate({"database_url": database_url})
    database = Database(create_engine(settings, pool=PoolBounds(1, 1)))
    both_open = asyncio.Barrier(2)

    async def hold_one() -> int:
        async with _connection_of(database, kind) as connection:
            await both_open.wait()
            return int(await connection.fetchval("SELECT pg_backend_pid()"))

    try:
        with caplog.at_level("WARNING"):
            pids = await asyncio.gather(hold_one(), hold_one())
        pool = database.engine.pool
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)  # type: ignore[attr-defined]
        problems = [r.getMessage() for r in caplog.records if r.levelname in {"WARNING", "ERROR"}]
        assert problems == []
        alive = [await _backend_alive(database, pid) for pid in pids]
        assert sorted(alive) == [False, True]  # one kept, the overflow one closed
    finally:
        await database.dispose()
