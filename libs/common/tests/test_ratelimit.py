"""Rate limits: shared through Redis, per user or per address, 429 problem with headers.

Every test runs on a single Redis and on a Redis Cluster (``redis_target``)."""

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, FastAPI

from common.auth import (
    AuthenticatedUser,
    CurrentUser,
    claimed_user,
    create_session,
    revoke_session,
)
from common.http import create_service_app, serve
from common.ratelimit import READ_LIMIT, CallerRead, caller_read, client_address
from common.redis import create_redis
from common.settings import ServiceSettings
from common.testing.plugin import RedisTarget, asgi_client

pytestmark = pytest.mark.integration

router = APIRouter()


@router.get("/limited", dependencies=[READ_LIMIT])
async def limited() -> dict[str, str]:
    return {"ok": "yes"}


@router.get("/mine", dependencies=[READ_LIMIT])
async def mine(caller: CurrentUser) -> dict[str, str]:
    return {"user": str(caller.id)}


def _note_key(user_id: uuid.UUID) -> str:
    return f"test-note:{{{user_id}}}"


OwnNote = Annotated[CallerRead, Depends(caller_read("read", lambda uid: [_note_key(uid)]))]


@router.get("/own-note")
async def own_note(read: OwnNote, caller: CurrentUser) -> dict[str, str | None]:
    """The caller's note, read with the session; CurrentUser then costs no second lookup."""
    assert caller == read.caller
    return {"user": str(read.caller.id), "note": read.values[0]}


def settings_for(target: RedisTarget, read_limit: str) -> ServiceSettings:
    return ServiceSettings(
        service_name=f"ratelimit-{uuid.uuid4().hex[:8]}",  # a fresh namespace per app
        database_url=target.database_url,
        **target.settings(),
        rate_limit={"read": read_limit},
    )


@pytest.fixture
async def client(redis_target: RedisTarget) -> AsyncIterator[httpx.AsyncClient]:
    app = create_service_app(settings_for(redis_target, "3/second"), title="t", routers=[router])
    async with asgi_client(app) as client:
        yield client


async def test_over_the_limit_is_a_429_problem_with_retry_after(client: httpx.AsyncClient):
    answers = [await client.get("/limited") for _ in range(4)]

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[3]
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["ratelimit-reset"]) <= 1


async def test_the_limit_resets_after_its_window(client: httpx.AsyncClient):
    for _ in range(3):
        await client.get("/limited")
    assert (await client.get("/limited")).status_code == 429

    deadline = time.monotonic() + 5
    status = 429
    while status == 429 and time.monotonic() < deadline:
        status = (await client.get("/limited")).status_code
        if status == 429:
            await _pause()
    assert status == 200


async def test_users_are_counted_apart_from_each_other_and_from_anonymous_callers(
    redis_target: RedisTarget,
):
    settings = settings_for(redis_target, "2/minute")
    app = create_service_app(settings, title="t", routers=[router])
    async with asgi_client(app) as client:
        redis = create_redis(settings)
        alice = await create_session(redis, uuid.uuid4(), 60)
        bob = await create_session(redis, uuid.uuid4(), 60)
        await redis.aclose()

        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        alice_codes = [
            (await client.get("/mine", headers=as_(alice.token))).status_code for _ in range(3)
        ]
        bob_codes = [
            (await client.get("/mine", headers=as_(bob.token))).status_code for _ in range(2)
        ]
        anonymous = (await client.get("/limited")).status_code

    assert alice_codes == [200, 200, 429]
    assert bob_codes == [200, 200]
    assert anonymous == 200


async def test_a_caller_read_authenticates_counts_and_reads_in_one_call(
    redis_target: RedisTarget,
):
    """The session, the caller's read limit and their own keys: one script, on a single Redis
    and across a cluster's slots alike (every key carries the user's hash tag)."""
    settings = settings_for(redis_target, "2/minute")
    app = create_service_app(settings, title="t", routers=[router])
    redis = create_redis(settings)
    async with asgi_client(app) as client:
        alice = await create_session(redis, uuid.uuid4(), 60)
        bob = await create_session(redis, uuid.uuid4(), 60)
        await redis.set(_note_key(alice.user_id), "alice's note")
        as_alice = {"Authorization": f"Bearer {alice.token}"}

        first = await client.get("/own-note", headers=as_alice)
        # Bob's secret under Alice's id names no session: a forged token is a 401.
        forged = f"{alice.user_id}.{bob.token.partition('.')[2]}"
        forged_answer = await client.get("/own-note", headers={"Authorization": f"Bearer {forged}"})
        bob_answer = await client.get("/own-note", headers={"Authorization": f"Bearer {bob.token}"})
        second = await client.get("/own-note", headers=as_alice)
        third = await client.get("/own-note", headers=as_alice)  # over Alice's 2/minute
        await revoke_session(redis, claimed(alice.token))
        revoked = await client.get("/own-note", headers=as_alice)
        anonymous = await client.get("/own-note")
    await redis.aclose()

    assert first.json() == {"user": str(alice.user_id), "note": "alice's note"}
    assert forged_answer.status_code == 401
    assert bob_answer.json() == {"user": str(bob.user_id), "note": None}
    assert second.status_code == 200
    assert third.status_code == 429
    assert third.headers["ratelimit-limit"] == "2"
    assert int(third.headers["retry-after"]) >= 1
    assert (revoked.status_code, anonymous.status_code) == (401, 401)


def claimed(token: str) -> AuthenticatedUser:
    user = claimed_user(token)
    assert user is not None
    return user


async def test_replicas_share_one_limit(redis_target: RedisTarget):
    settings = settings_for(redis_target, "2/minute")
    first = create_service_app(settings, title="a", routers=[router])
    second = create_service_app(settings, title="b", routers=[router])
    async with asgi_client(first) as one, asgi_client(second) as two:
        codes = [
            (await one.get("/limited")).status_code,
            (await two.get("/limited")).status_code,
            (await one.get("/limited")).status_code,
        ]
    assert codes == [200, 200, 429]


async def _pause() -> None:
    await asyncio.sleep(0.1)


@asynccontextmanager
async def client_from(app: FastAPI, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    """Like ``asgi_client``, with the TCP peer the app sees chosen by the test."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=(peer, 40_000)),
            base_url="http://testserver",
        ) as client,
    ):
        yield client


def app_trusting(target: RedisTarget, trusted: str) -> FastAPI:
    settings = settings_for(target, "2/minute").model_copy(
        update={"trusted_proxies": ServiceSettings(trusted_proxies=trusted).trusted_proxies}
    )
    return create_service_app(settings, title="t", routers=[router])


async def test_a_forged_forwarded_header_from_an_untrusted_peer_gets_no_fresh_bucket(
    redis_target: RedisTarget,
):
    app = app_trusting(redis_target, "10.0.0.0/8")
    async with client_from(app, "198.51.100.7") as client:
        codes = [
            (
                await client.get("/limited", headers={"X-Forwarded-For": f"203.0.113.{n}"})
            ).status_code
            for n in range(3)
        ]
    assert codes == [200, 200, 429]


async def test_without_trusted_proxies_even_a_local_peer_is_not_believed(
    redis_target: RedisTarget,
):
    settings = settings_for(redis_target, "2/minute")
    assert settings.trusted_proxies == ()
    app = create_service_app(settings, title="t", routers=[router])
    async with client_from(app, "127.0.0.1") as client:
        codes = [
            (await client.get("/limited", headers={"X-Forwarded-For": f"192.0.2.{n}"})).status_code
            for n in range(3)
        ]
    assert codes == [200, 200, 429]


async def test_a_trusted_proxy_gets_a_bucket_per_forwarded_client(
    redis_target: RedisTarget,
):
    app = app_trusting(redis_target, "10.0.0.0/8, fd00::/8")
    async with client_from(app, "10.244.1.5") as proxy:

        async def via_proxy(forwarded: str) -> int:
            response = await proxy.get("/limited", headers={"X-Forwarded-For": forwarded})
            return response.status_code

        first = [await via_proxy("203.0.113.1") for _ in range(3)]
        # Another client behind the same proxy, through a second trusted hop: its own bucket.
        second = [await via_proxy("203.0.113.2, 10.0.0.9") for _ in range(2)]
        # A client that writes the header itself: the proxy appends the real address, and the
        # rightmost untrusted hop counts, so the forged part buys nothing.
        forging = [await via_proxy(f"198.18.0.{n}, 203.0.113.2") for n in range(2)]
    assert first == [200, 200, 429]
    assert second == [200, 200]
    assert forging == [429, 429]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.7", ["203.0.113.1"], "198.51.100.7"),  # untrusted peer: header ignored
        ("10.0.0.1", [], "10.0.0.1"),  # trusted peer, nothing forwarded: the proxy itself
        ("10.0.0.1", ["203.0.113.1"], "203.0.113.1"),
        ("10.0.0.1", ["1.1.1.1, 203.0.113.1"], "203.0.113.1"),  # left part is the client's
        ("10.0.0.1", ["203.0.113.1, 10.0.0.2"], "203.0.113.1"),  # trusted hops skipped
        ("10.0.0.1", ["203.0.113.1", "10.0.0.2"], "203.0.113.1"),  # repeated header
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all trusted: the leftmost
        ("10.0.0.1", ["203.0.113.1, garbage"], "10.0.0.1"),  # not an address: stop there
        ("::ffff:10.0.0.1", ["203.0.113.1"], "203.0.113.1"),  # dual-stack IPv4 peer
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
        (None, ["203.0.113.1"], "unknown"),
    ],
)
def test_client_address_believes_only_trusted_hops(
    peer: str | None, forwarded: list[str], expected: str
):
    trusted = ServiceSettings(trusted_proxies="10.0.0.0/8,fd00::/8").trusted_proxies

    assert client_address(peer, forwarded, trusted) == expected


def test_serve_leaves_forwarded_headers_to_common():
    """uvicorn's own proxy handling would rewrite the peer from X-Forwarded-For (it trusts
    127.0.0.1 by default): the entry point turns it off."""
    source = inspect.getsource(serve)

    assert "proxy_headers=False" in source
