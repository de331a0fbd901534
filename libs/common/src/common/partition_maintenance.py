"""The worker's partition maintenance: one run every few minutes, metrics, and ``db-status``.

Each service's worker declares its partitioned tables (``WorkerSpec.partitioned``); the
settings may override a table's grid (``PARTITION_INTERVALS='{"saga_steps": "day"}'``) and
retention (``PARTITION_RETENTION_DAYS='{"saga_steps": 90}'``). Any replica may run it; the
advisory lock in common.partitions lets one do the work per schema.

Metrics (alert on them):

* ``db_partition_ahead_seconds{table}``: how far the newest partition reaches past now;
  below a day means creation is failing (writes then land in the default partition);
* ``db_partition_default_rows{table}``: rows in the default partition; above 0 means some
  write found no partition (they are moved out on the next run that creates it);
* ``db_partition_maintenance_total{outcome}``: runs done, skipped (another replica held the
  lock) and failed; ``db_partitions_dropped_total{table}``, ``db_partitions_created_total``.

``python -m common.partition_maintenance [DATABASE_URL]`` (``make db-status``) prints every
partitioned table of the database with the same figures.
"""

import asyncio
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Sequence

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.partitions import (
    MaintenanceResult,
    PartitionedTable,
    TableStatus,
    database_status,
    maintain_locked,
    status,
)
from common.settings import ServiceSettings

logger = logging.getLogger("common.partition_maintenance")

AHEAD = Gauge(
    "db_partition_ahead_seconds",
    "How far past now the newest partition of the table reaches",
    ["table"],
)
DEFAULT_ROWS = Gauge(
    "db_partition_default_rows",
    "Rows in the table's default partition (no partition covered them)",
    ["table"],
)
PARTITIONS = Gauge("db_partitions", "Partitions of the table", ["table"])
RUNS = Counter("db_partition_maintenance_total", "Partition maintenance runs", ["outcome"])
CREATED = Counter("db_partitions_created_total", "Partitions created ahead", ["table"])
DROPPED = Counter("db_partitions_dropped_total", "Partitions dropped by retention", ["table"])


def configured(
    tables: Sequence[PartitionedTable], settings: ServiceSettings
) -> list[PartitionedTable]:
    """``tables`` with the settings' overrides of interval, retention and how far ahead."""
    result = []
    for table in tables:
        retention = settings.partition.retention_days.get(table.name, table.retention_days)
        if table.name == "inbox":
            retention = math.ceil(settings.inbox.retention_hours / 24)
        result.append(
            dataclasses.replace(
                table,
                interval=settings.partition.intervals.get(table.name, table.interval),
                retention_days=retention,
                ahead_days=settings.partition.ahead_days,
            )
        )
    return result


class PartitionMaintainer:
    """One run: maintain the schema's tables (if this process gets the lock), then measure."""

    def __init__(self, engine: AsyncEngine, tables: Sequence[PartitionedTable]) -> None:
        self.engine = engine
        self.tables = list(tables)
        self.schema = self.tables[0].schema if self.tables else ""

    async def run(self) -> MaintenanceResult | None:
        if not self.tables:
            return None
        try:
            result = await maintain_locked(self.engine, self.schema, self.tables)
        except Exception:
            RUNS.labels("failed").inc()
            raise
        finally:
            await self.measure()
        RUNS.labels("skipped" if result.skipped else "done").inc()
        for name in result.created:
            CREATED.labels(name.rsplit("_p", 1)[0]).inc()
        for name in result.dropped:
            DROPPED.labels(name.rsplit("_p", 1)[0]).inc()
        if result.created or result.dropped or result.moved_rows:
            logger.info(
                "partitions maintained",
                extra={
                    "created": result.created,
                    "dropped": result.dropped,
                    "moved_rows": result.moved_rows,
                },
            )
        return result

    async def measure(self) -> list[TableStatus]:
        """Every replica reports the figures, holder of the lock or not."""
        statuses = []
        async with self.engine.connect() as connection:
            for table in self.tables:
                table_status = await status(connection, table.schema, table.name)
                statuses.append(table_status)
                AHEAD.labels(table.name).set(table_status.ahead_seconds)
                DEFAULT_ROWS.labels(table.name).set(table_status.default_rows)
                PARTITIONS.labels(table.name).set(len(table_status.partitions))
        return statuses


def format_status(statuses: Sequence[TableStatus]) -> str:
    """The operator's view: one line per table, then its partitions."""
    lines = []
    for table in statuses:
        alert = "  ALERT: rows in the default partition" if table.default_rows else ""
        if table.ahead_seconds < 86_400:
            alert += "  ALERT: less than a day of partitions ahead"
        lines.append(
            f"{table.table}: {len(table.partitions)} partitions, "
            f"{table.ahead_seconds / 86_400:.1f} days ahead, "
            f"{table.default_rows} rows in default{alert}"
        )
        for partition in table.partitions:
            bounds = (
                "DEFAULT"
                if partition.lower is None and partition.upper is None
                else f"{partition.lower or 'MINVALUE'} .. {partition.upper or 'MAXVALUE'}"
            )
            lines.append(f"    {partition.name:<36} {bounds}  ~{partition.rows_estimate} rows")
    return "\n".join(lines)


async def _print_status(url: str) -> None:
    engine = create_async_engine(url, connect_args={"timeout": 10})
    try:
        async with engine.connect() as connection:
            print(format_status(await database_status(connection)) or "no partitioned tables")
    finally:
        await engine.dispose()


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DATABASE_URL", "")
    if not url:
        sys.exit("usage: python -m common.partition_maintenance DATABASE_URL")
    asyncio.run(_print_status(url.replace("postgresql://", "postgresql+asyncpg://", 1)))


if __name__ == "__main__":
    main()
