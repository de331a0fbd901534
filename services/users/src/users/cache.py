"""Read-through cache of the user view (``GET /users/me``, ``GET /users/{id}``) in Redis.

Correctness over cleverness: every cached view carries the user's *generation*, a Redis
counter bumped after every commit that changes the user or their credit. A read fetches
the view and the current generation in one round trip and treats any mismatch as a miss,
so a reader that raced a reservation (read the old row, wrote the cache after the bump)
can never leave a stale ``credit_available_cents`` visible. If a process dies between its
commit and the bump, the entry's TTL bounds the staleness.
"""

import logging
import uuid

from prometheus_client import Counter
from redis.asyncio import Redis

from common.db import UnitOfWork
from common.redis import AfterCommit as RedisAfterCommit
from users.schemas import UserOut

logger = logging.getLogger(__name__)

CACHE_REQUESTS = Counter(
    "users_cache_requests_total", "User view cache lookups by result", ["result"]
)


# The view and its generation are read together (MGET): one hash tag, one cluster slot.
def _view_key(user_id: uuid.UUID) -> str:
    return f"users:{{{user_id}}}:view"


def _generation_key(user_id: uuid.UUID) -> str:
    return f"users:{{{user_id}}}:generation"


def _current_view(cached: str | None, generation: str | None) -> str | None:
    """The view stored as ``<generation>|<json>``, if stored under the current generation."""
    if not cached:
        return None
    stored_generation, _, view = str(cached).partition("|")
    return view if stored_generation == str(generation or "0") else None


class UserCache:
    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def keys(user_id: uuid.UUID) -> tuple[str, str]:
        """The view's keys, read in the request's one round trip
        (``common.ratelimit.caller_read``): the view, then its generation."""
        return _view_key(user_id), _generation_key(user_id)

    @staticmethod
    def lookup(cached: str | None, generation: str | None) -> tuple[str | None, str]:
        """From the values of :meth:`keys`: the cached view as JSON (None on a miss) and the
        generation to store a fresh one under. JSON text, not a model: a hit is served as it
        is, unparsed."""
        view = _current_view(cached, generation)
        CACHE_REQUESTS.labels("miss" if view is None else "hit").inc()
        return view, str(generation or "0")

    @staticmethod
    def hit(cached: str | None, generation: str | None) -> str | None:
        """The cached view if it is current, counted as a hit; None, not counted, otherwise
        (the route then answers, and its :meth:`lookup` counts the miss)."""
        view = _current_view(cached, generation)
        if view is not None:
            CACHE_REQUESTS.labels("hit").inc()
        return view

    async def put(self, view: UserOut, generation: str) -> str:
        """Cache the view; returns its JSON."""
        view_json = view.model_dump_json()
        await self.redis.set(_view_key(view.id), f"{generation}|{view_json}", ex=self.ttl_seconds)
        return view_json

    def invalidate_after_commit(self, uow: UnitOfWork, user_id: uuid.UUID) -> None:
        """Invalidate the user's view once ``uow`` commits, as the generation scheme requires
        (before the commit, a reader could cache the old row under the new generation). If
        the invalidation fails, the entry's TTL bounds the staleness."""
        key = _generation_key(user_id)
        uow.after_commit_redis(RedisAfterCommit(self.redis, lambda pipe: pipe.incr(key)))
