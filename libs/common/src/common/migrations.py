"""The body of every service's Alembic ``env.py``: online, async, one schema per service.

Each service keeps its Alembic version table inside its own schema, creates that schema if
it is missing, and holds a Postgres advisory lock while migrating so that two migration jobs
started at once (two pods, a Job and a developer) run one after the other.

A migration runs while the previous release serves (a rolling upgrade): one that locks tables
the running code also locks can deadlock with it, and Postgres may pick the migration as the
one to roll back. Everything runs in one transaction, so nothing of it is left behind, and it
is run again after a short backoff, a few times (:data:`ATTEMPTS`).
"""

import asyncio
import sys

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from common.backoff import retrying
from common.unavailable import is_transaction_conflict

ATTEMPTS = 5  # a deadlock with the running release is rare; five in a row is not a race


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
    asyncio.run(_run_online_retrying(url, metadata, schema))


async def _run_online_retrying(url: str, metadata: MetaData, schema: str) -> None:
    """:func:`_run_online`, again after a deadlock or a serialization failure (rolled back
    whole: the migration is one transaction), up to :data:`ATTEMPTS` times."""

    def say(error: Exception, attempt: int, delay: float) -> None:
        print(
            f"[{schema}] migration rolled back by a lock conflict with the running code"
            f" (attempt {attempt} of {ATTEMPTS}); again in {delay:.1f} s: {error}",
            file=sys.stderr,
        )

    await retrying(
        lambda: _run_online(url, metadata, schema),
        attempts=ATTEMPTS,
        retryable=is_transaction_conflict,
        base=1.0,
        cap=5.0,
        before_retry=say,
    )
