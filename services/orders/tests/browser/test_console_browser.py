"""The operator console in a real browser: Debian's Chromium driven by Playwright, against a real
uvicorn server of the orders app on the test database and Redis.

An operator signs in, finds a timed-out saga by filter, opens its timeline, redrives a dead
letter (one, then all of a type) and sees it in the audit log, all with real links, forms and
the keyboard. Each page is saved under ``.run/screenshots/`` (a CI artifact).
"""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from redis.asyncio import Redis
from sqlalchemy import select, update

from common.auth import hash_token
from common.bus.deadletters import dead_letter, list_dead_letters
from common.bus.streams import stream_key
from common.db import Database
from common.settings import with_changes
from common.testing.chromium import CHROMIUM, CHROMIUM_ARGS
from common.testing.replies import credit_reserved
from orders import saga, service
from orders.models import Saga, SagaStep
from orders.schemas import OrderCreate, OrderItem
from orders.settings import Settings

REPO = Path(__file__).resolve().parents[4]
SCREENSHOTS = REPO / ".run" / "screenshots"
TOKEN = "browser-operator-" + uuid.uuid4().hex
PREFIX = "browser-test:"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: install Debian's chromium (apt-get install -y chromium)",
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(orders_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``orders.main:create_app`` under uvicorn, as ``orders-api`` runs it; its base URL."""
    port = _free_port()
    workdir = tmp_path_factory.mktemp("orders-api")  # no stray .env is read
    env = {
        **os.environ,
        "ORDERS_DATABASE_URL": orders_settings.database_url,
        "ORDERS_REDIS_URL": orders_settings.redis.url,
        "ORDERS_OPERATOR_TOKENS": f"ops-alice:{hash_token(TOKEN)}",
        "ORDERS_BUS_STREAM_PREFIX": PREFIX,
        "ORDERS_RATE_LIMIT_ENABLED": "false",
    }
    log = (workdir / "server.log").open("w")
    command = [sys.executable, "-m", "uvicorn", "orders.main:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    process = subprocess.Popen(  # noqa: S603 - our own app, fixed arguments
        command,
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "orders-api did not become ready:\n" + (workdir / "server.log").read_text()
                )
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def timed_out_order(db: Database, settings: Settings) -> uuid.UUID:
    """A saga whose credit reply came too late: the deadline passed, the saga compensated,
    then the late CreditReserved was answered with a release. Its history is spread over the
    last 40 seconds, as it would have happened with the default 30 s deadline."""
    settings = with_changes(settings, saga={"max_resends": 0})  # compensate at once
    body = OrderCreate(items=[OrderItem(sku="book", quantity=2, unit_price_cents=1500)])
    async with db.transaction() as uow:
        order = (await service.place_order(uow, settings, uuid.uuid4(), body, None)).order
    async with db.transaction() as uow:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await uow.session.execute(
            update(Saga).where(Saga.order_id == order.id).values(deadline_at=past)
        )
    async with db.transaction() as uow:
        await service.handle_event(uow, settings, order.id, saga.DeadlinePassed())
    async with db.transaction() as uow:
        await service.handle_event(uow, settings, order.id, credit_reserved(order.id))
    now = datetime.now(UTC)
    async with db.transaction() as uow:
        began = now - timedelta(seconds=40)
        await uow.session.execute(
            update(Saga).where(Saga.order_id == order.id).values(created_at=began)
        )
        steps = (
            await uow.session.scalars(
                select(SagaStep.id).where(SagaStep.order_id == order.id).order_by(SagaStep.id)
            )
        ).all()
        for step_id, seconds_ago in zip(steps, (40, 10, 10, 4), strict=True):
            at = now - timedelta(seconds=seconds_ago)
            await uow.session.execute(update(SagaStep).where(SagaStep.id == step_id).values(at=at))
    return order.id


async def a_dead_letter(redis: Redis, message_type: str) -> str:
    envelope = {
        "id": str(uuid.uuid4()),
        "type": message_type,
        "source": "users",
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": uuid.uuid4().hex,
        "payload": {"order_id": str(uuid.uuid4())},
    }
    return await dead_letter(
        redis,
        prefix=PREFIX,
        stream=stream_key(PREFIX, "users.events"),
        group="orders",
        entry_id="1-1",
        consumer="orders-worker-0",
        message_type=message_type,
        attempts=5,
        error="ValueError: the handler failed 5 times",
        envelope=json.dumps(envelope),
    )


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_an_operator_finds_a_timed_out_saga_redrives_dead_letters_and_sees_the_audit(
    server: str, browser: Browser, orders_db: Database, orders_settings: Settings, redis: Redis
):
    order_id = await timed_out_order(orders_db, orders_settings)
    letter = await a_dead_letter(redis, "users.CreditReserved")
    bulk_type = f"users.Bulk{uuid.uuid4().hex[:6]}"
    bulk = {await a_dead_letter(redis, bulk_type) for _ in range(2)}

    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    try:
        # Not signed in: the console sends the operator to its login page.
        await page.goto(f"{server}/admin/")
        await expect(page).to_have_url(f"{server}/admin/login?next=%2Fadmin%2F")
        await shot(page, "01-login")
        await page.get_by_label("Operator token").fill(TOKEN)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Sagas")).to_be_visible()
        cookie = next(c for c in await context.cookies() if c["name"] == "orders_operator")
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"

        # Find the timed-out saga by filter.
        await page.get_by_label("Reason").fill("timeout")
        await page.get_by_role("button", name="Filter").click()
        await expect(page).to_have_url(
            f"{server}/admin/?state=&status=&reason=timeout&older_than_seconds="
        )
        link = page.get_by_role("link", name=str(order_id))
        await expect(link).to_be_visible()
        for status in await page.locator("tbody td:nth-child(3)").all_inner_texts():
            assert status == "timeout"
        await shot(page, "02-sagas-filtered")

        # Its timeline: the steps as a picture and a table, with the messages sent.
        await link.focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name=f"Saga of order {order_id}")).to_be_visible()
        picture = page.get_by_role("img", name="Steps of the saga over time")
        await expect(picture).to_be_visible()
        await expect(picture.locator("circle")).to_have_count(4)
        late = page.get_by_role("cell", name="late_reply_compensated late reply")
        await expect(late).to_be_visible()
        # Retry its current step (asking again for the release) from the keyboard.
        await page.get_by_role("button", name="Retry current step").focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("status")).to_contain_text("saga.retry")
        await expect(picture.locator("circle")).to_have_count(5)
        await expect(page.locator("tbody tr").last).to_contain_text("users.ReleaseCredit")
        await shot(page, "03-saga-timeline")

        # Dead letters: redrive one, then every one of a type; the counts are shown.
        await page.get_by_role("link", name="Dead letters").click()
        await expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
        await shot(page, "04-dead-letters")
        await page.get_by_role("button", name=f"Redrive {letter}").click()
        outcome = page.get_by_role("status")
        await expect(outcome.get_by_test_id("redriven")).to_have_text("1")
        await expect(outcome.get_by_test_id("failed")).to_have_text("0")
        await expect(page.get_by_role("link", name=letter)).to_have_count(0)

        await page.get_by_label("Message type").fill(bulk_type)
        await page.get_by_role("button", name="Filter").click()
        letters = page.get_by_role("table", name="Dead letters").locator("tbody tr")
        await expect(letters).to_have_count(2)
        await page.get_by_role("button", name=f"Redrive all of type {bulk_type}").click()
        await expect(outcome.get_by_test_id("redriven")).to_have_text("2")
        await expect(outcome.get_by_test_id("failed")).to_have_text("0")
        await shot(page, "05-dead-letters-redriven")
        left = {d.id for d in await list_dead_letters(redis, prefix=PREFIX, limit=1000)}
        assert not ({letter} | bulk) & left

        # The audit log shows both redrives, newest first, by this operator.
        await page.get_by_role("link", name="Audit log").click()
        rows = page.locator("tbody tr")
        await expect(rows.first).to_contain_text("dead_letters.redrive")
        await expect(rows.first).to_contain_text("redriven 2 of 2")
        await expect(page.locator("tbody tr", has_text=f"dead-letters:{letter}")).to_contain_text(
            "ops-alice"
        )
        await shot(page, "06-audit")

        # Signing out ends the console session.
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_label("Operator token")).to_be_visible()
        await page.goto(f"{server}/admin/ui/audit")
        await expect(page).to_have_url(f"{server}/admin/login?next=%2Fadmin%2Fui%2Faudit")
    finally:
        await context.close()
