"""Notifications tests: real Postgres and Redis made for this run, real HTTP on loopback.

* ``api``: the notifications app served by uvicorn on an ephemeral port of 127.0.0.1, in
  the test's event loop (server-sent events need a real server: an ASGI transport buffers
  whole responses).
* ``record``: records a notification the way the worker's handlers do, through a Database
  whose commit listener PUBLISHes to the live streams (as the worker's does).
* ``receivers``: tiny webhook receivers (bare asyncio HTTP/1.1) whose answers a test scripts.
* ``dispatcher``: the worker's webhook dispatcher, run with the test's settings.
"""

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from standardwebhooks import Webhook, WebhookVerificationError

from common.auth import create_session
from common.bus import Outbox
from common.contracts import NotificationKind
from common.db import Database, create_engine
from common.redis import create_redis
from common.testing.plugin import RedisTarget, migrate
from common.testing.polling import eventually
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
    return Settings(
        database_url=redis_target.database_url,
        **redis_target.settings(f"ntest-{uuid.uuid4().hex[:8]}:"),
        consumer_name="notifications-test",
        bus_block_ms=50,
        bus_reclaim_interval_seconds=0.2,
        bus_shutdown_timeout_seconds=5,
        outbox_sweep_interval_seconds=0.1,
        stream_heartbeat_seconds=0.3,
        stream_resync_seconds=0,
        stream_retry_ms=100,
        webhook_allow_private_targets=True,
        webhook_secret_key=Fernet.generate_key().decode(),
        webhook_dns_timeout_seconds=1.0,
        webhook_timeout_seconds=2.0,
        webhook_max_attempts=5,
        webhook_backoff_base_seconds=0.01,
        webhook_backoff_max_seconds=0.05,
        webhook_breaker_failure_threshold=5,
        webhook_breaker_cooldown_seconds=0.3,
        webhook_poll_interval_seconds=0.05,
        webhook_idle_poll_seconds=0.05,
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


class InProcessServer(uvicorn.Server):
    """uvicorn in the test's loop, without taking over the process's signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class RunningApi:
    app: FastAPI
    url: str


@contextlib.asynccontextmanager
async def serve_app(settings: Settings) -> AsyncIterator[RunningApi]:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = InProcessServer(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        assert not task.done(), "the server stopped during start-up"
        return server.started

    await eventually(started, timeout=10)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningApi(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


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


@dataclass
class SseEvent:
    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Reads a ``text/event-stream`` block by block (a block ends with a blank line)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def block(self, within: float = 5.0) -> SseEvent:
        block = SseEvent()
        data: list[str] = []
        async with asyncio.timeout(within):
            while True:
                line = await anext(self._lines)
                if line == "":
                    if data or block.id is not None or block.comments or block.retry:
                        block.data = "\n".join(data)
                        return block
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "":
                    block.comments.append(value)
                elif name == "id":
                    block.id = value
                elif name == "event":
                    block.event = value
                elif name == "data":
                    data.append(value)
                elif name == "retry":
                    block.retry = int(value)

    async def event(self, within: float = 5.0) -> SseEvent:
        """The next block that is an event (heartbeats skipped)."""
        deadline = time.monotonic() + within
        while True:
            block = await self.block(max(0.01, deadline - time.monotonic()))
            if block.event is not None:
                return block

    async def ended(self, within: float = 5.0) -> bool:
        """True once the server has ended the response (blocks before the end skipped)."""
        deadline = time.monotonic() + within
        try:
            while True:
                await self.block(max(0.01, deadline - time.monotonic()))
        except StopAsyncIteration:
            return True

    async def heartbeat(self, within: float = 5.0) -> list[SseEvent]:
        """Blocks up to and including the next heartbeat: the events sent before it."""
        deadline = time.monotonic() + within
        events = []
        while True:
            block = await self.block(max(0.01, deadline - time.monotonic()))
            if block.event is not None:
                events.append(block)
            elif "heartbeat" in block.comments:
                return events


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


@dataclass
class Hit:
    """One request a receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def signature_is_valid(secret: str, hit: Hit) -> bool:
    """What a receiver does: verify with the Standard Webhooks reference library."""
    try:
        Webhook(secret).verify(hit.body, hit.headers)
    except WebhookVerificationError:
        return False
    return True


class Receiver:
    """A webhook endpoint on 127.0.0.1: ``answer(n)`` is the status of the n-th hit (1-based).

    With ``secret`` set it behaves like a production receiver: a request that does not verify
    with the Standard Webhooks reference library under that secret is answered 401."""

    def __init__(self, answer: Callable[[int], int] = lambda _: 200, port: int = 0) -> None:
        self.answer = answer
        self.port = port
        self.secret: str | None = None
        self.hits: list[Hit] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> "Receiver":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def successes(self) -> list[Hit]:
        return [hit for hit in self.hits if 200 <= hit.status < 300]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, _ = (await reader.readline()).decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.answer(len(self.hits) + 1)
            hit = Hit(method, path, headers, body, status)
            if self.secret is not None and not signature_is_valid(self.secret, hit):
                hit.status = status = 401
            self.hits.append(hit)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(answer: Callable[[int], int] = lambda _: 200, port: int = 0) -> Receiver:
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
        settings = notifications_settings.model_copy(update=overrides)
        instance = Dispatcher(database, redis, settings, wake=dispatcher_wake)
        stop = asyncio.Event()
        task = asyncio.create_task(instance.run(stop))
        try:
            yield instance
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    return running
