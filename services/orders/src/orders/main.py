"""The orders API: app factory and the ``orders-api`` entry point."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.context import SHARED
from common.http import create_service_app, serve
from orders import admin_console, admin_router
from orders.admin_auth import LoginRequired, NoStoreMiddleware, login_redirect
from orders.admission import saga_backlog
from orders.context import ORDERS, OrdersContext
from orders.models import outbox
from orders.router import router
from orders.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with saga_backlog(SHARED.of(app).db, settings) as backlog:
            ORDERS.put(app, OrdersContext(settings, backlog))
            yield

    app = create_service_app(
        settings,
        title="orders",
        routers=[router, admin_router.router, admin_console.router],
        outbox_table=outbox,
        lifespan=lifespan,
    )
    app.add_exception_handler(LoginRequired, login_redirect)
    app.add_middleware(NoStoreMiddleware, prefix="/admin")
    return app


def run() -> None:
    serve("orders.main:create_app", Settings())
