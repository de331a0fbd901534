"""The orders API: app factory and the ``orders-api`` entry point."""

from fastapi import FastAPI

from common.http import create_service_app, serve
from orders import admin_console, admin_router
from orders.admin_auth import LoginRequired, NoStoreMiddleware, login_redirect
from orders.admission import backlog_lifespan
from orders.models import outbox
from orders.router import router
from orders.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app(
        settings or Settings(),
        title="orders",
        routers=[router, admin_router.router, admin_console.router],
        outbox_table=outbox,
        lifespan=backlog_lifespan,
    )
    app.add_exception_handler(LoginRequired, login_redirect)
    app.add_middleware(NoStoreMiddleware, prefix="/admin")
    return app


def run() -> None:
    serve("orders.main:create_app", Settings())
