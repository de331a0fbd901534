"""The notifications API: app factory and the ``notifications-api`` entry point."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.context import SHARED
from common.http import create_service_app, serve
from notifications.context import NOTIFICATIONS, NotificationsContext
from notifications.live import LiveHub, on_shutdown_signal
from notifications.models import outbox
from notifications.router import router
from notifications.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # No key: start-up fails (secretbox.MissingSecretKey), the process exits. Not in
        # the factory: building the app for its OpenAPI document needs no key.
        box = settings.secret_box()
        hub = LiveHub(SHARED.of(app).redis, queue_size=settings.stream.queue_size)
        NOTIFICATIONS.put(app, NotificationsContext(settings, box, hub))
        await hub.start()
        # Streams never end by themselves, and uvicorn runs the lifespan's shutdown only
        # after every response has ended: so they end when the signal arrives.
        restore_signals = on_shutdown_signal(hub.shutdown)
        try:
            yield
        finally:
            restore_signals()
            await hub.stop()

    return create_service_app(
        settings, title="notifications", routers=[router], outbox_table=outbox, lifespan=lifespan
    )


def run() -> None:
    serve("notifications.main:create_app", Settings())
