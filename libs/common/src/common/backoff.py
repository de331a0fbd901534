"""Exponential backoff, written once for every retry loop of the code base.

:func:`exponential` is the delay before a retry: ``base`` for the first, multiplied by
``factor`` for each one after, never more than ``cap``. A jitter spreads the retries of many
callers that failed together, so they do not come back together:

* :func:`full_jitter`, anywhere in ``[0, delay]``: the widest spread, for retries that
  compete for the same remote resource (webhook deliveries to one receiver);
* :func:`equal_jitter`, in ``[delay / 2, delay]``: spread, but never much sooner than the
  backoff asked (the bus consumer's in-process retries and its outage probes).

The saga's re-send deadlines use :func:`exponential` alone: a deadline is stored and shown to
the operator, and one timer per saga is no herd.
"""

import random


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
