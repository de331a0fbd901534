"""The notifications API: app factory and the ``notifications-api`` entry point."""

from fastapi import FastAPI

from common.http import create_service_app, serve
from notifications.models import outbox
from notifications.router import router
from notifications.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(), title="notifications", routers=[router], outbox_table=outbox
    )


def run() -> None:
    serve("notifications.main:create_app", Settings())
