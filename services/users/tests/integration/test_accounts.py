"""Sign out everywhere, password change, and why password hashing cannot be a CPU flood
(issue 17: sign-up and login per address whatever the token, IPv6 per /64, a per-email
failure limit, hashes in flight bounded, unknown emails cost a hash)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from common.settings import with_changes
from users.main import create_app
from users.passwords import HashingBusy, Passwords
from users.settings import Settings

from .test_users_api import assert_problem, bearer, new_user, register_and_login

pytestmark = pytest.mark.integration


@asynccontextmanager
async def users_app(settings: Settings, **overrides: Any) -> AsyncIterator[Any]:
    async with LifespanManager(create_app(with_changes(settings, **overrides))) as manager:
        yield manager.app


def client_from(app: Any, address: str) -> httpx.AsyncClient:
    """A client whose requests come from ``address`` (the ASGI peer)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def random_ipv4() -> str:
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2] or 1}"


@pytest.fixture
async def users_client(users_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of its own address: these tests do not spend the shared client's budget of
    sign-ups and logins (counted per address)."""
    async with users_app(users_settings) as app, client_from(app, random_ipv4()) as client:
        yield client


async def test_sign_out_everywhere_ends_every_session(users_client: httpx.AsyncClient):
    body = new_user()
    await users_client.post("/users", json=body)
    credentials = {"email": body["email"], "password": body["password"]}
    tokens = [(await users_client.post("/users/sessions", json=credentials)).json()["token"]]
    tokens.append((await users_client.post("/users/sessions", json=credentials)).json()["token"])

    ended = await users_client.delete("/users/sessions", headers=bearer(tokens[0]))

    assert ended.status_code == 204
    for token in tokens:
        assert_problem(await users_client.get("/users/me", headers=bearer(token)), 401)


async def test_a_password_change_needs_the_current_one_and_ends_the_other_sessions(
    users_client: httpx.AsyncClient,
):
    body = new_user()
    _, this_token = await register_and_login(users_client, **body)
    credentials = {"email": body["email"], "password": body["password"]}
    other_token = (await users_client.post("/users/sessions", json=credentials)).json()["token"]

    wrong = await users_client.put(
        "/users/me/password",
        json={"current_password": "not the password", "new_password": "a new password"},
        headers=bearer(this_token),
    )
    assert_problem(wrong, 403)
    changed = await users_client.put(
        "/users/me/password",
        json={"current_password": body["password"], "new_password": "a new password"},
        headers=bearer(this_token),
    )

    assert changed.status_code == 204
    assert (await users_client.get("/users/me", headers=bearer(this_token))).status_code == 200
    assert_problem(await users_client.get("/users/me", headers=bearer(other_token)), 401)
    assert_problem(await users_client.post("/users/sessions", json=credentials), 401)
    renewed = {"email": body["email"], "password": "a new password"}
    assert (await users_client.post("/users/sessions", json=renewed)).status_code == 201


async def test_a_token_does_not_move_sign_up_and_login_to_another_bucket(
    users_settings: Settings,
):
    """Defect 4: after its 429, the address stays refused whatever token it sends."""
    async with (
        users_app(users_settings, rate_limit={"auth": "3/minute"}) as app,
        client_from(app, random_ipv4()) as first,
    ):
        _, token = await register_and_login(first)  # 2 of the address's 3
        wrong = {"email": "nobody@example.com", "password": "wrong password"}
        assert_problem(await first.post("/users/sessions", json=wrong), 401)
        refused = await first.post("/users/sessions", json=wrong, headers=bearer(token))
        assert_problem(refused, 429)
        assert refused.headers["retry-after"]
        signup = await first.post("/users", json=new_user(), headers=bearer(token))
        assert_problem(signup, 429)


async def test_ipv6_clients_are_counted_per_64(users_settings: Settings):
    prefix = f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:{uuid.uuid4().int % 0xFFFF:x}"
    wrong = {"email": "nobody@example.com", "password": "wrong password"}
    async with users_app(users_settings, rate_limit={"auth": "2/minute"}) as app:
        for host in ("1", "2"):
            async with client_from(app, f"{prefix}::{host}") as client:
                assert_problem(await client.post("/users/sessions", json=wrong), 401)
        async with client_from(app, f"{prefix}::3") as same_64:
            assert_problem(await same_64.post("/users/sessions", json=wrong), 429)
        async with client_from(
            app, f"{prefix[:-1]}{'0' if prefix[-1] != '0' else '1'}::1"
        ) as other:
            assert_problem(await other.post("/users/sessions", json=wrong), 401)


async def test_failed_logins_are_limited_per_email_from_any_address(users_settings: Settings):
    async with users_app(users_settings, login={"failures_per_email": 3}) as app:
        async with client_from(app, random_ipv4()) as client:
            body = new_user()
            assert (await client.post("/users", json=body)).status_code == 201
            wrong = {"email": body["email"], "password": "wrong password"}
            for _ in range(3):
                assert_problem(await client.post("/users/sessions", json=wrong), 401)
        async with client_from(app, random_ipv4()) as elsewhere:
            right = {"email": body["email"], "password": body["password"]}
            refused = await elsewhere.post("/users/sessions", json=right)
            assert_problem(refused, 429)
            assert int(refused.headers["retry-after"]) > 0


async def test_hashes_in_flight_are_bounded_and_unknown_emails_cost_one(
    users_settings: Settings,
):
    """Defect 8 too: with the only slot taken, checking an unknown email is refused like
    any other check, so it runs the hasher (before, it answered False at once)."""
    passwords = Passwords(
        with_changes(users_settings, password={"hashes_in_flight": 1, "hashes_queued": 0})
    )
    first = asyncio.create_task(passwords.hash("a password"))
    await asyncio.sleep(0)  # the first hash has taken the slot
    with pytest.raises(HashingBusy) as busy:
        await passwords.verify(None, "any password")
    assert busy.value.status == 503
    assert busy.value.headers["Retry-After"] == "1"
    stored = await first
    assert await passwords.verify(stored, "a password")
    assert not await passwords.verify(None, "a password")


async def test_a_burst_of_hashes_waits_its_turn_in_a_bounded_queue(users_settings: Settings):
    """Honest concurrent sign-ups queue briefly and all succeed; past the queue, 503 at once."""
    passwords = Passwords(
        with_changes(users_settings, password={"hashes_in_flight": 1, "hashes_queued": 3})
    )
    burst = [asyncio.create_task(passwords.hash(f"password {n}")) for n in range(4)]
    await asyncio.sleep(0)  # one runs, three wait: the queue is full
    with pytest.raises(HashingBusy):
        await passwords.hash("one too many")
    hashes = await asyncio.gather(*burst)
    assert len(set(hashes)) == 4


async def test_a_credit_limit_must_be_a_json_integer(users_client: httpx.AsyncClient):
    response = await users_client.post("/users", json=new_user(credit_limit_cents=True))
    problem = assert_problem(response, 422)
    assert [error["field"] for error in problem["errors"]] == ["credit_limit_cents"]
