"""Preload the bench database with months of history, COPY-fast: ``--preload-orders N``.

N settled orders of N/100 users, spread evenly over ``--months`` months back from now, each
with its active credit reservation, its saga, four saga steps and an "order approved"
notification; a tenth of the users have a webhook, whose notifications have a succeeded
delivery and its attempt. The partitions the rows' times need are created first
(common.partitions' grid), so the rows land in their month's or day's partition, not in
the default one.

Rows go in by ``COPY`` (asyncpg ``copy_records_to_table``), in batches of a few thousand
orders: generating the rows in Python costs about as much as Postgres' side. Only a database
whose name contains ``bench`` is written to (the bench database, or a throwaway one).

``python -m bench.preload --dsn postgresql://postgres@127.0.0.1:5432/app_bench --orders N``
"""

import argparse
import asyncio
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from common.partitions import PartitionedTable, create_partition_sql, floor_to, grid

# The partitioned tables the preload writes into, on their default grids.
PARTITIONED = (
    PartitionedTable("orders", "saga_steps", "at", "month", retention_days=400),
    PartitionedTable("notifications", "webhook_attempts", "at", "month", retention_days=90),
)
STEPS = (
    ("reserve_credit", "sent"),
    ("reserve_credit", "succeeded"),
    ("notify", "sent"),
    ("notify", "succeeded"),
)
ITEMS = json.dumps([{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 1000}])
# Any string: preloaded deliveries have succeeded, so nothing ever decrypts it.
PLACEHOLDER_CIPHERTEXT = "preloaded-not-a-real-ciphertext"
BATCH_ORDERS = 20_000


VACUUM_TIMEOUT_SECONDS = 1800.0  # ten million orders' history; bounded like every call


@dataclass
class Counts:
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    """The COPY."""
    vacuum_seconds: float = 0.0
    """The VACUUM (ANALYZE) after it."""

    def add(self, table: str, count: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + count

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _database_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1].split("?", 1)[0]


async def create_history_partitions(connection: asyncpg.Connection, since: datetime) -> None:
    """The partitions from ``since`` to now for every partitioned table the rows go to."""
    now = datetime.now(UTC)
    for table in PARTITIONED:
        for lower, upper in grid(table, floor_to(since, table.interval), now):
            await connection.execute(create_partition_sql(table, lower, upper))


def _users(count: int, since: datetime) -> list[tuple[Any, ...]]:
    return [
        (
            uuid.uuid4(),
            f"preload-{uuid.uuid4().hex}@example.com",
            "Preloaded",
            "preloaded-not-a-password-hash",
            "active",
            10**12,
            since,
            since,
            since,
            since,
        )
        for _ in range(count)
    ]


@dataclass
class Batch:
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    sagas: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[tuple[Any, ...]] = field(default_factory=list)
    notifications: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)
    reservations: list[tuple[Any, ...]] = field(default_factory=list)


def _batch(
    size: int,
    users: Sequence[uuid.UUID],
    webhooks: dict[uuid.UUID, uuid.UUID],
    since: datetime,
    span_seconds: float,
) -> Batch:
    batch = Batch()
    for _ in range(size):
        order_id, user_id = uuid.uuid4(), random.choice(users)  # noqa: S311 (not crypto)
        created = since + timedelta(seconds=random.random() * span_seconds)  # noqa: S311
        settled = created + timedelta(milliseconds=40)
        batch.orders.append((order_id, user_id, "APPROVED", 1000, ITEMS, created, settled))
        # An approved order holds its credit: the saga invariant (active reservations = approved
        # orders, per user) holds after a preload, and the credit check reads a real history.
        batch.reservations.append((uuid.uuid4(), user_id, order_id, 1000, "active", created))
        batch.sagas.append((order_id, "settled", 4, None, str(order_id), created, settled))
        for index, (name, status) in enumerate(STEPS):
            batch.steps.append((order_id, name, status, created + timedelta(milliseconds=index)))
        notification_id = uuid.uuid4()
        batch.notifications.append(
            (
                notification_id,
                user_id,
                "order_approved",
                order_id,
                f"order-approved:{order_id}",
                False,
                settled,
            )
        )
        webhook_id = webhooks.get(user_id)
        if webhook_id is not None:
            delivery_id = uuid.uuid4()
            batch.deliveries.append(
                (delivery_id, webhook_id, notification_id, "succeeded", 1, None, settled, settled)
            )
            batch.attempts.append(
                (
                    uuid.uuid4(),
                    delivery_id,
                    webhook_id,
                    notification_id,
                    1,
                    settled,
                    200,
                    None,
                    "succeeded",
                    12.5,
                    None,
                )
            )
    return batch


COLUMNS = {
    ("users", "users"): (
        "id",
        "email",
        "name",
        "password_hash",
        "status",
        "credit_limit_cents",
        "created_at",
        "updated_at",
        "welcome_sent_at",
        "welcomed_at",
    ),
    ("users", "credit_reservations"): (
        "id",
        "user_id",
        "order_id",
        "amount_cents",
        "status",
        "created_at",
    ),
    ("orders", "orders"): (
        "id",
        "user_id",
        "status",
        "total_cents",
        "items",
        "created_at",
        "updated_at",
    ),
    ("orders", "sagas"): (
        "order_id",
        "state",
        "version",
        "deadline_at",
        "correlation_id",
        "created_at",
        "updated_at",
    ),
    ("orders", "saga_steps"): ("order_id", "name", "status", "at"),
    ("notifications", "notifications"): (
        "id",
        "user_id",
        "kind",
        "order_id",
        "dedup_key",
        "read",
        "created_at",
    ),
    ("notifications", "webhooks"): ("id", "user_id", "url", "created_at", "secret_ciphertext"),
    ("notifications", "webhook_deliveries"): (
        "id",
        "webhook_id",
        "notification_id",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "updated_at",
    ),
    ("notifications", "webhook_attempts"): (
        "id",
        "delivery_id",
        "webhook_id",
        "notification_id",
        "attempt",
        "at",
        "status_code",
        "error",
        "outcome",
        "duration_ms",
        "next_attempt_at",
    ),
}


async def _copy(
    connection: asyncpg.Connection,
    schema: str,
    table: str,
    rows: list[tuple[Any, ...]],
    counts: Counts,
) -> None:
    if rows:
        await connection.copy_records_to_table(
            table, schema_name=schema, records=rows, columns=COLUMNS[(schema, table)]
        )
        counts.add(f"{schema}.{table}", len(rows))


async def preload(dsn: str, orders: int, months: int) -> Counts:
    """Write the history; the counts per table and the seconds it took."""
    if "bench" not in _database_name(dsn):
        raise SystemExit(f"refusing to preload {_database_name(dsn)!r}: not a bench database")
    started = time.perf_counter()
    counts = Counts()
    now = datetime.now(UTC)
    since = now - timedelta(days=30 * months)
    span = (now - since).total_seconds() - 60
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        # The rows are consistent by construction: skip the per-row foreign-key triggers
        # (saga -> order, step -> saga, delivery -> notification...), most of COPY's cost.
        # Needs a superuser, as the bench's postgres is; the setting ends with the connection.
        await connection.execute("SET session_replication_role = replica")
        await create_history_partitions(connection, since)
        users = _users(max(1, orders // 100), since)
        await _copy(connection, "users", "users", users, counts)
        user_ids = [row[0] for row in users]
        webhooks = {user_id: uuid.uuid4() for user_id in user_ids[: max(1, len(user_ids) // 10)]}
        await _copy(
            connection,
            "notifications",
            "webhooks",
            [
                (w, u, "https://example.com/hook", since, PLACEHOLDER_CIPHERTEXT)
                for u, w in webhooks.items()
            ],
            counts,
        )
        done = 0
        while done < orders:
            size = min(BATCH_ORDERS, orders - done)
            batch = _batch(size, user_ids, webhooks, since, span)
            async with connection.transaction():
                await _copy(connection, "orders", "orders", batch.orders, counts)
                await _copy(connection, "users", "credit_reservations", batch.reservations, counts)
                await _copy(connection, "orders", "sagas", batch.sagas, counts)
                await _copy(connection, "orders", "saga_steps", batch.steps, counts)
                await _copy(
                    connection, "notifications", "notifications", batch.notifications, counts
                )
                await _copy(
                    connection, "notifications", "webhook_deliveries", batch.deliveries, counts
                )
                await _copy(connection, "notifications", "webhook_attempts", batch.attempts, counts)
            done += size
        counts.seconds = time.perf_counter() - started
        # A year-old database has been vacuumed by autovacuum: hint bits set, visibility map
        # current (index-only scans), statistics fresh. Without this the first reads of each
        # COPYed page write hint bits, and the lists measured next would pay for it.
        vacuum_started = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE)", timeout=VACUUM_TIMEOUT_SECONDS)
        counts.vacuum_seconds = time.perf_counter() - vacuum_started
    finally:
        await connection.close()
    return counts


def report(counts: Counts) -> str:
    lines = [
        f"preloaded {counts.total:,} rows in {counts.seconds:.1f} s "
        f"({counts.total / max(counts.seconds, 1e-9):,.0f} rows/s),"
        f" then VACUUM (ANALYZE) in {counts.vacuum_seconds:.1f} s"
    ]
    lines += [f"  {table:<36} {rows:>12,}" for table, rows in sorted(counts.rows.items())]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/app_bench")
    parser.add_argument("--orders", type=int, required=True)
    parser.add_argument("--months", type=int, default=6, help="history spread over this long")
    args = parser.parse_args(argv)
    print(report(asyncio.run(preload(args.dsn, args.orders, args.months))))


if __name__ == "__main__":
    main()
