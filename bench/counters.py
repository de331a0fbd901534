"""Measurement of the bus and the stores: the workers' bus metrics (latency histogram,
failures, dead letters) and Postgres/Redis work counters, as deltas over a step."""

from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from bench import histograms
from bench.config import Config

BUS_METRIC = "bus_handle_latency_seconds"
BUS_LABELS = ("group", "type")


@dataclass(frozen=True)
class BusScrape:
    """The bus metrics of the three workers at one instant."""

    latency: histograms.Series
    failed: dict[tuple[str, ...], float]
    dead_lettered: dict[tuple[str, ...], float]


async def scrape_bus(client: httpx.AsyncClient, config: Config) -> BusScrape:
    latency: histograms.Series = {}
    failed: dict[tuple[str, ...], float] = {}
    dead: dict[tuple[str, ...], float] = {}
    for url in config.worker_metrics:  # (group, type) is unique to one worker
        text = await histograms.fetch(client, url)
        latency.update(histograms.parse_histogram(text, BUS_METRIC, BUS_LABELS))
        failed.update(histograms.parse_counter(text, "bus_messages_failed", BUS_LABELS))
        dead.update(histograms.parse_counter(text, "bus_messages_dead_lettered", BUS_LABELS))
    return BusScrape(latency, failed, dead)


def bus_summary(before: BusScrape, after: BusScrape) -> dict[str, Any]:
    series = histograms.delta(before.latency, after.latency)
    merged = histograms.merge(series)

    def ms(q: float, buckets: dict[float, float]) -> float | None:
        value = histograms.quantile(buckets, q)
        return None if value is None else value * 1000

    def grown(
        old: dict[tuple[str, ...], float], new: dict[tuple[str, ...], float]
    ) -> dict[str, int]:
        return {
            "/".join(key): round(value - old.get(key, 0.0))
            for key, value in sorted(new.items())
            if value - old.get(key, 0.0) > 0
        }

    return {
        "count": histograms.count(merged),
        "p50_ms": ms(0.5, merged),
        "p99_ms": ms(0.99, merged),
        "by_type": {
            f"{group}/{kind}": {
                "count": histograms.count(buckets),
                "p50_ms": ms(0.5, buckets),
                "p99_ms": ms(0.99, buckets),
            }
            for (group, kind), buckets in sorted(series.items())
            if histograms.count(buckets)
        },
        "handler_failures": grown(before.failed, after.failed),
        "dead_lettered": grown(before.dead_lettered, after.dead_lettered),
    }


async def backend_counters(pool: asyncpg.Pool, redis: Redis) -> dict[str, float]:
    """Cumulative work counters of Postgres (this database) and Redis (the whole server)."""
    row = await pool.fetchrow(
        "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database"
        " WHERE datname = current_database()"
    )
    stats = await redis.info("stats")
    return {
        "pg_commits": float(row["xact_commit"]),
        "pg_rollbacks": float(row["xact_rollback"]),
        "pg_sessions": float(row["sessions"]),
        "redis_commands": float(stats["total_commands_processed"]),
    }
