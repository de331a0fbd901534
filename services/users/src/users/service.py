"""Business rules of the users service.

Writes take a :class:`common.db.UnitOfWork`, reads a session; nothing here commits.
"""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import AuthenticatedUser, IssuedSession, create_session
from common.contracts import UserRegistered
from common.db import Database, UnitOfWork
from common.errors import Conflict, NotFound, Problem, Unauthorized
from common.ratelimit import TooManyRequests
from users import repository
from users.cache import UserCache
from users.models import User
from users.passwords import Passwords
from users.schemas import PasswordChange, SessionCreate, UserCreate, UserOut
from users.settings import Settings


@dataclass(frozen=True, slots=True)
class Account:
    """A user and the credit they have left: their limit less what orders hold."""

    user: User
    credit_available_cents: int


async def account_of(session: AsyncSession, user: User) -> Account:
    reserved = await repository.reserved_cents(session, user.id)
    return Account(user, user.credit_limit_cents - reserved)


async def register(uow: UnitOfWork, passwords: Passwords, data: UserCreate) -> Account:
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
    return await account_of(uow.session, created)


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
    session: AsyncSession,
    redis: Redis,
    passwords: Passwords,
    data: SessionCreate,
    settings: Settings,
) -> IssuedSession:
    """A session for the right email and password. Failures are counted per email before
    any hash is spent (:class:`LoginFailures`); an unknown email costs a hash all the same."""
    email = data.email.lower()
    failures = LoginFailures(redis, settings)
    await failures.check(email)
    user = await repository.get_user_by_email(session, email)
    password_ok = await passwords.verify(user.password_hash if user else None, data.password)
    if user is None or not password_ok or user.status != "active":
        await failures.record(email)
        raise Unauthorized("Wrong email or password.")
    return await create_session(redis, user.id, settings.session_ttl_seconds)


async def change_password(
    uow: UnitOfWork,
    redis: Redis,
    passwords: Passwords,
    caller: AuthenticatedUser,
    data: PasswordChange,
    settings: Settings,
) -> None:
    """The new password, once the current one is proven; the caller then ends every other
    session (:func:`common.auth.revoke_all_sessions`), after the commit. A wrong current
    password is a 403 (the token is fine, the proof is not: a 401 would tell the client to
    drop a valid token), and counts as a failed login."""
    user = await repository.get_user(uow.session, caller.id)
    if user is None:
        raise Unauthorized()
    failures = LoginFailures(redis, settings)
    await failures.check(user.email)
    if not await passwords.verify(user.password_hash, data.current_password):
        await failures.record(user.email)
        raise Problem("The current password is wrong.", status=403)
    new_hash = await passwords.hash(data.new_password)
    await repository.set_password_hash(uow.session, user.id, new_hash)


class LoginFailures:
    """Failed logins per email in a fixed window (``login.failures_per_email`` per
    ``login.failure_window_seconds``): past it, a 429 until the window ends, whoever asks
    and from wherever, so guessing one account's password cannot be spread over addresses.
    Keyed by a hash of the email (no address in Redis keys)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.limit = settings.login.failures_per_email
        self.window = settings.login.failure_window_seconds

    @staticmethod
    def key(email: str) -> str:
        return f"loginfail:{{{hashlib.sha256(email.encode()).hexdigest()}}}"

    async def check(self, email: str) -> None:
        key = self.key(email)
        count = await self.redis.get(key)
        if count is not None and int(count) >= self.limit:
            ttl = await self.redis.ttl(key)
            retry_after = str(max(1, ttl if ttl > 0 else self.window))
            raise TooManyRequests(
                f"Too many failed logins for this email; retry in {retry_after} s.",
                headers={"Retry-After": retry_after},
            )

    async def record(self, email: str) -> None:
        key = self.key(email)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
            await pipe.execute()


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
        account = await account_of(session, user)
    return await cache.put(UserOut.of(account.user, account.credit_available_cents), generation)
