"""pytest plugin (registered through the ``pytest11`` entry point of ``common``).

Tests talk to the real Postgres and Redis, never mocks of them:

* ``database_url``: a throwaway database created for this test run and dropped after it.
  Each service's conftest migrates its own schema into it with :func:`migrate`.
* ``redis.url``: a Redis database number of its own (``TEST_REDIS_DB``, default 15),
  flushed before the run so leftovers of an earlier run cannot leak in.

Where they live is configurable: ``TEST_POSTGRES_URL`` (an admin URL, default
``postgresql://postgres@127.0.0.1:5432/postgres``) and ``TEST_REDIS_URL``.

Started only for the tests that ask (``common.testing.cluster``, torn down after the run):

* ``redis_cluster``: a private 3-primary Redis Cluster (``TEST_CLUSTER_PORT_BASE``, default
  17000: the first free run of ports from there).
* ``postgres_pair``: a private Postgres primary and its streaming replica
  (``TEST_PG_PAIR_PORT``, default 17090, and the next port).

Under pytest-xdist (``make unit`` runs ``-n 2``) each worker process is a run of its own: its
own throwaway database, Redis database ``TEST_REDIS_DB`` minus the worker's index, and ports
moved up by 100 per worker (:func:`worker_port`), so the workers never share a key or a port.
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis

from common.auth import create_session
from common.testing.cluster import (
    RUN_DIR,
    LocalPostgresPair,
    LocalRedisCluster,
    free_port_run,
)
from common.testing.servers import private_directory

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# pytest-xdist names its workers gw0, gw1...; a run without it is worker 0.
WORKER_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15")) - WORKER_INDEX


def worker_port(base: int) -> int:
    """``base`` moved into this worker's own range of ports (100 a worker)."""
    return base + 100 * WORKER_INDEX


CLUSTER_PORT_BASE = worker_port(int(os.environ.get("TEST_CLUSTER_PORT_BASE", "17000")))
PG_PAIR_PORT = worker_port(int(os.environ.get("TEST_PG_PAIR_PORT", "17090")))


def _with_database(admin_url: str, database: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{database}".replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A fresh database for the whole run (SQLAlchemy asyncpg URL), dropped afterwards."""
    async with throwaway_database() as url:
        yield url


@pytest.fixture(scope="session")
async def cluster_database_url() -> AsyncIterator[str]:
    """A second fresh database, for the suites' pass on a Redis Cluster (``redis_target``)."""
    async with throwaway_database() as url:
        yield url


async def as_admin(statement: str) -> None:
    """One statement on a connection of its own as the test server's admin (CREATE or DROP of
    a database or a role: statements no transaction may hold)."""
    admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    await as_admin(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        await as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str]:
    """A Redis database number reserved for tests, empty at the start of the run."""
    url = f"{REDIS_BASE_URL}/{REDIS_DB}"
    client = Redis.from_url(url)
    try:
        await client.flushdb()
        yield url
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A private 3-primary Redis Cluster for the run (about 2 s to start)."""
    base = free_port_run(CLUSTER_PORT_BASE, 3)
    cluster = LocalRedisCluster(base, directory=RUN_DIR / f"test-redis-cluster-{base}")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_pair() -> Iterator[LocalPostgresPair]:
    """A private Postgres primary with a streaming replica (about 5 s to start; its data in
    the system's temporary directory, which the ``postgres`` user can reach, unlike pytest's
    or a checkout under a private home)."""
    port = free_port_run(PG_PAIR_PORT, 2)
    pair = LocalPostgresPair(port, port + 1, directory=private_directory("pg-pair"))
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


@dataclass(frozen=True)
class RedisTarget:
    """Where a service suite's Redis is (the run's database, or the private cluster), and
    the Postgres database it uses with it: one per pass, so no pass sees another's rows."""

    url: str
    database_url: str
    cluster_nodes: str = ""

    def settings(self, bus_stream_prefix: str = "bus:") -> dict[str, Any]:
        """Settings fields for it (the ``redis`` and ``bus`` groups, as keyword arguments of a
        settings class); on a cluster the bus prefix becomes a hash tag."""
        if not self.cluster_nodes:
            return {"redis": {"url": self.url}, "bus": {"stream_prefix": bus_stream_prefix}}
        tagged = "{" + bus_stream_prefix.rstrip(":") + "}:"
        return {
            "redis": {"url": self.url, "cluster_nodes": self.cluster_nodes},
            "bus": {"stream_prefix": tagged},
        }


@pytest.fixture(
    scope="session",
    params=["redis", pytest.param("redis-cluster", marks=pytest.mark.cluster)],
)
def redis_target(request: pytest.FixtureRequest, redis_url: str) -> RedisTarget:
    """Runs a suite twice: on a single Redis, then on a private 3-primary Redis Cluster."""
    if request.param == "redis":
        return RedisTarget(redis_url, request.getfixturevalue("database_url"))
    cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
    database: str = request.getfixturevalue("cluster_database_url")
    return RedisTarget(redis_url, database, cluster.nodes)


async def migrate(service_dir: Path, database_url: str) -> None:
    """Run a service's Alembic migrations to head against ``database_url``."""
    await alembic(service_dir, database_url, "upgrade", "head")


async def alembic(service_dir: Path, database_url: str, verb: str, revision: str) -> None:
    """``alembic <verb> <revision>`` (``upgrade``/``downgrade``) for a service's migrations.

    Alembic's async env runs its own event loop, so it goes to a worker thread.
    """
    config = Config(str(service_dir / "alembic.ini"))
    config.set_main_option("script_location", str(service_dir / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url)
    await asyncio.to_thread(getattr(command, verb), config, revision)


@pytest.fixture
async def empty_database() -> AsyncIterator[tuple[str, str]]:
    """A database of its own (asyncpg URL, SQLAlchemy URL), for a test that migrates it up
    and down; dropped after the test."""
    async with throwaway_database() as url:
        yield url.replace("postgresql+asyncpg://", "postgresql://", 1), url


async def sign_in_as_a_new_user(client: httpx.AsyncClient, redis_url: str) -> uuid.UUID:
    """Give ``client`` the bearer token of a fresh session for a new user id; returns the id
    (the services check only the session, so no account needs to exist)."""
    user_id = uuid.uuid4()
    redis = Redis.from_url(redis_url)
    try:
        issued = await create_session(redis, user_id, 600)
    finally:
        await redis.aclose()
    client.headers["Authorization"] = f"Bearer {issued.token}"
    return user_id


@asynccontextmanager
async def asgi_client(
    app: FastAPI, client_address: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client wired straight to the app, with its lifespan run around it.
    ``client_address``: the peer the app sees (a suite of its own keeps its own sign-up and
    login budget, which is per address)."""
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=False, client=(client_address, 40000)
    )
    async with LifespanManager(app) as manager:
        transport.app = manager.app
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
