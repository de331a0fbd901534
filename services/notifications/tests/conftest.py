"""Notifications tests: real Postgres and Redis made for this run, real HTTP on loopback.

* ``api``: the notifications app served by uvicorn on an ephemeral port of 127.0.0.1, in
  the test's event loop (server-sent events need a real server: an ASGI transport buffers
  whole responses).
* ``record``: records a notification the way the worker's handlers do, through a Database
  whose commit listener PUBLISHes to the live streams (as the worker's does).
* ``open_stream``: a notification stream of a user, read with ``common.testing.sse``.
* ``receivers``: webhook receivers (``common.testing.webhooks``) whose answers a test scripts.
* ``dispatcher``: the worker's webhook dispatcher, run with the test's settings.
"""

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text

from common.auth import create_session
from common.bus import Outbox
from common.contracts import NotificationKind
from common.db import Database, create_engine
from common.redis import create_redis
from common.settings import with_changes
from common.testing.plugin import RedisTarget, migrate
from common.testing.server import served
from common.testing.sse import SseReader
from common.testing.webhooks import Answer, Receiver
from notifications import service
from notifications.deliveries import Dispatcher
from notifications.live import LivePublisher
from notifications.main import create_app
from notifications.models import Notification, outbox
from notifications.service import Fanout
from notifications.settings import Settings

SERVICE_DIR = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
async def notifications_settings(redis_target: RedisTarget) -> Settings:
    """Once on a single Redis, once on a Redis Cluster (``redis_target``)."""
    await migrate(SERVICE_DIR, redis_target.database_url)
    # Tiny intervals keep the suite fast; tests that need other values copy these.
    target = redis_target.settings(f"ntest-{uuid.uuid4().hex[:8]}:")
    return Settings(
        database_url=redis_target.database_url,
        redis=target["redis"],
        consumer_name="notifications-test",
        bus={
            **target["bus"],
            "block_ms": 50,
            "reclaim_interval_seconds": 0.2,
            "shutdown_timeout_seconds": 5,
        },
        outbox={"sweep_interval_seconds": 0.1},
        stream={"heartbeat_seconds": 0.3, "resync_seconds": 0, "retry_ms": 100},
        webhook={
            "allow_private_targets": True,
            "secret_key": Fernet.generate_key().decode(),
            "dns_timeout_seconds": 1.0,
            "timeout_seconds": 2.0,
            "max_attempts": 5,
            "backoff_base_seconds": 0.01,
            "backoff_max_seconds": 0.05,
            "breaker_failure_threshold": 5,
            "breaker_cooldown_seconds": 0.3,
            "poll_interval_seconds": 0.05,
            "idle_poll_seconds": 0.05,
        },
    )


@pytest.fixture(scope="session")
async def redis(notifications_settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(notifications_settings)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def database(notifications_settings: Settings, redis: Redis) -> AsyncIterator[Database]:
    """A Database with the notifications outbox (not running: published rows stay)."""
    db = Database(
        create_engine(notifications_settings),
        outbox=Outbox(redis, outbox, settings=notifications_settings),
    )
    yield db
    await db.dispose()


@pytest.fixture(scope="session")
def dispatcher_wake() -> asyncio.Event:
    """Set after a commit that queued deliveries; the ``dispatcher`` fixture waits on it."""
    return asyncio.Event()


@pytest.fixture(scope="session")
def fanout(redis: Redis, dispatcher_wake: asyncio.Event) -> Fanout:
    """Records like the worker: new notifications PUBLISHed, the dispatcher woken."""
    return Fanout(LivePublisher(redis), dispatcher_wake.set)


RecordFn = Callable[..., Awaitable[Notification]]


@pytest.fixture
def record(database: Database, fanout: Fanout) -> RecordFn:
    async def record_one(
        user_id: uuid.UUID, kind: str = "order_approved", order_id: uuid.UUID | None = None
    ) -> Notification:
        if order_id is None and kind != "welcome":
            order_id = uuid.uuid4()
        async with database.transaction() as uow:
            return await service.record(
                uow, fanout, user_id=user_id, kind=NotificationKind(kind), order_id=order_id
            )

    return record_one


# -- the API on a real port ----------------------------------------------------------------


@dataclass
class RunningApi:
    app: FastAPI
    url: str


@contextlib.asynccontextmanager
async def serve_app(settings: Settings) -> AsyncIterator[RunningApi]:
    app = create_app(settings)
    async with served(app) as url:
        yield RunningApi(app, url)


@pytest.fixture(scope="session")
def serve_api() -> Callable[[Settings], contextlib.AbstractAsyncContextManager[RunningApi]]:
    return serve_app


@pytest.fixture(scope="session")
async def api(notifications_settings: Settings) -> AsyncIterator[RunningApi]:
    async with serve_app(notifications_settings) as running:
        yield running


@pytest.fixture
async def client(api: RunningApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        yield http


@dataclass
class User:
    id: uuid.UUID
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def new_user(redis: Redis) -> Callable[[], Awaitable[User]]:
    """A signed-in user: a session in Redis, as the users service would create it."""

    async def make() -> User:
        user_id = uuid.uuid4()
        issued = await create_session(redis, user_id, 3600)
        return User(user_id, issued.token)

    return make


# -- server-sent events --------------------------------------------------------------------


OpenStream = Callable[..., contextlib.AbstractAsyncContextManager[SseReader]]


@pytest.fixture
def open_stream(api: RunningApi) -> OpenStream:
    @contextlib.asynccontextmanager
    async def opened(
        user: User, last_event_id: str | None = None, base_url: str | None = None
    ) -> AsyncIterator[SseReader]:
        headers = dict(user.auth)
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        async with (
            httpx.AsyncClient(base_url=base_url or api.url, timeout=10) as http,
            http.stream("GET", "/notifications/stream", headers=headers) as response,
        ):
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield SseReader(response)

    return opened


# -- webhook receivers ---------------------------------------------------------------------


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(answer: Answer = lambda _: 200, port: int = 0) -> Receiver:
        receiver = await Receiver(answer, port).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.close()


# -- the webhook dispatcher ----------------------------------------------------------------


@pytest.fixture
async def clean_webhooks(database: Database) -> None:
    """No webhook (nor delivery) of an earlier test left for this test's dispatcher."""
    async with database.transaction() as uow:
        await uow.session.execute(text("TRUNCATE notifications.webhooks CASCADE"))


RunDispatcher = Callable[..., contextlib.AbstractAsyncContextManager[Dispatcher]]


@pytest.fixture
def dispatcher(
    clean_webhooks: None,
    database: Database,
    redis: Redis,
    notifications_settings: Settings,
    dispatcher_wake: asyncio.Event,
) -> RunDispatcher:
    @contextlib.asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[Dispatcher]:
        settings = with_changes(notifications_settings, **overrides)
        instance = Dispatcher(database, redis, settings, wake=dispatcher_wake)
        stop = asyncio.Event()
        task = asyncio.create_task(instance.run(stop))
        try:
            yield instance
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    return running
