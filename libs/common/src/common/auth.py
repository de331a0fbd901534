"""Opaque bearer tokens with sessions in Redis, shared by every service.

The users service issues a random token at login and stores ``session:<sha256(token)>``
-> user id with a TTL. Only the hash is stored, so a Redis dump leaks no usable token.
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

from common.errors import Unauthorized
from common.redis import publish, pubsub_namespace

SESSION_KEY_PREFIX = "session:"
REVOCATION_CHANNEL_PREFIX = "auth:revoked:"
USER_SCOPE_KEY = "common.auth.user"


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    id: UUID
    token_hash: str


@dataclass(frozen=True, slots=True)
class IssuedSession:
    token: str
    user_id: UUID
    expires_at: datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_key(token_hash: str) -> str:
    return SESSION_KEY_PREFIX + token_hash


async def create_session(redis: Redis, user_id: UUID, ttl_seconds: int) -> IssuedSession:
    token = secrets.token_urlsafe(32)
    await redis.set(session_key(hash_token(token)), str(user_id), ex=ttl_seconds)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    return IssuedSession(token=token, user_id=user_id, expires_at=expires_at)


def revocation_channel(redis: Redis) -> str:
    """Where logouts are announced (the token's hash). Pub/sub ignores database numbers, so the
    channel names the client's: stacks sharing a Redis server (dev, e2e, tests) stay apart."""
    return f"{REVOCATION_CHANNEL_PREFIX}{pubsub_namespace(redis)}"


async def revoke_session(redis: Redis, token_hash: str) -> None:
    """End the session: the key goes (every later request is a 401), then the revocation is
    announced (long-lived responses of that token, such as event streams, end at once).
    Two round trips, not a pipeline: on a cluster the key and the channel are on different
    shards, and the key must be gone before anyone acts on the announcement."""
    await redis.delete(session_key(token_hash))
    await publish(redis, revocation_channel(redis), token_hash)


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def optional_user(request: Request) -> AuthenticatedUser | None:
    """The caller behind the bearer token, or None; looked up once per request."""
    # Cached in the request's own scope (request.state may be shared lifespan state).
    if USER_SCOPE_KEY in request.scope:
        cached: AuthenticatedUser | None = request.scope[USER_SCOPE_KEY]
        return cached
    user = None
    token = _bearer_token(request)
    if token is not None:
        token_hash = hash_token(token)
        redis: Redis = request.app.state.redis
        user_id = await redis.get(session_key(token_hash))
        if user_id is not None:
            user = AuthenticatedUser(id=UUID(str(user_id)), token_hash=token_hash)
    request.scope[USER_SCOPE_KEY] = user
    return user


async def current_user(request: Request) -> AuthenticatedUser:
    """FastAPI dependency: the caller behind the bearer token, or 401."""
    user = await optional_user(request)
    if user is None:
        raise Unauthorized()
    return user


CurrentUser = Annotated[AuthenticatedUser, Depends(current_user)]
