"""The read-path baseline: a bare FastAPI app, one raw asyncpg ``fetchrow`` per request.

``GET /users/{id}`` answers the same fields as the users service's ``GET /users/{id}``,
read from the same tables of the same database in one statement: the user's row plus the
sum of their active credit reservations (``credit_available_cents``). What it leaves out,
on purpose, is everything the service adds around that read: no bearer-token lookup, no
rate limiting, no read cache, no middleware (request id, metrics, access log), no response
model validation. It is served exactly as the services are (``common.http.serve``): one
uvicorn process, ``loop``/``http`` on "auto" (uvloop and httptools, both installed), no
access log, the same keep-alive.

Run: ``python -m bench.baseline.app --port 28010 --dsn postgresql://postgres@127.0.0.1/app``
"""

import argparse
import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI, HTTPException, Request

QUERY = """
SELECT u.id, u.email, u.name, u.status, u.credit_limit_cents,
       (u.credit_limit_cents - COALESCE(
           (SELECT sum(r.amount_cents) FROM users.credit_reservations r
             WHERE r.user_id = u.id AND r.status = 'active'), 0))::bigint
         AS credit_available_cents,
       u.created_at
  FROM users.users u
 WHERE u.id = $1
"""
# The same pool bounds as an API's SQLAlchemy engine (db.pool_size 6 + db.max_overflow 2).
POOL_MIN, POOL_MAX = 6, 8


def create_app(dsn: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=POOL_MIN, max_size=POOL_MAX)
        loop = type(asyncio.get_running_loop())
        print(f"baseline: event loop {loop.__module__}.{loop.__name__}", file=sys.stderr)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="read-path baseline", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/users/{user_id}")
    async def get_user(user_id: uuid.UUID, request: Request) -> dict[str, Any]:
        row = await request.app.state.pool.fetchrow(QUERY, user_id)
        if row is None:
            raise HTTPException(status_code=404)
        return dict(row)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="postgresql://... (asyncpg form)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=28010)
    args = parser.parse_args()
    # The settings of common.http.serve, so the only difference is the app itself.
    uvicorn.run(
        create_app(args.dsn),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
