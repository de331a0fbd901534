"""Start a benchmark from nothing: drop the bench database and empty the bench Redis DB.

Every run then measures the same state (no orders, reservations or streams left over by an
earlier run). Refuses any database not named like ``*bench*``, so it can never hit ``app``.

Usage: python -m bench.reset postgresql://postgres@127.0.0.1:5432/app_bench redis://127.0.0.1:6379/13
"""

import asyncio
import sys

import asyncpg
from redis.asyncio import Redis


async def reset(database_url: str, redis_url: str) -> None:
    base, _, name = database_url.replace("+asyncpg", "").rpartition("/")
    name = name.split("?")[0]
    if "bench" not in name or not redis_url.rstrip("/").split("/")[-1].isdigit():
        raise SystemExit(f"refusing to reset {name!r} / {redis_url!r}: not a bench database")
    admin = await asyncpg.connect(f"{base}/postgres", timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()
    print(f"  dropped database {name}, flushed {redis_url}")


if __name__ == "__main__":
    asyncio.run(reset(sys.argv[1], sys.argv[2]))
