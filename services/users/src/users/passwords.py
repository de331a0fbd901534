"""Argon2id password hashing, off the event loop (a hash takes tens of milliseconds).

A hash is the most expensive thing a client can ask of this service, and sign-up and login
ask it of anyone. So at most ``hashes_in_flight`` run at once in a process; one more is a
503 with ``Retry-After`` at once (rather than a queue of threads that would take both cores
and every other request's latency with them). An unknown email is checked against a dummy
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
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self.max_in_flight = settings.password_hashes_in_flight
        self.in_flight = 0
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
        if self.in_flight >= self.max_in_flight:
            raise HashingBusy()
        self.in_flight += 1
        try:
            return await asyncio.to_thread(work, argument)
        finally:
            self.in_flight -= 1
