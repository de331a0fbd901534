"""Create the application database if it does not exist yet (used by `make up` / `make migrate`).

Usage: python scripts/ensure_database.py postgresql://postgres@127.0.0.1:5432/app
"""

import asyncio
import sys

import asyncpg


async def ensure_database(url: str) -> None:
    base, _, name = url.replace("+asyncpg", "").rpartition("/")
    name = name.split("?")[0]
    admin = await asyncpg.connect(f"{base}/postgres", timeout=10)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(ensure_database(sys.argv[1]))
