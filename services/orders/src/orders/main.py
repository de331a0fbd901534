"""The orders API: app factory and the ``orders-api`` entry point."""

from fastapi import FastAPI

from common.http import create_service_app, serve
from orders.models import outbox
from orders.router import router
from orders.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(), title="orders", routers=[router], outbox_table=outbox
    )


def run() -> None:
    serve("orders.main:create_app", Settings())
