"""Business rules of the users service. Functions take a session; they never commit."""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import IssuedSession, create_session
from common.contracts import UserRegistered
from common.db import Database, UnitOfWork
from common.errors import Conflict, NotFound, Unauthorized
from users import repository
from users.cache import UserCache
from users.models import User
from users.passwords import Passwords
from users.schemas import SessionCreate, UserCreate, UserOut


async def user_view(session: AsyncSession, user: User) -> UserOut:
    reserved = await repository.reserved_cents(session, user.id)
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        status=user.status,
        credit_limit_cents=user.credit_limit_cents,
        credit_available_cents=user.credit_limit_cents - reserved,
        created_at=user.created_at,
    )


async def register(uow: UnitOfWork, passwords: Passwords, data: UserCreate) -> UserOut:
    user = User(
        id=uuid.uuid4(),
        email=data.email.lower(),
        name=data.name,
        password_hash=await passwords.hash(data.password),
        credit_limit_cents=data.credit_limit_cents,
    )
    if not await repository.insert_user(uow.session, user):
        raise Conflict(f"A user with email {user.email} already exists.")
    _announce_registration(uow, user)
    created = await repository.get_user(uow.session, user.id)
    assert created is not None
    await uow.session.refresh(created)
    return await user_view(uow.session, created)


def _announce_registration(uow: UnitOfWork, user: User) -> None:
    uow.publish(UserRegistered(user_id=user.id, email=user.email, name=user.name))


async def welcome_recorded(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    """Notifications stored the welcome: stop announcing the registration."""
    await repository.mark_welcomed(uow.session, user_id)


async def announce_unwelcomed_again(
    uow: UnitOfWork, timeout_seconds: float, limit: int = 200
) -> int:
    """Announce UserRegistered again for users still without a confirmed welcome.

    The same promise the order saga keeps for its outcomes: an announcement lost with
    Redis's data is sent again until notifications confirms it (its dedup key makes the
    welcome exactly one). Returns how many were announced again.
    """
    now = datetime.now(UTC)
    users = await repository.claim_unwelcomed(
        uow.session, now - timedelta(seconds=timeout_seconds), limit
    )
    for user in users:
        user.welcome_sent_at = now
        _announce_registration(uow, user)
    return len(users)


async def login(
    session: AsyncSession, redis: Redis, passwords: Passwords, data: SessionCreate, ttl: int
) -> IssuedSession:
    user = await repository.get_user_by_email(session, data.email.lower())
    password_ok = await passwords.verify(user.password_hash if user else None, data.password)
    if user is None or not password_ok or user.status != "active":
        raise Unauthorized("Wrong email or password.")
    return await create_session(redis, user.id, ttl)


async def get_visible_user_json(
    db: Database,
    cache: UserCache,
    caller_id: uuid.UUID,
    user_id: uuid.UUID,
    cached_values: Sequence[str | None],
) -> str:
    """The user view as JSON; a user sees only themself, anyone else's id is a 404.

    Served from the cache when it holds the current generation of the view. JSON text
    rather than a model because this is the hottest read: a hit goes out as stored, with
    no parse and re-serialisation.
    """
    if user_id != caller_id:
        raise NotFound(f"User {user_id} not found.")
    cached, generation = cache.lookup(*cached_values)  # the caller's, read with the session
    if cached is not None:
        return cached
    async with db.session() as session:
        user = await repository.get_user(session, user_id)
        if user is None:
            raise NotFound(f"User {user_id} not found.")
        view = await user_view(session, user)
    return await cache.put(view, generation)
