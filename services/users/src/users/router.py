"""HTTP routes of the users service: parse, call the service, shape the response."""

import uuid

from fastapi import APIRouter, Request, Response, status

from common.auth import CurrentUser, revoke_session
from common.http import DatabaseDep, RedisDep
from common.ratelimit import AUTH_LIMIT, READ_LIMIT, WRITE_LIMIT
from users import service
from users.cache import UserCache
from users.passwords import Passwords
from users.schemas import SessionCreate, SessionOut, UserCreate, UserOut

router = APIRouter(prefix="/users", tags=["users"])


def _passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


def _cache(request: Request) -> UserCache:
    cache: UserCache = request.app.state.user_cache
    return cache


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=UserOut, dependencies=[AUTH_LIMIT]
)
async def register(
    body: UserCreate, request: Request, response: Response, db: DatabaseDep
) -> UserOut:
    async with db.transaction() as uow:
        user = await service.register(uow, _passwords(request), body)
    response.headers["Location"] = f"/users/{user.id}"
    return user


@router.post(
    "/sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionOut,
    dependencies=[AUTH_LIMIT],
)
async def login(
    body: SessionCreate, request: Request, db: DatabaseDep, redis: RedisDep
) -> SessionOut:
    async with db.session() as session:
        issued = await service.login(
            session,
            redis,
            _passwords(request),
            body,
            request.app.state.settings.session_ttl_seconds,
        )
    return SessionOut(token=issued.token, user_id=issued.user_id, expires_at=issued.expires_at)


@router.delete(
    "/sessions/current", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WRITE_LIMIT]
)
async def logout(caller: CurrentUser, redis: RedisDep) -> Response:
    await revoke_session(redis, caller.token_hash)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# response_model documents the shape; the body is the cached JSON, sent as it is.
@router.get("/me", response_model=UserOut, dependencies=[READ_LIMIT])
async def me(request: Request, caller: CurrentUser, db: DatabaseDep) -> Response:
    view = await service.get_visible_user_json(db, _cache(request), caller.id, caller.id)
    return Response(view, media_type="application/json")


@router.get("/{user_id}", response_model=UserOut, dependencies=[READ_LIMIT])
async def get_user(
    user_id: uuid.UUID, request: Request, caller: CurrentUser, db: DatabaseDep
) -> Response:
    view = await service.get_visible_user_json(db, _cache(request), caller.id, user_id)
    return Response(view, media_type="application/json")
