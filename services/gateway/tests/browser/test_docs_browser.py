"""The gateway's /docs in a real browser with the network cut: Debian's Chromium, driven by
Playwright, may fetch nothing but loopback. Swagger UI's assets come from the gateway itself
(common.docs), and the merged document lists the services' operations and the gateway's own.
"""

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Route, async_playwright, expect

from common.docs import install_docs
from common.testing.chromium import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: install Debian's chromium (apt-get install -y chromium)",
    ),
]


def stand_in_service(name: str) -> FastAPI:
    """A service as the gateway sees it: its public routes and its own offline /docs."""
    app = FastAPI(title=name, docs_url=None, redoc_url=None)

    @app.get(f"/{name}/{{item_id}}", operation_id=f"{name}_get", tags=[name])
    async def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    install_docs(app)
    return app


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


async def offline_page_operations(browser: Browser, url: str) -> tuple[list[str], list[str]]:
    """Load ``url`` with every non-loopback request refused; the operation paths Swagger UI
    rendered, and the URLs it was refused."""
    refused: list[str] = []

    async def only_loopback(route: Route) -> None:
        if route.request.url.startswith(("http://127.0.0.1:", "data:")):
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort("internetdisconnected")

    page = await browser.new_page()
    try:
        await page.route("**/*", only_loopback)
        await page.goto(url)
        operations = page.locator(".opblock-summary-path")
        await expect(operations.first).to_be_visible(timeout=20_000)
        return await operations.all_inner_texts(), refused
    finally:
        await page.close()


async def test_gateway_docs_render_offline_with_every_services_operations(
    loopback, browser: Browser
):
    async with (
        loopback.serving(stand_in_service("users")) as users,
        loopback.serving(stand_in_service("orders")) as orders,
        loopback.serving(stand_in_service("notifications")) as notifications,
        loopback.gateway(
            users_url=users, orders_url=orders, notifications_url=notifications
        ) as gateway,
    ):
        paths, refused = await offline_page_operations(browser, f"{gateway.url}/docs")
        own_paths, own_refused = await offline_page_operations(browser, f"{users}/docs")

    normalised = {path.replace("\u200b", "") for path in paths}
    assert {
        "/users/{item_id}",
        "/orders/{item_id}",
        "/notifications/{item_id}",
        "/me/overview",
    } <= normalised
    assert "/users/{item_id}" in {path.replace("\u200b", "") for path in own_paths}
    assert refused == own_refused == []  # nothing was even asked of the internet
