"""The worker runtime: consumers, relay, timers and probes together; graceful exit on SIGTERM."""

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import Table, func, select

from common.bus import Envelope, Outbox, stream_key
from common.contracts import Message
from common.db import Database, UnitOfWork
from common.settings import ServiceSettings
from common.testing.polling import eventually
from common.worker import Timer, WorkerContext, WorkerSpec, serve_worker

pytestmark = pytest.mark.integration


class WorkerPing(Message):
    """Test message for the worker."""

    TYPE: ClassVar[str] = "bustest.WorkerPing"
    STREAM: ClassVar[str] = "bustest.worker"

    key: str


class WorkerPong(Message):
    """The worker's handler replies with it."""

    TYPE: ClassVar[str] = "bustest.WorkerPong"
    STREAM: ClassVar[str] = "bustest.worker-replies"

    key: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def probe(port: int, path: str = "/healthz") -> int | None:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(f"http://127.0.0.1:{port}{path}")).status_code
    except httpx.TransportError:
        return None


async def test_worker_runs_consumers_relay_timers_and_probes(
    database: Database,
    redis: Redis,
    outbox_table: Table,
    inbox_table: Table,
    effects_table: Table,
    bus_settings: ServiceSettings,
) -> None:
    settings = bus_settings.model_copy(update={"worker_port": free_port()})
    group = f"w-{uuid.uuid4().hex[:8]}"
    timer_runs = 0

    async def flaky_timer(context: WorkerContext) -> None:
        nonlocal timer_runs
        timer_runs += 1
        if timer_runs == 1:
            raise RuntimeError("the first run fails; the timer must keep going")

    async def handle(uow: UnitOfWork, _: Envelope, message: WorkerPing) -> None:
        await uow.session.execute(effects_table.insert().values(key=message.key))
        uow.publish(WorkerPong(key=message.key))

    spec = WorkerSpec(
        group=group,
        handlers=lambda _: {WorkerPing: handle},
        inbox_table=inbox_table,
        outbox_table=outbox_table,
        timers=[Timer("flaky", 0.02, flaky_timer)],
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(serve_worker(settings, spec, stop))
    try:
        await eventually(lambda: _answers(settings.worker_port, 200))

        # Another process of the service commits a message; the worker handles it and its
        # reply leaves through the worker's own outbox.
        api_outbox = Outbox(redis, outbox_table, settings=settings)
        api_database = Database(database.engine, outbox=api_outbox)
        async with api_outbox.running(api_database), api_database.transaction() as uow:
            uow.publish(WorkerPing(key="w1"))
        replies = stream_key(settings.bus.stream_prefix, WorkerPong.STREAM)
        await eventually(lambda: _xlen_is(redis, replies, 1))

        async with database.session() as session:
            count = (await session.execute(select(func.count()).select_from(effects_table))).one()
        assert count[0] == 1
        await eventually(lambda: _timer_ran(lambda: timer_runs, 3))
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{settings.worker_port}/metrics")).text
            missing = await client.get(f"http://127.0.0.1:{settings.worker_port}/nowhere")
        assert f'bus_messages_handled_total{{group="{group}",type="bustest.WorkerPing"}} 1.0' in (
            metrics
        )
        assert missing.status_code == 404
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)

    assert await probe(settings.worker_port) is None  # the server is closed


async def _answers(port: int, status: int) -> bool:
    return await probe(port) == status


async def _xlen_is(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) == n


async def _timer_ran(runs: Callable[[], int], n: int) -> bool:
    return runs() >= n


SIGNAL_WORKER = Path(__file__).with_name("signal_worker.py")


async def test_run_worker_exits_0_on_sigterm(bus_settings: ServiceSettings) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SERVICE_NAME": "bustest-worker",
        "DATABASE_URL": bus_settings.database_url,
        "REDIS_URL": bus_settings.redis.url,
        "WORKER_PORT": str(port),
        "BUS_STREAM_PREFIX": bus_settings.bus.stream_prefix,
        "BUS_BLOCK_MS": "100",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SIGNAL_WORKER), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        await eventually(lambda: _answers(port, 200), timeout=30)
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0
    assert out.decode().strip().endswith("clean exit")
