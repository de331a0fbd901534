"""Exponential backoff, written once for every retry loop of the code base.

:func:`exponential` is the delay before a retry: ``base`` for the first, multiplied by
``factor`` for each one after, never more than ``cap``. A jitter spreads the retries of many
callers that failed together, so they do not come back together:

* :func:`full_jitter`, anywhere in ``[0, delay]``: the widest spread, for retries that
  compete for the same remote resource (webhook deliveries to one receiver);
* :func:`equal_jitter`, in ``[delay / 2, delay]``: spread, but never much sooner than the
  backoff asked (the bus consumer's in-process retries and its outage probes).

The saga's re-send deadlines use :func:`exponential` alone: a deadline is stored and shown to
the operator, and one timer per saga is no herd. :func:`retrying` is the loop itself, for work
that may simply be run again (a transaction Postgres rolled back whole).
"""

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def exponential(attempt: int, *, base: float, cap: float, factor: float = 2.0) -> float:
    """``base * factor ** attempt``, at most ``cap``: ``attempt`` 0 waits ``base``. Any
    number of attempts is safe (a power too large for a float is the cap)."""
    try:
        return min(cap, base * float(factor) ** max(0, attempt))
    except OverflowError:
        return cap


def full_jitter(seconds: float) -> float:
    """Uniform in ``[0, seconds]``."""
    return random.uniform(0, seconds)  # noqa: S311 - jitter, not a secret


def equal_jitter(seconds: float) -> float:
    """Uniform in ``[seconds / 2, seconds]``."""
    return seconds / 2 + random.uniform(0, seconds / 2)  # noqa: S311 - jitter, not a secret


async def retrying(
    work: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    retryable: Callable[[Exception], bool],
    base: float,
    cap: float,
    before_retry: Callable[[Exception, int, float], None] | None = None,
) -> T:
    """``work()``, run again after a failure ``retryable`` accepts, ``attempts`` times in all,
    waiting :func:`exponential` (``base`` first) with :func:`equal_jitter` in between.
    ``before_retry(error, failed_attempt, delay)`` hears of each retry (a metric, a log line).
    A failure that is not retryable, or the last one, is raised."""
    for attempt in range(attempts - 1):
        try:
            return await work()
        except Exception as error:
            if not retryable(error):
                raise
            delay = equal_jitter(exponential(attempt, base=base, cap=cap))
            if before_retry is not None:
                before_retry(error, attempt + 1, delay)
            await asyncio.sleep(delay)
    return await work()
