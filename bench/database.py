"""What the database's size costs (issue 21): the lists' p99, table and index sizes, and a
retention drop while sagas run. Measured on the empty database and again after the preload.

* Lists: the statements the list endpoints run (bench/scale_probe.py: a user's orders and
  notifications, first and a later page; the console's saga list, unfiltered, a later page
  and by a rare state; a saga's steps), straight to Postgres, for random users and orders.
* Sizes: table and index bytes of the big tables, their partitions summed.
* Retention drop: while a saga step runs, the oldest ``orders.saga_steps`` partition before
  the current month is detached and dropped by the maintenance's own code
  (``common.partitions.detach_and_drop``: one transaction under its lock timeout, tried
  again after a lock timeout or a lost deadlock). On an empty database there is none, so an
  empty one a year back is created first: the locks are the same, only the rows differ.
  Reported: the drop's time, its tries, the most backends of the bench database seen waiting
  for a lock meanwhile (sampled every 10 ms), and the saga step's latency.
"""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from bench import scale_probe
from bench.config import log
from bench.loadgen import quantiles_ms
from bench.preload import PARTITIONED
from bench.saga import Rig, saga_step
from common.partitions import (
    DDL_LOCK_TIMEOUT,
    create_partition_sql,
    detach_and_drop,
    floor_to,
    next_bound,
    parse_bounds,
)

SAGA_STEPS = next(table for table in PARTITIONED if table.name == "saga_steps")
LIST_RUNS = 200
# Backends of the bench database waiting for a lock they have not been granted.
LOCK_WAITERS = """
    SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE NOT l.granted AND a.datname = current_database() AND l.pid <> $1
"""


async def database_figures(rig: Rig, drop_rate: float) -> dict[str, Any]:
    """Lists, sizes and the retention drop during a saga step at ``drop_rate``."""
    log("database: list statements' latency")
    lists = await scale_probe_lists(rig.pool)
    sizes = {
        row["table_name"]: {
            "table_bytes": int(row["table_bytes"]),
            "index_bytes": int(row["index_bytes"]),
        }
        for row in await rig.pool.fetch(scale_probe.SIZES)
    }
    log(f"database: a retention drop during a saga step at {drop_rate:g}/s")
    drop = await retention_drop_during_sagas(rig, drop_rate)
    return {"lists_ms": lists, "sizes": sizes, "retention_drop": drop}


async def scale_probe_lists(pool: asyncpg.Pool) -> dict[str, dict[str, float]]:
    latencies = await scale_probe.list_latencies(pool, LIST_RUNS)
    return {name: quantiles_ms(values) for name, values in latencies.items()}


async def retention_drop_during_sagas(rig: Rig, rate: float) -> dict[str, Any]:
    partition, rows = await droppable_partition(rig.pool)
    step_task = asyncio.create_task(saga_step(rig, rate, profile=False))
    await asyncio.sleep(rig.config.step_seconds / 2)
    engine = create_async_engine(
        rig.config.dsn.replace("postgresql://", "postgresql+asyncpg://", 1), poolclass=NullPool
    )
    try:
        async with engine.connect() as connection:
            own_pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await connection.commit()
            stop = asyncio.Event()
            watcher = asyncio.create_task(most_lock_waiters(rig.pool, own_pid, stop))
            retries_before = _ddl_retries()
            started = time.perf_counter()
            error = await drop_partition(connection, partition)
            seconds = time.perf_counter() - started
            tries = 1 + int(_ddl_retries() - retries_before)
            stop.set()
            waiting = await watcher
        step = await step_task
        if error is not None:  # leave no partition behind for the next pass to pick
            async with engine.connect() as connection:
                retry_error = await drop_partition(connection, partition)
            if retry_error is not None:
                log(f"database: WARNING: {partition} could not be dropped after the step either")
    finally:
        await engine.dispose()
    log(
        f"database: the drop of {partition} ({rows} rows) took {seconds * 1000:.0f} ms"
        f" in {tries} tries, at most {waiting} backends waiting"
        + (f"; FAILED: {error}" if error else "")
    )
    return {
        "partition": partition,
        "rows": rows,
        "seconds": seconds,
        "tries": tries,
        "error": error,
        "lock_timeout": DDL_LOCK_TIMEOUT,
        "most_backends_waiting": waiting,
        "saga_rate_per_second": rate,
        "saga_post_to_approved_ms": step["post_to_approved_ms"],
        "saga_problems": step["problems"],
    }


def _ddl_retries() -> float:
    return REGISTRY.get_sample_value("db_partition_ddl_lock_retries_total") or 0.0


async def droppable_partition(pool: asyncpg.Pool) -> tuple[str, int]:
    """The oldest saga_steps partition wholly before this month, and its rows; an empty one
    a year back, created now, when there is none (an empty database)."""
    this_month = floor_to(datetime.now(UTC), "month")
    rows = await pool.fetch(
        "SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'orders.saga_steps'::regclass ORDER BY c.relname"
    )
    for row in rows:
        upper = parse_bounds(row["bound"])[1]
        if upper is not None and upper <= this_month:
            count = await pool.fetchval(f'SELECT count(*) FROM orders."{row["name"]}"')  # noqa: S608 (a catalog name)
            return row["name"], int(count)
    lower = floor_to(this_month - timedelta(days=365), "month")
    await pool.execute(create_partition_sql(SAGA_STEPS, lower, next_bound(lower, "month")))
    return f"saga_steps_p{lower:%Y%m}", 0


async def drop_partition(connection: AsyncConnection, partition: str) -> str | None:
    """The maintenance's detach and drop; the error, if every try failed (the maintenance
    would try again at its next run)."""
    try:
        await detach_and_drop(connection, SAGA_STEPS, partition)
    except DBAPIError as exc:
        return f"{type(exc.orig).__name__}: {exc.orig}"
    return None


async def most_lock_waiters(pool: asyncpg.Pool, own_pid: int, stop: asyncio.Event) -> int:
    """The most backends of the bench database (the drop's own excluded) seen waiting for a
    lock, sampled every 10 ms until ``stop``."""
    most = 0
    async with pool.acquire() as connection:
        while True:  # at least one sample, however short the drop
            most = max(most, int(await connection.fetchval(LOCK_WAITERS, own_pid)))
            if stop.is_set():
                return most
            await asyncio.sleep(0.01)
