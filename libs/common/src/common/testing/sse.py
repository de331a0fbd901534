"""Reading a server-sent event stream (``text/event-stream``) in tests, block by block.

One reader for the notifications service's tests (against the app on loopback) and the e2e
suite (against a running stack): a block ends with a blank line and is returned with its
``id``, ``event``, ``data`` lines joined, ``retry`` and comment lines (``: heartbeat``), so a
test can assert on heartbeats and the opening comment as well as on events.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SseEvent:
    """One block of the stream (an event, or only comments such as a heartbeat)."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    received_at: float = 0.0  # time.time() when its last line arrived

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def is_empty(self) -> bool:
        return not self.data and self.id is None and not self.comments and self.retry is None


class SseReader:
    """Reads the ``response`` of an open stream; every wait has a deadline (``within`` s)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()

    async def block(self, within: float = 5.0) -> SseEvent:
        """The next block; ``StopAsyncIteration`` once the server has ended the response."""
        block, data = SseEvent(), list[str]()
        async with asyncio.timeout(within):
            while True:
                line = await anext(self._lines)
                if line == "":
                    block.data = "\n".join(data)
                    if block.is_empty:
                        continue
                    block.received_at = time.time()
                    return block
                _read_field(block, data, line)

    async def event(self, within: float = 5.0) -> SseEvent:
        """The next block that is an event (heartbeats and other comments skipped)."""
        return (await self.events_until(lambda block: True, within))[-1]

    async def events_until(
        self, last: Callable[[SseEvent], bool], within: float = 5.0
    ) -> list[SseEvent]:
        """The events up to and including the first for which ``last`` holds (comment-only
        blocks skipped)."""
        deadline = time.monotonic() + within
        events = []
        while True:
            block = await self.block(_left(deadline))
            if block.event is not None:
                events.append(block)
                if last(block):
                    return events

    async def heartbeat(self, within: float = 5.0) -> list[SseEvent]:
        """Blocks up to and including the next heartbeat: the events sent before it."""
        deadline = time.monotonic() + within
        events = []
        while True:
            block = await self.block(_left(deadline))
            if block.event is not None:
                events.append(block)
            elif "heartbeat" in block.comments:
                return events

    async def ended(self, within: float = 5.0) -> bool:
        """True once the server has ended the response (blocks before the end skipped)."""
        deadline = time.monotonic() + within
        try:
            while True:
                await self.block(_left(deadline))
        except StopAsyncIteration:
            return True


def _read_field(block: SseEvent, data: list[str], line: str) -> None:
    """One ``name: value`` line into ``block`` (``data`` lines collected apart, joined at
    the block's end); unknown fields are ignored, as the standard says."""
    name, _, value = line.partition(":")
    value = value.removeprefix(" ")
    if name == "":
        block.comments.append(value)
    elif name == "id":
        block.id = value
    elif name == "event":
        block.event = value
    elif name == "data":
        data.append(value)
    elif name == "retry":
        block.retry = int(value)


def _left(deadline: float) -> float:
    return max(0.01, deadline - time.monotonic())
