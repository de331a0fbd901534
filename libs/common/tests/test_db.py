"""The unit of work's database side against a real Postgres."""

import pytest
from sqlalchemy import text

from common.db import Database, create_engine
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
