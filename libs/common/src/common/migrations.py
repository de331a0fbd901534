"""The body of every service's Alembic ``env.py``: online, async, one schema per service.

Each service keeps its Alembic version table inside its own schema, creates that schema if
it is missing, and holds a Postgres advisory lock while migrating so that two migration jobs
started at once (two pods, a Job and a developer) run one after the other.
"""

import asyncio

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def _run_sync(connection: Connection, metadata: MetaData, schema: str) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:schema))"), {"schema": schema})
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=lambda name, type_, _parent: type_ != "schema" or name == schema,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str, metadata: MetaData, schema: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_sync, metadata, schema)
    finally:
        await engine.dispose()


def run_migrations(metadata: MetaData, schema: str, default_url: str) -> None:
    """Migrate ``schema``; the URL given to Alembic (tests set one) wins over the settings'."""
    if context.is_offline_mode():
        raise SystemExit("Offline (--sql) migrations are not supported; run them online.")
    url = context.config.get_main_option("sqlalchemy.url") or default_url
    asyncio.run(_run_online(url, metadata, schema))
