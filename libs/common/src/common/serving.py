"""uvicorn, without its ten wake-ups a second.

uvicorn's main loop sleeps 0.1 s at a time to notice a stop signal and, every tenth tick,
to refresh the ``Date`` header: ten wake-ups a second in every API process, nearly all of an
idle gateway's CPU (docs/design.md section 8: the idle stack under 3% of a core; measured
by ``bench/idle.py``). :class:`QuietServer` refreshes the header once a second, as uvicorn
does, and is woken at once by the stop signal instead of polling for it.

Between its start-up and its first connection, a process freezes what start-up built
(:func:`freeze_startup_heap`; a worker does it once its consumer runs).
"""

import asyncio
import contextlib
import gc
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import Config

TICK_SECONDS = 1.0  # the Date header's resolution: what uvicorn refreshes every ten ticks
TICKS_PER_REFRESH = 10  # uvicorn's on_tick refreshes when its counter is a multiple of this
STARTUP_FAILURE = 3  # uvicorn's exit status when the app did not start


def freeze_startup_heap() -> None:
    """Take what start-up built (modules, routes, models, metadata: ~130,000 objects in an
    API) out of the cyclic garbage collector's reach, before the process serves.

    Without it, every full collection walks all of them again: 50-70 ms once every few
    thousand requests, inside one of them (the read path's p99), about 4% of a cached read's
    CPU (measured in-process on users-api). They live as long as the process, so freezing
    them loses nothing; whatever is made later is collected as before.
    """
    gc.collect()
    gc.freeze()


class QuietServer(uvicorn.Server):
    """A uvicorn server whose main loop wakes once a second, or at once on a stop signal."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._exit_requested: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, with the heap frozen between the app's lifespan start-up (what it
        built lives on) and the listening socket's creation: the collection's pause (~0.1 s)
        comes before the kernel hands this process connections, not while they wait."""
        app_startup = self.lifespan.startup

        async def app_startup_then_freeze() -> None:
            await app_startup()
            freeze_startup_heap()

        self.lifespan.startup = app_startup_then_freeze
        await super().startup(sockets)

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit_requested = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._exit_requested.wait()
            counter = (counter + TICKS_PER_REFRESH) % 864_000
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's (it sets ``should_exit``), then wake the main loop to see it now."""
        super().handle_exit(sig, frame)
        if self._loop is not None and self._exit_requested is not None:
            self._loop.call_soon_threadsafe(self._exit_requested.set)


def run(app: str, **options: Any) -> None:
    """What ``uvicorn.run`` does for one process (no reload, no workers), on a QuietServer."""
    config = Config(app, **options)
    server = QuietServer(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
