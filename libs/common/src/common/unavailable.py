"""Is this exception "Postgres or Redis is unreachable, restarting or saturated"?

One answer for the whole code base: the HTTP layer turns such an error into a 503 with
``Retry-After`` (never a 500), and the bus consumer pauses and backs off instead of counting
it as a failed attempt toward the dead-letter stream.

Drivers report the same outage in many shapes, and wrap each other's exceptions
(SQLAlchemy wraps asyncpg's, whose cause may be an ``OSError``), so the whole chain is read:
``__cause__``, ``__context__``, SQLAlchemy's ``orig`` and the members of exception groups.
"""

import asyncio
import traceback
from collections.abc import Iterator

import asyncpg
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# SQLSTATE classes and codes that mean "the server cannot serve you now", not "your query is
# wrong": connection exceptions (08), operator intervention such as a shutdown or a restart
# (57P01-57P05), too many connections (53300), and the server refusing to start a
# transaction while in recovery (57P03 is "cannot connect now").
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P", "53300")
# A statement cancelled by ``statement_timeout``: an overloaded server for an HTTP client
# (503), but for the bus a handler that keeps timing out is a failure like any other.
_OVERLOAD_SQLSTATES = ("57014",)
# Transaction rollback (class 40): a deadlock (40P01) or a serialization failure (40001).
# Postgres chose this transaction as the victim of a race with another one; run again, it
# succeeds. Nobody's bug: the bus retries it without counting, an HTTP client gets a 503.
_CONFLICT_SQLSTATES = ("40P01", "40001")

_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused or reset before a driver could wrap it
    OSError,  # e.g. "Connect call failed", no route to host
    asyncpg.InterfaceError,  # "connection is closed", "cannot switch to state ..." after a drop
    asyncpg.InternalClientError,
    PoolTimeoutError,  # every pooled connection busy past db.pool_timeout_seconds
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,  # Redis restarting, loading its data
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps, each once."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for inner in (current.__cause__, current.__context__, getattr(current, "orig", None)):
            if isinstance(inner, BaseException):
                stack.append(inner)


def _redis_connection_torn_down(exc: BaseException) -> bool:
    """A pooled Redis connection closed under a command in flight.

    During a Redis Cluster fail-over, redis-py (8.x) drops every connection of the failed
    node and re-reads the slot map while other tasks are still sending on them; the send
    then fails inside its connection code with ``RuntimeError: ... handler is closed``
    (uvloop) or ``AttributeError`` on the writer it just lost, not with a ConnectionError.
    For a client this is the same as a reset connection: 503, retry.
    """
    if not isinstance(exc, (RuntimeError, AttributeError)):
        return False
    frames = traceback.extract_tb(exc.__traceback__)[-4:]  # the send, then the event loop's
    return any(frame.filename.endswith("redis/asyncio/connection.py") for frame in frames)


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(exc, "sqlstate", "") or getattr(exc, "pgcode", "") or "")


def is_unavailable(exc: BaseException) -> bool:
    """True when Postgres or Redis is unreachable, restarting or out of connections."""
    for error in _chain(exc):
        if isinstance(error, _UNAVAILABLE_TYPES):
            return True
        if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
            return True  # a driver's timeout on connect or read, bare or wrapped
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        if _sqlstate(error).startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
            return True
        if _redis_connection_torn_down(error):
            return True
    return False


def is_transaction_conflict(exc: BaseException) -> bool:
    """Postgres rolled the transaction back to settle a race (deadlock, serialization
    failure): the same work, run again, is expected to succeed."""
    return any(_sqlstate(error) in _CONFLICT_SQLSTATES for error in _chain(exc))


def is_overloaded(exc: BaseException) -> bool:
    """Unavailable, a statement cancelled by its timeout, or a transaction that lost a race:
    a client may retry shortly."""
    if is_unavailable(exc) or is_transaction_conflict(exc):
        return True
    return any(_sqlstate(error) in _OVERLOAD_SQLSTATES for error in _chain(exc))
