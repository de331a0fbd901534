"""Opaque bearer tokens with sessions in Redis, shared by every service.

The users service issues a token ``<user id>.<random>`` at login and stores
``session:{<user id>}:<sha256(token)>`` -> user id with a TTL. Only the hash is stored, so a
Redis dump leaks no usable token. The token names its user (no secret: the user knows their
id) so that the session key carries the user's hash tag: a request's session, its per-user
rate limit and the user's cached views share one Redis Cluster slot, and one script reads
them all in one round trip (:func:`common.ratelimit.caller_read`). A token whose id part was
altered names a key that does not exist.

The rule "this token's session is valid" is written once: :func:`claimed_user` parses the
token, and :func:`session_valid` (Python) or :data:`SESSION_VALID_LUA` (the same comparison,
for scripts that do more in the same round trip) decides: the session key holds the user id
the token names. ``libs/common/tests/test_session_rule.py`` runs one table of cases through
both and asserts they give the same, expected, answer.
Every service resolves the caller with :func:`current_user`; logout deletes the key, so the
token stops working everywhere at once, and PUBLISHes the token's hash on
:func:`revocation_channel` (SPUBLISH on a Redis Cluster), so what a request checked once (an
open event stream) ends too.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from redis.asyncio import Redis
from starlette.types import Scope

from common.context import SHARED
from common.errors import Unauthorized
from common.openapi import BEARER, raises
from common.redis import publish, pubsub_namespace

SESSION_KEY_PREFIX = "session:"
SESSION_INDEX_PREFIX = "sessions:"
REVOCATION_CHANNEL_PREFIX = "auth:revoked:"
_CALLER_KEY = "common.auth.user"  # in the request's scope: see remember_caller

# The session rule of :func:`session_valid` as a Lua function, for a script to include and
# call before its own work (``common.ratelimit``). GET gives false for a missing key, which
# never equals the user id: none, expired and revoked sessions all fail the same way.
SESSION_VALID_LUA = """
local function session_valid(session_key, user_id)
  return redis.call('GET', session_key) == user_id
end
"""


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    id: UUID
    token_hash: str

    @property
    def session_key(self) -> str:
        return session_key(self.id, self.token_hash)


def remember_caller(scope: Scope, user: AuthenticatedUser | None) -> None:
    """The request's caller is now known (None: nobody signed in), for the rest of the
    request: the dependencies that authenticate and rate-limit, the read-your-writes marker.
    Kept in the request's own scope (``request.state`` may be shared lifespan state)."""
    scope[_CALLER_KEY] = user


def caller_known(scope: Scope) -> bool:
    """Has something in this request looked its caller up already?"""
    return _CALLER_KEY in scope


def known_caller(scope: Scope) -> AuthenticatedUser | None:
    """The caller :func:`remember_caller` kept; None when nobody (or nothing yet) did."""
    user: AuthenticatedUser | None = scope.get(_CALLER_KEY)
    return user


@dataclass(frozen=True, slots=True)
class IssuedSession:
    token: str
    user_id: UUID
    expires_at: datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_key(user_id: UUID, token_hash: str) -> str:
    return f"{SESSION_KEY_PREFIX}{{{user_id}}}:{token_hash}"


def session_index_key(user_id: UUID) -> str:
    """The set of a user's token hashes (same hash tag as the sessions): what "sign out
    everywhere" and a password change find the sessions by. It lives as long as the newest
    session; hashes of expired sessions in it are harmless (their keys are gone)."""
    return f"{SESSION_INDEX_PREFIX}{{{user_id}}}"


def claimed_user(token: str) -> AuthenticatedUser | None:
    """Who the token says it belongs to, not yet checked against its session (None: not a
    token this system issues)."""
    user_part, dot, secret = token.partition(".")
    if not dot or not secret:
        return None
    try:
        user_id = UUID(user_part)
    except ValueError:
        return None
    return AuthenticatedUser(id=user_id, token_hash=hash_token(token))


async def session_valid(redis: Redis, user: AuthenticatedUser) -> bool:
    """Whether the session of the token ``user`` was claimed from is still valid: its key
    exists (not expired, not revoked) and holds the user id the token names (so a key that
    names someone else is no session of this user). :data:`SESSION_VALID_LUA` is this rule
    for scripts; every check, per request or on an open stream, goes through one of the two."""
    stored = await redis.get(user.session_key)
    if isinstance(stored, bytes):  # a client without decode_responses
        stored = stored.decode()
    return bool(stored == str(user.id))


async def authenticate(redis: Redis, token: str) -> AuthenticatedUser | None:
    """The user behind ``token`` if it is a token of ours with a valid session, else None."""
    user = claimed_user(token)
    if user is None or not await session_valid(redis, user):
        return None
    return user


async def create_session(redis: Redis, user_id: UUID, ttl_seconds: int) -> IssuedSession:
    token = f"{user_id}.{secrets.token_urlsafe(32)}"
    token_hash = hash_token(token)
    index = session_index_key(user_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(session_key(user_id, token_hash), str(user_id), ex=ttl_seconds)
        pipe.sadd(index, token_hash)
        pipe.expire(index, ttl_seconds, gt=True)
        pipe.expire(index, ttl_seconds, nx=True)
        await pipe.execute()
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    return IssuedSession(token=token, user_id=user_id, expires_at=expires_at)


def revocation_channel(redis: Redis) -> str:
    """Where logouts are announced (the token's hash). Pub/sub ignores database numbers, so the
    channel names the client's: stacks sharing a Redis server (dev, e2e, tests) stay apart."""
    return f"{REVOCATION_CHANNEL_PREFIX}{pubsub_namespace(redis)}"


async def revoke_session(redis: Redis, user: AuthenticatedUser) -> None:
    """End the session: the key goes (every later request is a 401), then the revocation is
    announced (long-lived responses of that token, such as event streams, end at once).
    Two round trips, not a pipeline: on a cluster the key and the channel are on different
    shards, and the key must be gone before anyone acts on the announcement."""
    await redis.delete(user.session_key)
    await redis.srem(session_index_key(user.id), user.token_hash)
    await publish(redis, [(revocation_channel(redis), user.token_hash)])


async def revoke_all_sessions(redis: Redis, user_id: UUID, *, keep: str | None = None) -> int:
    """End every session of the user but the one whose token hash is ``keep``: their keys
    go at once (every later request is a 401, in every service), then each revocation is
    announced as :func:`revoke_session` does. Returns how many were ended."""
    index = session_index_key(user_id)
    hashes = [
        value.decode() if isinstance(value, bytes) else str(value)
        for value in await redis.smembers(index)
    ]
    ended = [token_hash for token_hash in hashes if token_hash != keep]
    if not ended:
        return 0
    await redis.delete(*(session_key(user_id, token_hash) for token_hash in ended))
    await redis.srem(index, *ended)
    channel = revocation_channel(redis)
    await publish(redis, [(channel, token_hash) for token_hash in ended])
    return len(ended)


def bearer_token(request: Request) -> str | None:
    return token_of(request.headers.get("authorization", ""))


def token_of(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header's value (None otherwise)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def optional_user(request: Request) -> AuthenticatedUser | None:
    """The caller behind the bearer token, or None; looked up once per request."""
    if caller_known(request.scope):
        return known_caller(request.scope)
    token = bearer_token(request)
    user = await authenticate(SHARED.of(request.app).redis, token) if token is not None else None
    remember_caller(request.scope, user)
    return user


@raises(Unauthorized, security=BEARER)
async def current_user(request: Request) -> AuthenticatedUser:
    """FastAPI dependency: the caller behind the bearer token, or 401."""
    user = await optional_user(request)
    if user is None:
        raise Unauthorized()
    return user


CurrentUser = Annotated[AuthenticatedUser, Depends(current_user)]
