"""Versioned contracts on a real Redis and Postgres: the tolerant reader, and a newer version
held (pending, uncounted, listed for operators) until a consumer that knows it handles it."""

import uuid
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from common.bus import Envelope
from common.bus.held import RetryLater, list_held, newer_than_known
from common.contracts import Message
from common.db import UnitOfWork
from common.testing.polling import eventually

from .harness import Harness, Ping, sample

pytestmark = pytest.mark.integration


class PingV2(Message):
    """Ping's next version: gains a field, with a default (so version 1 still reads)."""

    TYPE: ClassVar[str] = Ping.TYPE
    STREAM: ClassVar[str] = Ping.STREAM
    SCHEMA_VERSION: ClassVar[int] = 2

    key: str
    priority: int = 0


def envelope_of(message_type: type[Message], version: int, payload: dict[str, object]) -> Envelope:
    """An envelope as another release's producer would write it."""
    return Envelope(
        id=uuid.uuid4(),
        type=message_type.TYPE,
        source="other-release",
        occurred_at=datetime.now(UTC),
        correlation_id="c-1",
        schema_version=version,
        payload=payload,
    )


def test_only_a_newer_version_than_the_consumer_knows_is_retried_later():
    assert newer_than_known(envelope_of(Ping, 1, {"key": "k"}), Ping) is None
    assert newer_than_known(envelope_of(Ping, 1, {"key": "k"}), PingV2) is None
    later = newer_than_known(envelope_of(Ping, 2, {"key": "k"}), Ping)
    assert isinstance(later, RetryLater)
    assert "v2" in later.reason
    assert "v1" in later.reason


def test_the_envelope_carries_the_contracts_version():
    assert Envelope.wrap(PingV2(key="k"), source="t").schema_version == 2
    assert Envelope.wrap(Ping(key="k"), source="t").schema_version == 1


async def test_a_newer_version_is_held_never_dead_lettered_then_handled_by_a_consumer_that_knows_it(
    h: Harness,
) -> None:
    old = await h.start_consumer({Ping: h.recorder()}, bus={"reclaim_idle_ms": 50})
    entry_id = await h.add(envelope_of(PingV2, 2, {"key": "new", "priority": 5}))
    held_before = sample("bus_messages_held_total", group=h.group, type=Ping.TYPE)

    # Held again on every reclaim cycle: more holds than bus.max_attempts (3), still no
    # dead letter, no effect, and the entry still pending.
    await eventually(
        lambda: _held_more_than(h, held_before, 2 * h.settings.bus.max_attempts),
        what="the entry held over several reclaim cycles",
    )
    assert await h.dead_letters() == []
    assert await h.effect_count() == 0
    assert await h.pending() == 1
    [held] = await list_held(h.redis, prefix=h.prefix)
    assert (held.entry_id, held.group, held.schema_version, held.known_version) == (
        entry_id,
        h.group,
        2,
        1,
    )
    await old.stop()

    seen: list[str] = []
    priorities: list[int] = []

    async def handle(uow: UnitOfWork, envelope: Envelope, message: PingV2) -> None:
        await h.recorder(seen)(uow, envelope, message)
        priorities.append(message.priority)

    await h.start_consumer({PingV2: handle}, name="new-1", bus={"reclaim_idle_ms": 50})

    await eventually(lambda: _pending_is_zero(h), what="the held entry handled and acked")
    assert (seen, priorities) == (["new"], [5])
    assert await h.dead_letters() == []
    assert await list_held(h.redis, prefix=h.prefix) == []


async def test_the_previous_version_is_read_missing_fields_defaulted_unknown_ones_ignored(
    h: Harness,
) -> None:
    priorities: list[int] = []

    async def handle(uow: UnitOfWork, envelope: Envelope, message: PingV2) -> None:
        await h.recorder()(uow, envelope, message)
        priorities.append(message.priority)

    await h.start_consumer({PingV2: handle})
    await h.add(envelope_of(Ping, 1, {"key": "old"}))
    await h.add(envelope_of(PingV2, 2, {"key": "extra", "priority": 2, "unknown": [1, 2]}))

    # Waited for by their effects: "nothing pending" also holds before the consumer reads them.
    await eventually(lambda: h.effect_count(), lambda n: n == 2, what="both versions handled")
    assert await h.effect_count("old") == 1
    assert await h.effect_count("extra") == 1
    await eventually(lambda: _pending_is_zero(h), what="both acknowledged")
    assert sorted(priorities) == [0, 2]
    assert await h.dead_letters() == []


async def _held_more_than(h: Harness, before: float, holds: int) -> bool:
    return sample("bus_messages_held_total", group=h.group, type=Ping.TYPE) - before > holds


async def _pending_is_zero(h: Harness) -> bool:
    return await h.pending() == 0
