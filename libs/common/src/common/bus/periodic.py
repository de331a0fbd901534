"""A background task that runs an async callable every few seconds until stopped.

The bus's housekeeping (reclaiming, trimming) and a worker's timers all have the same needs:
one run at a time, an exception is logged and the next run still happens (a timer that dies
on the first network blip would silently stop a saga sweeper), and stopping lets a run in
progress finish instead of cancelling it half-way.

Idle cost (docs/design.md section 8): a run that found nothing to do may return
:class:`Idle`; the next run then waits ``idle_interval_seconds`` instead of
``interval_seconds`` (or less, when the run knows when work comes due). Each caller bounds
its idle interval so that what the loop guarantees (a reclaim, a deadline) happens no later
than at the busy cadence: the caller knows why nothing can come due sooner.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

logger = logging.getLogger("common.bus.periodic")


@dataclass(frozen=True)
class Idle:
    """What a run returns when it found nothing to do: the next may wait longer.

    ``due_in_seconds``: the run knows that work comes due then (the earliest deadline); the
    next run is then no later than that (and no sooner than the busy interval).
    """

    due_in_seconds: float | None = None


class Periodic:
    """Run ``function`` now, then every ``interval_seconds`` after the previous run ends;
    after a run that returned :class:`Idle`, every ``idle_interval_seconds`` instead."""

    def __init__(
        self,
        name: str,
        interval_seconds: float,
        function: Callable[[], Awaitable[object]],
        *,
        run_at_start: bool = True,
        idle_interval_seconds: float | None = None,
    ) -> None:
        self.name = name
        self.interval_seconds = interval_seconds
        self.idle_interval_seconds = max(interval_seconds, idle_interval_seconds or 0.0)
        self.function = function
        self.run_at_start = run_at_start
        self.runs = 0
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name=f"periodic:{self.name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Let a run in progress finish (up to ``grace_seconds``), then end the loop."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace_seconds)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        if not self.run_at_start and await self._stopped_within(self.interval_seconds):
            return
        while not self._stop.is_set():
            outcome: object = None
            try:
                outcome = await self.function()
            except Exception:
                self.failures += 1
                logger.exception("periodic task failed", extra={"task": self.name})
            self.runs += 1
            if await self._stopped_within(self.wait_after(outcome)):
                return

    def wait_after(self, outcome: object) -> float:
        """Seconds until the next run: the busy interval, unless the run was :class:`Idle`."""
        if not isinstance(outcome, Idle):
            return self.interval_seconds
        wait = self.idle_interval_seconds
        if outcome.due_in_seconds is not None:
            wait = min(wait, outcome.due_in_seconds)
        return max(self.interval_seconds, wait)

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True
