"""PostgreSQL access: one pooled async engine per process and a unit of work.

Every service owns one Postgres schema. Its tables hang off a :class:`MetaData` built by
:func:`schema_metadata`, which also fixes the constraint naming convention so that Alembic
migrations get stable, predictable names.

Business code never commits. A :class:`Database` hands out units of work
(``async with db.transaction() as session``) that commit on success and roll back on error.

Two small hooks let the event bus ride on units of work without business code noticing:
``session_info`` (copied into every new session's ``info``: it is how ``bus.publish`` finds
its outbox table) and commit listeners (called after a unit of work commits: they wake the
outbox relay, so a message leaves within milliseconds of its transaction's commit).
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from common.settings import ServiceSettings

logger = logging.getLogger("common.db")

CommitListener = Callable[[AsyncSession], None]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """MetaData for one service's schema, with the shared naming convention."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    """The process's one engine; pool sizes and timeouts come from settings."""
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.db_pool_timeout_seconds,
            "command_timeout": settings.db_statement_timeout_ms / 1000 or None,
            "server_settings": {
                "application_name": settings.service_name,
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )


class Database:
    """Owns the engine and hands out units of work."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        # Copied into each new session's ``info``; e.g. the bus binds its outbox table here.
        self.session_info: dict[str, Any] = {}
        self._commit_listeners: list[CommitListener] = []

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call ``listener(session)`` after each unit of work of :meth:`transaction` commits.

        Listeners run in the committing task, after the commit, so they must be quick and
        synchronous (set an event, not do I/O). An exception in one is logged and swallowed:
        the transaction has committed, and its caller must not be told otherwise.
        """
        self._commit_listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        if listener in self._commit_listeners:
            self._commit_listeners.remove(listener)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commit when the block succeeds, roll back when it raises."""
        async with self.sessions(info=dict(self.session_info)) as session:
            async with session.begin():
                yield session
            for listener in tuple(self._commit_listeners):
                try:
                    listener(session)
                except Exception:
                    logger.exception("commit listener failed")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only; nothing is committed."""
        async with self.sessions(info=dict(self.session_info)) as session:
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
