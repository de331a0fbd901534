"""A background task that runs an async callable every few seconds until stopped.

The bus's housekeeping (reclaiming, trimming) and a worker's timers all have the same needs:
one run at a time, an exception is logged and the next run still happens (a timer that dies
on the first network blip would silently stop a saga sweeper), and stopping lets a run in
progress finish instead of cancelling it half-way.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("common.bus.periodic")


class Periodic:
    """Run ``function`` now, then every ``interval_seconds`` after the previous run ends."""

    def __init__(
        self,
        name: str,
        interval_seconds: float,
        function: Callable[[], Awaitable[object]],
        *,
        run_at_start: bool = True,
    ) -> None:
        self.name = name
        self.interval_seconds = interval_seconds
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
            try:
                await self.function()
            except Exception:
                self.failures += 1
                logger.exception("periodic task failed", extra={"task": self.name})
            self.runs += 1
            if await self._stopped_within(self.interval_seconds):
                return

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True
