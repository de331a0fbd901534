"""The shared app pieces: problem+json for every error, request ids, probes, metrics."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter
from prometheus_client import REGISTRY
from pydantic import BaseModel
from redis.asyncio.connection import Connection
from sqlalchemy import text

from common.http import DatabaseDep, create_service_app
from common.settings import ServiceSettings
from common.testing.plugin import asgi_client
from common.unavailable import is_unavailable
from common.version import VERSION

pytestmark = pytest.mark.integration

router = APIRouter()


class Body(BaseModel):
    count: int


@router.post("/things")
async def create_thing(body: Body) -> Body:
    return body


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@router.get("/deadlock-victim")
async def deadlock_victim(db: DatabaseDep) -> None:
    async with db.session() as session:  # the server raises it, as for a deadlock's victim
        await session.execute(
            text("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$")
        )


@router.get("/redis-torn-down")
async def redis_torn_down() -> None:
    # A connection whose writer is gone, as a Redis Cluster fail-over leaves it mid-send.
    await Connection()._send_packed_command([b"PING"])


@pytest.fixture(scope="module")
async def client(database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings(database_url=database_url, redis={"url": redis_url})
    app = create_service_app(settings, title="test", routers=[router])
    async with asgi_client(app) as client:
        yield client


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient):
    problem(await client.get("/nowhere"), 404)


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient):
    problem(await client.delete("/things"), 405)


async def test_unexpected_error_is_a_500_problem_without_internals(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
):
    response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.headers["x-request-id"] == "req-500"
    [logged] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    # The traceback in the log can be found by the request id.
    assert getattr(logged, "request_id", None) == "req-500"
    body = problem(response, 500)
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert body["detail"]


async def test_validation_error_names_the_field(client: httpx.AsyncClient):
    body = problem(await client.post("/things", json={"count": "many"}), 422)
    assert body["errors"] == [
        {
            "field": "count",
            "in": "body",
            "message": body["errors"][0]["message"],
            "type": "int_parsing",
        }
    ]


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient):
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    generated = await client.get("/healthz")
    assert echoed.headers["x-request-id"] == "abc-123"
    assert len(generated.headers["x-request-id"]) == 32


async def test_readyz_checks_postgres_and_redis(client: httpx.AsyncClient):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "version": VERSION}
    metrics = (await client.get("/metrics")).text
    assert f'build_info{{service="service",version="{VERSION}"}} 1.0' in metrics


async def test_readyz_is_503_when_postgres_is_unreachable(redis_url: str):
    settings = ServiceSettings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none", redis={"url": redis_url}
    )
    async with asgi_client(create_service_app(settings, title="t", routers=[])) as client:
        body = problem(await client.get("/readyz"), 503)
    assert "postgres" in str(body["detail"])


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient):
    await client.post("/things", json={"count": 1})
    metrics = (await client.get("/metrics")).text
    assert 'http_requests_total{method="POST",route="/things",status="200"}' in metrics


async def test_a_transaction_postgres_rolled_back_for_a_deadlock_is_a_503_to_retry(
    client: httpx.AsyncClient,
):
    response = await client.get("/deadlock-victim")
    problem(response, 503)
    assert response.headers["retry-after"] == "1"


async def test_a_redis_connection_torn_down_mid_send_is_a_503_handled_inside_the_app(
    database_url: str, redis_url: str
):
    """Answered like any other outage and not re-raised to the server, which would log a
    traceback and close the client's keep-alive connection (this client raises what the
    app re-raises)."""
    settings = ServiceSettings(database_url=database_url, redis={"url": redis_url})
    app = create_service_app(settings, title="test", routers=[router])
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://t"
        ) as strict,
    ):
        response = await strict.get("/redis-torn-down")
    problem(response, 503)
    assert response.headers["retry-after"] == "1"


async def test_an_unreachable_database_is_a_503_problem_not_a_500(redis_url: str):
    down = APIRouter()

    @down.get("/needs-db")
    async def needs_db(db: DatabaseDep) -> dict[str, str]:
        await db.ping()
        return {"ok": "yes"}

    settings = ServiceSettings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none", redis={"url": redis_url}
    )
    async with asgi_client(create_service_app(settings, title="t", routers=[down])) as client:
        response = await client.get("/needs-db")
    body = problem(response, 503)
    assert response.headers["retry-after"] == "1"
    assert "Traceback" not in body["detail"]


async def test_past_capacity_a_request_is_refused_at_once_with_retry_after(
    database_url: str, redis_url: str
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    slow = APIRouter()

    @slow.get("/slow")
    async def wait_for_release() -> dict[str, bool]:
        entered.set()
        await release.wait()
        return {"done": True}

    settings = ServiceSettings(
        database_url=database_url, redis={"url": redis_url}, http={"max_in_flight": 1}
    )
    app = create_service_app(settings, title="test", routers=[slow])
    async with asgi_client(app) as client:
        first = asyncio.create_task(client.get("/slow"))
        async with asyncio.timeout(5):
            await entered.wait()  # the first holds the only slot
        shed_before = REGISTRY.get_sample_value("http_requests_shed_total") or 0.0
        refused = await client.get("/slow")
        assert REGISTRY.get_sample_value("http_requests_shed_total") == shed_before + 1
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["X-Request-ID"]
        problem(refused, 503)
        assert (await client.get("/healthz")).status_code == 200  # probes are never shed
        release.set()
        assert (await first).status_code == 200
        assert (await client.get("/slow")).status_code == 200  # capacity is back


def test_a_redis_connection_torn_down_mid_send_counts_as_unavailable() -> None:
    """What redis-py raises when a cluster fail-over closes a connection under a send."""
    connection = Connection()  # never connected: its writer is None, as after a teardown

    async def send() -> None:
        await connection._send_packed_command([b"PING"])

    with pytest.raises(AttributeError) as torn_down:
        asyncio.run(send())
    assert is_unavailable(torn_down.value)
    with pytest.raises(AttributeError) as bug:
        raise AttributeError("an application bug, not Redis")
    assert not is_unavailable(bug.value)


async def test_readyz_is_503_draining_while_the_drain_file_exists(
    database_url: str, redis_url: str, tmp_path
):
    drain_file = tmp_path / "draining"
    settings = ServiceSettings(
        database_url=database_url, redis={"url": redis_url}, drain_file=str(drain_file)
    )
    async with asgi_client(create_service_app(settings, title="t", routers=[])) as client:
        assert (await client.get("/readyz")).status_code == 200
        drain_file.touch()  # what the pod's preStop hook does before SIGTERM
        draining = await client.get("/readyz")
        assert draining.status_code == 503
        assert "draining" in draining.json()["detail"]
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
        drain_file.unlink()
        assert (await client.get("/readyz")).status_code == 200
