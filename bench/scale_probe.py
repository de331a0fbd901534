"""What the lists and a retention drop cost on a preloaded database (bench/preload.py).

Runs the statements the services run (a user's orders and notifications, first page and a
later one; the console's saga list, unfiltered and by a rare state; a saga's steps) against
random users and orders, and reports their p50/p99; then drops the oldest saga-step
partition (DETACH + DROP, as common.partitions does) while inserts of saga steps run, and
reports the drop's time, the inserts' latency during it and the lock waits seen.

``python -m bench.scale_probe --dsn postgresql://postgres@127.0.0.1:5432/app_bench``
"""

import argparse
import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg

from bench.loadgen import quantiles_ms
from common.partitions import DDL_LOCK_TIMEOUT

ORDERS_PAGE = (
    "SELECT * FROM orders.orders WHERE user_id = $1 {after} "
    "ORDER BY created_at DESC, id DESC LIMIT 20"
)
NOTIFICATIONS_PAGE = (
    "SELECT * FROM notifications.notifications WHERE user_id = $1 {after} "
    "ORDER BY created_at DESC, id DESC LIMIT 20"
)
SAGAS_PAGE = (
    "SELECT o.*, s.* FROM orders.orders o JOIN orders.sagas s ON s.order_id = o.id "
    "WHERE true {state} {after} ORDER BY s.created_at DESC, s.order_id DESC LIMIT 50"
)
STEPS = "SELECT * FROM orders.saga_steps WHERE order_id = $1 AND at >= $2 ORDER BY id"
SIZES = """
    SELECT t.relname AS table_name,
           sum(pg_table_size(coalesce(p.relid, t.oid))) AS table_bytes,
           sum(pg_indexes_size(coalesce(p.relid, t.oid))) AS index_bytes
    FROM (VALUES ('orders.orders'), ('orders.sagas'), ('orders.saga_steps'),
                 ('notifications.notifications'), ('notifications.webhook_deliveries'),
                 ('notifications.webhook_attempts'), ('users.users'),
                 ('users.credit_reservations')) AS v(name)
    JOIN pg_class t ON t.oid = v.name::regclass
    LEFT JOIN LATERAL pg_partition_tree(v.name::regclass) p ON true
    GROUP BY t.relname ORDER BY 2 DESC
"""


async def _timed(
    pool: asyncpg.Pool, runs: int, call: Callable[[asyncpg.Connection], Awaitable[object]]
) -> list[float]:
    latencies = []
    async with pool.acquire() as connection:
        for _ in range(runs):
            started = time.perf_counter()
            await call(connection)
            latencies.append(time.perf_counter() - started)
    return latencies


def _line(name: str, latencies: Sequence[float]) -> str:
    q = quantiles_ms(list(latencies))
    return f"  {name:<44} p50 {q['p50']:7.2f} ms   p99 {q['p99']:7.2f} ms   (n={len(latencies)})"


async def list_latencies(pool: asyncpg.Pool, runs: int) -> dict[str, list[float]]:
    """Seconds each run of each list statement took, by case, after a warm-up."""
    users: list[uuid.UUID] = [r["id"] for r in await pool.fetch("SELECT id FROM users.users")]
    orders = await pool.fetch(
        "SELECT id, created_at FROM orders.orders TABLESAMPLE SYSTEM (1) LIMIT 2000"
    ) or await pool.fetch(  # a small table: 1% of its pages may hold no row
        "SELECT id, created_at FROM orders.orders ORDER BY random() LIMIT 2000"
    )
    middle: datetime = await pool.fetchval(
        "SELECT created_at FROM orders.sagas ORDER BY created_at LIMIT 1 OFFSET "
        "(SELECT count(*) / 2 FROM orders.sagas)"
    )
    cursor_after = "AND (created_at, id) < ($2, $3)"
    latencies: dict[str, list[float]] = {}

    def user() -> uuid.UUID:
        return random.choice(users)  # noqa: S311 (not crypto)

    def order() -> asyncpg.Record:
        return random.choice(orders)  # noqa: S311

    cases: list[tuple[str, Callable[[asyncpg.Connection], Awaitable[object]]]] = [
        ("a user's orders, first page", lambda c: c.fetch(ORDERS_PAGE.format(after=""), user())),
        (
            "a user's orders, a later page",
            lambda c: c.fetch(
                ORDERS_PAGE.format(after=cursor_after), user(), middle, uuid.UUID(int=0)
            ),
        ),
        (
            "a user's notifications, first page",
            lambda c: c.fetch(NOTIFICATIONS_PAGE.format(after=""), user()),
        ),
        (
            "a user's notifications, a later page",
            lambda c: c.fetch(
                NOTIFICATIONS_PAGE.format(after=cursor_after), user(), middle, uuid.UUID(int=0)
            ),
        ),
        ("console sagas, first page", lambda c: c.fetch(SAGAS_PAGE.format(state="", after=""))),
        (
            "console sagas, a later page",
            lambda c: c.fetch(
                SAGAS_PAGE.format(state="", after="AND (s.created_at, s.order_id) < ($1, $2)"),
                middle,
                uuid.UUID(int=0),
            ),
        ),
        (
            "console sagas, state awaiting_credit (rare)",
            lambda c: c.fetch(
                SAGAS_PAGE.format(state="AND s.state = $1", after=""), "awaiting_credit"
            ),
        ),
        (
            "a saga's steps (timeline)",
            lambda c: c.fetch(STEPS, *(lambda o: (o["id"], o["created_at"]))(order())),
        ),
    ]
    for name, call in cases:
        await _timed(pool, 20, call)  # warm the cache and the plan
        latencies[name] = await _timed(pool, runs, call)
    return latencies


async def measure_drop(pool: asyncpg.Pool, seconds: float) -> list[str]:
    """Drop the oldest saga_steps partition while 8 inserters add steps to recent orders."""
    oldest = await pool.fetchval(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'orders.saga_steps'::regclass AND c.relname ~ '_p[0-9]+$' "
        "ORDER BY c.relname LIMIT 1"
    )
    recent = [
        r["order_id"]
        for r in await pool.fetch(
            "SELECT order_id FROM orders.sagas ORDER BY created_at DESC LIMIT 1000"
        )
    ]
    stop = asyncio.Event()
    latencies: list[float] = []
    waits: list[int] = []

    async def insert() -> None:
        async with pool.acquire() as connection:
            while not stop.is_set():
                started = time.perf_counter()
                await connection.execute(
                    "INSERT INTO orders.saga_steps (order_id, name, status) "
                    "VALUES ($1, 'probe', 'sent')",
                    random.choice(recent),  # noqa: S311
                )
                latencies.append(time.perf_counter() - started)

    async def watch_locks() -> None:
        async with pool.acquire() as connection:
            while not stop.is_set():
                waits.append(
                    await connection.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")
                )
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(insert()) for _ in range(8)]
    tasks.append(asyncio.create_task(watch_locks()))
    await asyncio.sleep(seconds / 2)
    mark = len(latencies)
    async with pool.acquire() as connection:
        started = time.perf_counter()
        async with connection.transaction():
            await connection.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
            await connection.execute(
                f'ALTER TABLE orders.saga_steps DETACH PARTITION orders."{oldest}"'
            )
            await connection.execute(f'DROP TABLE orders."{oldest}"')
        drop_seconds = time.perf_counter() - started
    during = len(latencies)
    await asyncio.sleep(seconds / 2)
    stop.set()
    await asyncio.gather(*tasks)
    await pool.execute("DELETE FROM orders.saga_steps WHERE name = 'probe'")
    around = latencies[max(0, mark - 50) : during + 50]
    return [
        f"  dropped {oldest}: {drop_seconds * 1000:.1f} ms "
        f"(DETACH + DROP, lock_timeout {DDL_LOCK_TIMEOUT})",
        _line("step inserts, whole run (8 inserters)", latencies),
        _line("step inserts around the drop", around),
        f"  lock waits (pg_locks not granted, sampled every 10 ms): max {max(waits, default=0)}",
    ]


async def probe(dsn: str, runs: int, drop_seconds: float) -> str:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=12, timeout=10)
    try:
        lists = await list_latencies(pool, runs)
        lines = [
            "lists:",
            *(_line(name, values) for name, values in lists.items()),
            "sizes (table + indexes, MB):",
        ]
        for row in await pool.fetch(SIZES):
            lines.append(
                f"  {row['table_name']:<24} {row['table_bytes'] / 2**20:9.1f} "
                f"+ {row['index_bytes'] / 2**20:9.1f}"
            )
        lines += ["retention drop while inserting:", *await measure_drop(pool, drop_seconds)]
        return "\n".join(lines)
    finally:
        await pool.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/app_bench")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--drop-seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    print(asyncio.run(probe(args.dsn, args.runs, args.drop_seconds)))


if __name__ == "__main__":
    main()
