"""The users API: app factory and the ``users-api`` entry point."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.context import SHARED
from common.http import create_service_app, serve
from users.cache import UserCache
from users.context import USERS, UsersContext
from users.models import outbox
from users.passwords import Passwords
from users.router import FAST_READS, router
from users.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache = UserCache(SHARED.of(app).redis, settings.user_cache_ttl_seconds)
        USERS.put(app, UsersContext(settings, Passwords(settings), cache))
        yield

    return create_service_app(
        settings,
        title="users",
        routers=[router],
        outbox_table=outbox,
        lifespan=lifespan,
        fast_reads=FAST_READS,
    )


def run() -> None:
    serve("users.main:create_app", Settings())
