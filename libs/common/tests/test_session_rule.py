"""The session rule, once: one table of tokens, each run through the Python check
(``common.auth.authenticate``, what every request and an open stream's re-check use) and
through the Lua one (the caller-read script of ``common.ratelimit``), against real Redis.
Both must give the case's expected answer, so they cannot drift apart.

Every case runs on a single Redis and on a Redis Cluster (``redis_target``)."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from limits import parse
from redis.asyncio import Redis

from common.auth import (
    AuthenticatedUser,
    authenticate,
    claimed_user,
    create_session,
    revoke_all_sessions,
    revoke_session,
)
from common.ratelimit import RateLimiter
from common.testing.polling import eventually

pytestmark = pytest.mark.integration

TTL_SECONDS = 600


@dataclass(frozen=True)
class Case:
    """A token made by ``token_of`` (given the client) and whether its session is valid."""

    name: str
    token_of: Callable[[Redis], Awaitable[str]]
    valid: bool


async def _issued(redis: Redis) -> str:
    return (await create_session(redis, uuid.uuid4(), TTL_SECONDS)).token


def _claimed(token: str) -> AuthenticatedUser:
    user = claimed_user(token)
    assert user is not None
    return user


async def _never_issued(redis: Redis) -> str:
    return f"{uuid.uuid4()}.a-secret-nobody-was-given"


async def _expired(redis: Redis) -> str:
    token = await _issued(redis)
    key = _claimed(token).session_key
    await redis.pexpire(key, 1)
    await eventually(lambda: redis.exists(key), until=lambda found: not found, what="expiry")
    return token


async def _revoked(redis: Redis) -> str:
    token = await _issued(redis)
    await revoke_session(redis, _claimed(token))
    return token


async def _revoked_everywhere_else(redis: Redis) -> str:
    """A second session of the same user, ended by "sign out everywhere but here"."""
    kept = await _issued(redis)
    user_id = _claimed(kept).id
    ended = (await create_session(redis, user_id, TTL_SECONDS)).token
    await revoke_all_sessions(redis, user_id, keep=_claimed(kept).token_hash)
    return ended


async def _kept_by_revoke_all(redis: Redis) -> str:
    kept = await _issued(redis)
    user_id = _claimed(kept).id
    await create_session(redis, user_id, TTL_SECONDS)
    await revoke_all_sessions(redis, user_id, keep=_claimed(kept).token_hash)
    return kept


async def _another_users_id_with_my_secret(redis: Redis) -> str:
    mine = await _issued(redis)
    theirs = await _issued(redis)
    return f"{_claimed(theirs).id}.{mine.partition('.')[2]}"


async def _session_naming_another_user(redis: Redis) -> str:
    """The key exists but holds someone else's id (tampered, or a bug elsewhere): a key's
    existence alone is not the rule, its value must name the token's user."""
    token = await _issued(redis)
    await redis.set(_claimed(token).session_key, str(uuid.uuid4()), keepttl=True)
    return token


async def _upper_case_id(redis: Redis) -> str:
    """The same user id spelled in capitals: a different token, so a different hash."""
    user_part, _, secret = (await _issued(redis)).partition(".")
    return f"{user_part.upper()}.{secret}"


def _fixed(token: str) -> Callable[[Redis], Awaitable[str]]:
    async def token_of(redis: Redis) -> str:
        return token

    return token_of


CASES = [
    Case("valid", _issued, valid=True),
    Case("unknown token", _never_issued, valid=False),
    Case("expired", _expired, valid=False),
    Case("revoked", _revoked, valid=False),
    Case("revoked by sign-out-everywhere", _revoked_everywhere_else, valid=False),
    Case("kept by sign-out-everywhere", _kept_by_revoke_all, valid=True),
    Case("another user's id in the token", _another_users_id_with_my_secret, valid=False),
    Case("session key naming another user", _session_naming_another_user, valid=False),
    Case("id part in capitals", _upper_case_id, valid=False),
    Case("malformed: no dot", _fixed("not-a-token"), valid=False),
    Case("malformed: empty secret", _fixed(f"{uuid.uuid4()}."), valid=False),
    Case("malformed: id not a uuid", _fixed("someone.secret"), valid=False),
    Case("malformed: empty", _fixed(""), valid=False),
]


async def _lua_check(redis: Redis, token: str) -> AuthenticatedUser | None:
    """The caller-read script's verdict (rate limiting off: only the session decides)."""
    limiter = RateLimiter(
        redis, limits={"read": parse("1/minute")}, namespace="session-rule", enabled=False
    )
    found = await limiter.check_caller(token, "read")
    return found.caller if found is not None else None


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_python_and_lua_give_the_same_expected_answer(redis: Redis, case: Case):
    token = await case.token_of(redis)

    by_python = await authenticate(redis, token)
    by_lua = await _lua_check(redis, token)

    assert (by_python is not None, by_lua is not None) == (case.valid, case.valid)
    assert by_python == by_lua
    if case.valid:
        assert by_python == claimed_user(token)
