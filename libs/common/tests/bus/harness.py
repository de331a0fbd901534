"""What the bus tests share: test messages, the :class:`Harness` of one test, and polls."""

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import Table, func, select

from common.bus import (
    Consumer,
    DeadLetter,
    Envelope,
    Handler,
    Handlers,
    Outbox,
    list_dead_letters,
    stream_key,
)
from common.contracts import Message
from common.db import Database, UnitOfWork
from common.settings import ServiceSettings, with_changes


class Ping(Message):
    """Test message: handlers record ``key`` as an effect."""

    TYPE: ClassVar[str] = "bustest.Ping"
    STREAM: ClassVar[str] = "bustest.events"

    key: str


class Pong(Message):
    """Test message a Ping handler publishes in reply."""

    TYPE: ClassVar[str] = "bustest.Pong"
    STREAM: ClassVar[str] = "bustest.replies"

    key: str


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Harness:
    """The clients, tables and settings of one test, and what it started (stopped at the end)."""

    database: Database
    redis: Redis
    redis_url: str
    outbox: Table
    inbox: Table
    effects: Table
    settings: ServiceSettings
    group: str = field(default_factory=lambda: f"g-{uuid.uuid4().hex[:8]}")
    started: list[Consumer | Outbox] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.settings.bus.stream_prefix

    @property
    def redis_args(self) -> list[str]:
        """Where the dead-letter command line finds this test's Redis (or cluster)."""
        if self.settings.redis.cluster_nodes:
            return ["--cluster-nodes", self.settings.redis.cluster_nodes]
        return ["--redis-url", self.redis_url]

    @property
    def key(self) -> str:
        return stream_key(self.prefix, Ping.STREAM)

    def with_settings(self, **changes: Any) -> ServiceSettings:
        """The test's settings with changes: ``with_settings(bus={"max_attempts": 2})``."""
        return with_changes(self.settings, **changes)

    async def start_outbox(self, **changes: Any) -> Outbox:
        """Run the test's outbox (what the API lifespan and the worker do)."""
        outbox = Outbox(self.redis, self.outbox, settings=self.with_settings(**changes))
        self.database.outbox = outbox
        outbox.start(self.database)
        self.started.append(outbox)
        return outbox

    def consumer(
        self,
        handlers: Handlers,
        *,
        group: str | None = None,
        name: str = "live-1",
        unhurried: Collection[type[Message]] = (),
        **changes: Any,
    ) -> Consumer:
        return Consumer(
            self.database,
            self.redis,
            group=group or self.group,
            handlers=handlers,
            inbox_table=self.inbox,
            settings=self.with_settings(**changes),
            consumer_name=name,
            unhurried=unhurried,
        )

    async def start_consumer(self, handlers: Handlers, **kwargs: Any) -> Consumer:
        consumer = self.consumer(handlers, **kwargs)
        await consumer.start()
        self.started.append(consumer)
        return consumer

    async def publish(
        self, *messages: Message, correlation_id: str | None = None
    ) -> list[Envelope]:
        """Commit messages to the outbox (sent at once if the outbox runs, else they stay)."""
        async with self.database.transaction() as uow:
            return [uow.publish(message, correlation_id=correlation_id) for message in messages]

    async def send(self, *messages: Message) -> list[Envelope]:
        """Publish and flush to the stream right away, without a running outbox."""
        envelopes = await self.publish(*messages)
        flusher = Outbox(self.redis, self.outbox, settings=self.settings)
        flusher.start(self.database)
        try:
            await flusher.flush()  # every row, whatever its age
        finally:
            await flusher.stop()
        return envelopes

    def recorder(self, seen: list[str] | None = None) -> Handler:
        async def handle(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
            await uow.session.execute(self.effects.insert().values(key=message.key))
            if seen is not None:
                seen.append(message.key)

        return handle

    async def effect_count(self, key: str | None = None) -> int:
        query = select(func.count()).select_from(self.effects)
        if key is not None:
            query = query.where(self.effects.c.key == key)
        async with self.database.session() as session:
            return int((await session.execute(query)).scalar_one())

    async def outbox_count(self) -> int:
        async with self.database.session() as session:
            query = select(func.count()).select_from(self.outbox)
            return int((await session.execute(query)).scalar_one())

    async def stream(self, key: str | None = None) -> list[tuple[str, Envelope]]:
        entries = await self.redis.xrange(key or self.key) or []
        return [(str(entry_id), Envelope.from_fields(fields or {})) for entry_id, fields in entries]

    async def pending(self, group: str | None = None, key: str | None = None) -> int:
        summary = await self.redis.xpending(key or self.key, group or self.group)
        return int(summary["pending"])

    async def group_info(self, group: str | None = None) -> dict[str, Any]:
        for info in await self.redis.xinfo_groups(self.key):
            if info["name"] == (group or self.group):
                return dict(info)
        raise AssertionError("no such group")

    async def consumers_of_group(self) -> dict[str, int]:
        infos = await self.redis.xinfo_consumers(self.key, self.group)
        return {str(info["name"]): int(info["pending"]) for info in infos}

    async def read(self, group: str, consumer: str, count: int | None = None) -> list[str]:
        """XREADGROUP ``>`` as a bare consumer that never acknowledges; returns entry ids."""
        response: Any = await self.redis.xreadgroup(group, consumer, {self.key: ">"}, count=count)
        return [str(entry_id) for _, entries in response or [] for entry_id, _ in entries]

    async def add(self, envelope: Envelope) -> str:
        """XADD an envelope by hand (a duplicate, or one nobody published)."""
        return str(await self.redis.xadd(self.key, {"envelope": envelope.to_json()}))

    async def dead_letters(self) -> list[DeadLetter]:
        return await list_dead_letters(self.redis, prefix=self.prefix)

    async def close(self) -> None:
        for component in reversed(self.started):
            await component.stop()


def fast_bus_settings(
    database_url: str, *, redis: dict[str, Any], stream_prefix: str, outbox: dict[str, Any]
) -> ServiceSettings:
    """The bus suites' settings: tiny intervals (the suites must stay fast), a stream prefix of
    the caller's (unique; hash-tagged on a cluster), Redis and outbox as the suite needs."""
    return ServiceSettings(
        service_name="bustest",
        database_url=database_url,
        redis=redis,
        consumer_name="live-1",
        bus={
            "stream_prefix": stream_prefix,
            "block_ms": 50,
            "batch_size": 16,
            "concurrency": 8,
            "max_attempts": 3,
            "reclaim_idle_ms": 60_000,
            "reclaim_interval_seconds": 0.05,
            "consumer_delete_idle_ms": 0,
            "shutdown_timeout_seconds": 5,
        },
        outbox=outbox,
        stream={"trim_interval_seconds": 0.1, "min_retention": 0, "min_retention_seconds": 0},
    )
