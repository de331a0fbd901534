"""Admission of new orders: refuse at once while the saga backlog is over its bound.

Load shedding by HTTP requests in flight (common.http) does not see a saga backlog: a
``POST /orders`` is quick, the work it starts waits in the streams. Past the rate the workers
sustain, accepted orders would wait longer and longer. So a new order is admitted only while
the number of sagas still before their pivot (waiting for credit, or for stock on definition
version 2) is under ``admission.max_pending_sagas``; the rest get 503 with ``Retry-After`` at
once, and accepted orders keep a bounded latency (about the bound divided by the sustained
rate). Sagas past the pivot (waiting for a notification or a release) are not counted: the
customer's answer is already given, and a notifications outage must not stop the shop from
taking orders.

The count is a cached gauge, not a query per request: read at most every
``admission.refresh_seconds``, and only while orders arrive (an idle API reads nothing); the
orders this process admitted since the last read are added to it, so a burst between two
reads cannot overshoot by more than what other processes admit meanwhile.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from common.contracts import SagaState
from common.db import Database
from common.errors import Problem
from orders.settings import Settings

logger = logging.getLogger("orders.admission")

BEFORE_THE_PIVOT = (SagaState.AWAITING_CREDIT, SagaState.AWAITING_STOCK)
_STATES = [str(state) for state in BEFORE_THE_PIVOT]
_PENDING_SAGAS = (
    "SELECT count(*) FROM orders.sagas WHERE deadline_at IS NOT NULL AND state = ANY($1::text[])"
)


class Overloaded(Problem):
    status = 503
    title = "Too many orders in progress"


class SagaBacklog:
    """The cached count of unsettled sagas, and the admission decision on it."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.bound = settings.admission.max_pending_sagas
        self.refresh_seconds = settings.admission.refresh_seconds
        self.pending = 0
        self.admitted_since_read = 0
        self._read_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None

    def admit(self) -> None:
        """Admit one order or raise :class:`Overloaded` (503, ``Retry-After``)."""
        if self.bound <= 0:
            return
        self._refresh_if_stale()
        if self.pending + self.admitted_since_read >= self.bound:
            raise Overloaded(
                "Too many orders are in progress; retry shortly.",
                headers={"Retry-After": "1"},
            )
        self.admitted_since_read += 1

    def _refresh_if_stale(self) -> None:
        if time.monotonic() - self._read_at < self.refresh_seconds:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self.refresh(), name="saga-backlog")

    async def refresh(self) -> None:
        """Count the unsettled sagas (on failure the gauge keeps its last value)."""
        started = time.monotonic()
        admitted_before = self.admitted_since_read
        try:
            async with self.database.autocommit() as connection:  # read every 0.1 s: no ORM
                pending = int(await connection.fetchval(_PENDING_SAGAS, _STATES))
        except Exception as exc:  # the gauge keeps its last value; the order path reports outages
            logger.warning("saga backlog not read", extra={"error": repr(exc)})
            self._read_at = started
            return
        self.pending = pending
        # Orders admitted while the query ran may or may not be in the count: keep them.
        self.admitted_since_read = max(0, self.admitted_since_read - admitted_before)
        self._read_at = started

    async def close(self) -> None:
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)


@asynccontextmanager
async def saga_backlog(database: Database, settings: Settings) -> AsyncIterator[SagaBacklog]:
    """The API process's backlog, for its lifespan (``POST /orders`` asks it to admit)."""
    backlog = SagaBacklog(database, settings)
    if backlog.bound > 0:
        await backlog.refresh()  # the first order is judged on a count, not on zero
    try:
        yield backlog
    finally:
        await backlog.close()
