"""HTTP routes of the users service: parse, call the service, shape the response."""

import uuid
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from common.auth import CurrentUser, revoke_all_sessions, revoke_session
from common.errors import Conflict, NotFound, Unauthorized
from common.fastread import FastRead
from common.http import DatabaseDep, RedisDep
from common.openapi import raises, sends_location
from common.ratelimit import AUTH_LIMIT, WRITE_LIMIT, CallerRead, TooManyRequests, caller_read
from users import service
from users.cache import UserCache
from users.context import UsersContextDep
from users.passwords import HashingBusy
from users.schemas import PasswordChange, SessionCreate, SessionOut, UserCreate, UserOut

router = APIRouter(prefix="/users", tags=["users"])

CallerView = Annotated[CallerRead, Depends(caller_read("read", UserCache.keys))]
"""The caller, counted against the read limit, with their cached view: one Redis call."""


def own_cached_view(read: CallerRead, params: Mapping[str, str]) -> str | None:
    """The fast path of ``GET /users/me`` and ``GET /users/{user_id}`` (``common.fastread``):
    the caller's own view when the cache holds its current generation. Anything else (a
    miss, another user's id, an id not in canonical form) is the route's to answer."""
    user_id = params.get("user_id")
    if user_id is not None and user_id != str(read.caller.id):
        return None
    return UserCache.hit(*read.values)


FAST_READS = (
    FastRead("/users/me", "read", UserCache.keys, own_cached_view),
    FastRead("/users/{user_id}", "read", UserCache.keys, own_cached_view),
)


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=UserOut, dependencies=[AUTH_LIMIT]
)
@raises(Conflict, HashingBusy)  # the email is taken; too many hashes in flight
@sends_location
async def register(
    body: UserCreate, context: UsersContextDep, response: Response, db: DatabaseDep
) -> UserOut:
    async with db.transaction() as uow:
        account = await service.register(uow, context.passwords, body)
    response.headers["Location"] = f"/users/{account.user.id}"
    return UserOut.of(account.user, account.credit_available_cents)


@router.post(
    "/sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionOut,
    dependencies=[AUTH_LIMIT],
)
@raises(Unauthorized, TooManyRequests, HashingBusy)  # wrong; too many failures; hashes busy
async def login(
    body: SessionCreate, context: UsersContextDep, db: DatabaseDep, redis: RedisDep
) -> SessionOut:
    async with db.session() as session:
        issued = await service.login(session, redis, context.passwords, body, context.settings)
    return SessionOut(token=issued.token, user_id=issued.user_id, expires_at=issued.expires_at)


@router.delete(
    "/sessions/current", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WRITE_LIMIT]
)
async def logout(caller: CurrentUser, redis: RedisDep) -> Response:
    await revoke_session(redis, caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/sessions", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WRITE_LIMIT])
async def logout_everywhere(caller: CurrentUser, redis: RedisDep) -> Response:
    """Sign out everywhere: every session of the caller ends, in every service at once."""
    await revoke_all_sessions(redis, caller.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/me/password", status_code=status.HTTP_204_NO_CONTENT, dependencies=[AUTH_LIMIT])
@raises(403, TooManyRequests, HashingBusy)  # the current password is wrong; as for login
async def change_password(
    body: PasswordChange,
    context: UsersContextDep,
    caller: CurrentUser,
    db: DatabaseDep,
    redis: RedisDep,
) -> Response:
    """A new password, the current one required (403 when wrong); every other session of
    the caller ends, this one stays."""
    async with db.transaction() as uow:
        await service.change_password(uow, redis, context.passwords, caller, body, context.settings)
    await revoke_all_sessions(redis, caller.id, keep=caller.token_hash)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# response_model documents the shape; the body is the cached JSON, sent as it is.
@router.get("/me", response_model=UserOut)
@raises(NotFound)  # a session whose user is gone
async def me(context: UsersContextDep, read: CallerView, db: DatabaseDep) -> Response:
    caller = read.caller.id
    view = await service.get_visible_user_json(db, context.user_cache, caller, caller, read.values)
    return Response(view, media_type="application/json")


@router.get("/{user_id}", response_model=UserOut)
@raises(NotFound)
async def get_user(
    user_id: uuid.UUID, context: UsersContextDep, read: CallerView, db: DatabaseDep
) -> Response:
    caller = read.caller.id
    cache = context.user_cache
    view = await service.get_visible_user_json(db, cache, caller, user_id, read.values)
    return Response(view, media_type="application/json")
