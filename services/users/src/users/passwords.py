"""Argon2id password hashing, off the event loop (a hash takes tens of milliseconds).

A hash is the most expensive thing a client can ask of this service, and sign-up and login
ask it of anyone. So at most ``password.hashes_in_flight`` run at once in a process (rather
than a thread per request, which would take every core and every other request's latency
with them); a few more (``password.hashes_queued``) wait for a turn, at most
``password.hash_wait_seconds``, so that a burst of honest sign-ups succeeds; past that a
request is a 503 with ``Retry-After`` at once. An unknown email is checked against a dummy
hash, so it costs the same as a wrong password and timing does not tell which emails exist.
"""

import asyncio
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from common.errors import Problem
from users.settings import Settings

T = TypeVar("T")


class HashingBusy(Problem):
    status = 503

    def __init__(self) -> None:
        super().__init__(
            "Too many password checks are running; retry shortly.",
            headers={"Retry-After": "1"},
        )


class Passwords:
    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2.time_cost,
            memory_cost=settings.argon2.memory_kib,
            parallelism=settings.argon2.parallelism,
        )
        self._running = asyncio.Semaphore(settings.password.hashes_in_flight)
        self.max_waiting = settings.password.hashes_queued
        self.wait_seconds = settings.password.hash_wait_seconds
        self.waiting = 0
        # Verified against when the email is unknown, so both cases take the same time.
        self._dummy_hash = self._hasher.hash("not-a-real-password")

    async def hash(self, password: str) -> str:
        return await self._bounded(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash (unknown email) the dummy hash is
        checked all the same and the answer is False."""

        def check(candidate: str) -> bool:
            try:
                return self._hasher.verify(candidate, password)
            except (VerificationError, InvalidHashError):
                return False

        matches = await self._bounded(check, password_hash or self._dummy_hash)
        return password_hash is not None and matches

    async def _bounded(self, work: Callable[[str], T], argument: str) -> T:
        await self._take_a_turn()
        try:
            return await asyncio.to_thread(work, argument)
        finally:
            self._running.release()

    async def _take_a_turn(self) -> None:
        """A running slot now, or after a bounded wait in a bounded queue; else 503."""
        if not self._running.locked():
            await self._running.acquire()  # free: taken without waiting
            return
        if self.waiting >= self.max_waiting:
            raise HashingBusy()
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._running.acquire()
        except TimeoutError:
            raise HashingBusy() from None
        finally:
            self.waiting -= 1
