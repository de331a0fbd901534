"""The bus against real Postgres and Redis: outbox, consumer, dead letters, trimming.

Every wait polls with a deadline; intervals are settings, made tiny in conftest.
"""

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import func, select, text

from common import bus
from common.bus import (
    Envelope,
    Handler,
    Handlers,
    Locks,
    OneStatement,
    Only,
    StreamTrimmer,
    ensure_group,
    stream_key,
)
from common.bus.deadletters import cli
from common.bus.statements import InboxRow, qualified
from common.db import Database, NoOutbox, UnitOfWork, UnitOfWorkClosed
from common.logging import correlation_id_var, event_id_var
from common.redis import AfterCommit
from common.testing.polling import eventually

from .harness import Harness, Ping, Pong, sample

pytestmark = pytest.mark.integration

# -- outbox ---------------------------------------------------------------------------------


async def test_outbox_row_and_state_change_commit_together(h: Harness) -> None:
    async with h.database.transaction() as uow:
        await uow.session.execute(h.effects.insert().values(key="k1"))
        envelope = uow.publish(Ping(key="k1"))

    async with h.database.session() as session:
        row = (await session.execute(select(h.outbox))).one()
    assert await h.effect_count("k1") == 1
    assert row.message_id == envelope.id
    assert row.stream == h.key
    assert Envelope.model_validate(row.envelope) == envelope
    assert envelope.source == "bustest"


async def test_rollback_publishes_nothing(h: Harness) -> None:
    outbox = await h.start_outbox()

    async def change_then_fail() -> None:
        async with h.database.transaction() as uow:
            await uow.session.execute(h.effects.insert().values(key="k1"))
            uow.publish(Ping(key="k1"))
            raise RuntimeError("business rule says no")

    with pytest.raises(RuntimeError, match="business rule"):
        await change_then_fail()

    assert await outbox.flush() == 0
    assert await h.effect_count() == 0
    assert await h.outbox_count() == 0
    assert await h.redis.xlen(h.key) == 0


async def test_publishing_without_an_outbox_fails_loudly(h: Harness) -> None:
    without_outbox = Database(h.database.engine)
    with pytest.raises(NoOutbox):
        async with without_outbox.transaction() as uow:
            uow.publish(Ping(key="k1"))


async def test_a_unit_of_work_used_after_its_transaction_fails_loudly(h: Harness) -> None:
    async with h.database.transaction() as uow:
        pass
    with pytest.raises(UnitOfWorkClosed):
        uow.publish(Ping(key="late"))
    with pytest.raises(UnitOfWorkClosed):
        uow.after_commit(lambda: None)
    with pytest.raises(UnitOfWorkClosed):
        _ = uow.session


async def test_committed_messages_are_in_the_stream_when_the_unit_of_work_returns(
    h: Harness,
) -> None:
    """Sent from memory in the committing task: no second transaction, no sweeper (30 s)."""
    await h.start_outbox(outbox={"sweep_interval_seconds": 30, "sweep_grace_seconds": 30})
    envelopes = await h.publish(Ping(key="a"), Ping(key="b"))

    assert [sent.id for _, sent in await h.stream()] == [e.id for e in envelopes]
    await eventually(lambda: _outbox_is_empty(h), what="the sent rows deleted")


async def _outbox_is_empty(h: Harness) -> bool:
    return await h.outbox_count() == 0


async def test_outbox_rows_survive_a_crash_before_publish(h: Harness) -> None:
    # A process commits, then dies before sending anything (its outbox never ran).
    [envelope] = await h.publish(Ping(key="k1"))
    assert await h.outbox_count() == 1
    assert await h.redis.xlen(h.key) == 0

    await h.start_outbox(outbox={"sweep_grace_seconds": 0})  # any later process of the service

    await eventually(lambda: _outbox_is_empty(h), what="the left-behind row swept")
    assert [sent.id for _, sent in await h.stream()] == [envelope.id]


async def test_the_sweeper_leaves_fresh_rows_to_the_process_sending_them(h: Harness) -> None:
    """Rows younger than the grace period belong to a live process about to send them."""
    await h.publish(Ping(key="fresh"))
    outbox = await h.start_outbox(outbox={"sweep_grace_seconds": 3600})

    assert await outbox.sweep(older_than=outbox.sweep_grace) == 0
    assert await h.outbox_count() == 1
    assert await outbox.flush() == 1  # shutdown: whatever its age


async def test_an_empty_sweep_waits_until_the_oldest_row_comes_due(h: Harness) -> None:
    """Idle cost: with nothing to send, the next sweep is when a row could come due (a row
    written from now on is due a grace later), less one interval for open transactions."""
    outbox = await h.start_outbox(outbox={"sweep_grace_seconds": 10, "sweep_interval_seconds": 1})
    swept = await outbox.sweep(older_than=outbox.sweep_grace)
    assert swept == 0
    assert outbox.next_sweep_in(swept) == 9.0

    await h.publish(Ping(key="fresh"))  # due in 10 s, minus its age
    swept = await outbox.sweep(older_than=outbox.sweep_grace)
    assert swept == 0
    assert 8.0 < outbox.next_sweep_in(swept) < 9.0
    assert outbox.next_sweep_in(1) == 1.0  # it sent: the busy cadence
    assert outbox.next_sweep_in(None) == 1.0  # it failed: the busy cadence


async def test_outbox_stop_deletes_what_it_sent_and_leaves_the_rest_to_the_sweeper(
    h: Harness,
) -> None:
    outbox = await h.start_outbox(outbox={"sweep_interval_seconds": 30, "sweep_grace_seconds": 30})
    await h.publish(Ping(key="sent"))
    # Committed outside a unit of work (nothing sends it from memory): as fresh as a row
    # another live process has just sent, so not this process's to send at its stop.
    async with h.database.transaction() as uow:
        item = outbox.prepare(Ping(key="quiet"), correlation_id=None, causation_id=None)
        await outbox.write(uow.connection, [item])  # not published: the uow has no message

    await outbox.stop()

    assert [sent.payload["key"] for _, sent in await h.stream()] == ["sent"]
    assert await h.outbox_count() == 1  # "quiet", for the sweeper once past the grace
    assert not outbox.sending
    later = await h.start_outbox(outbox={"sweep_grace_seconds": 0})  # any process, later
    await eventually(lambda: _outbox_is_empty(h), what="the row left behind swept")
    assert [sent.payload["key"] for _, sent in await h.stream()] == ["sent", "quiet"]
    await later.stop()


async def test_the_sweeper_sends_in_commit_order_and_counts_metrics(h: Harness) -> None:
    before = sample("bus_messages_published_total", stream=h.key, type=Ping.TYPE)
    envelopes = await h.send(*(Ping(key=f"k{i}") for i in range(120)))  # > one batch

    assert [sent.id for _, sent in await h.stream()] == [e.id for e in envelopes]
    after = sample("bus_messages_published_total", stream=h.key, type=Ping.TYPE)
    assert after - before == 120


# -- consuming ------------------------------------------------------------------------------


async def test_consumer_handles_published_messages_once_and_acks(h: Harness) -> None:
    await h.start_outbox()
    await h.start_consumer({Ping: h.recorder()})
    handled_before = sample("bus_messages_handled_total", group=h.group, type=Ping.TYPE)

    await h.publish(*(Ping(key=f"k{i}") for i in range(20)))

    await eventually(lambda: _effects_are(h, 20), what="20 effects")
    await eventually(lambda: _pending_is(h, 0), what="all acked")
    handled = sample("bus_messages_handled_total", group=h.group, type=Ping.TYPE)
    assert handled - handled_before == 20
    assert sample("bus_handle_latency_seconds_count", group=h.group, type=Ping.TYPE) >= 20


async def _effects_are(h: Harness, n: int, key: str | None = None) -> bool:
    return await h.effect_count(key) == n


async def _pending_is(h: Harness, n: int, group: str | None = None) -> bool:
    return await h.pending(group) == n


async def test_redelivery_has_no_second_effect(h: Harness) -> None:
    await h.start_consumer({Ping: h.recorder()})
    [envelope] = await h.send(Ping(key="once"))
    await eventually(lambda: _effects_are(h, 1), what="first delivery")

    # The same envelope again, as after a crash between XADD and deleting the row.
    duplicate_id = await h.add(envelope)

    await eventually(lambda: _delivered_through(h, str(duplicate_id)), what="duplicate read")
    await eventually(lambda: _pending_is(h, 0), what="duplicate acked")
    assert await h.effect_count("once") == 1


async def _delivered_through(h: Harness, entry_id: str) -> bool:
    return str((await h.group_info())["last-delivered-id"]) == entry_id


async def test_an_effect_committed_but_not_acked_is_not_repeated(h: Harness) -> None:
    await ensure_group(h.redis, h.key, h.group)
    [envelope] = await h.send(Ping(key="k1"))
    await h.read(h.group, "dead-1")
    # dead-1 ran the handler and committed, then died before XACK.
    async with h.database.transaction() as uow:
        assert await bus.inbox.record(
            uow.connection, h.inbox, envelope.id, envelope.occurred_at, h.group
        )
        await uow.session.execute(h.effects.insert().values(key="k1"))

    await h.start_consumer({Ping: h.recorder()}, bus={"reclaim_idle_ms": 50})

    await eventually(lambda: _pending_is(h, 0), what="reclaimed and acked")
    assert await h.effect_count("k1") == 1


async def test_dead_consumers_pending_entries_are_reclaimed(h: Harness) -> None:
    await ensure_group(h.redis, h.key, h.group)
    await h.send(*(Ping(key=f"k{i}") for i in range(3)))
    assert len(await h.read(h.group, "dead-1")) == 3  # dead-1 read them and will never acknowledge
    assert await h.consumers_of_group() == {"dead-1": 3}

    await h.start_consumer({Ping: h.recorder()}, name="live-1", bus={"reclaim_idle_ms": 100})

    await eventually(lambda: _effects_are(h, 3), what="reclaimed entries handled")
    await eventually(lambda: _pending_is(h, 0), what="reclaimed entries acked")
    assert (await h.consumers_of_group())["dead-1"] == 0


async def test_idle_consumer_is_deleted_only_after_its_pending_entries_are_claimed(
    h: Harness,
) -> None:
    await ensure_group(h.redis, h.key, h.group)
    await h.send(Ping(key="k1"), Ping(key="k2"))
    await h.read(h.group, "dead-1", 10)
    janitor = h.consumer({Ping: h.recorder()}, name="janitor", bus={"consumer_delete_idle_ms": 1})
    await eventually(lambda: _idle_at_least(h, "dead-1", 5), what="dead-1 idle")

    assert await janitor.delete_idle_consumers(h.key) == []  # dead-1 still holds 2 entries
    assert await h.consumers_of_group() == {"dead-1": 2}

    await h.start_consumer(
        {Ping: h.recorder()}, bus={"reclaim_idle_ms": 50, "consumer_delete_idle_ms": 1}
    )

    await eventually(lambda: _effects_are(h, 2), what="dead-1's entries handled")
    await eventually(lambda: _consumer_gone(h, "dead-1"), what="dead-1 deleted")


async def _idle_at_least(h: Harness, name: str, milliseconds: int) -> bool:
    infos = await h.redis.xinfo_consumers(h.key, h.group)
    return any(info["name"] == name and int(info["idle"]) >= milliseconds for info in infos)


async def _consumer_gone(h: Harness, name: str) -> bool:
    return name not in await h.consumers_of_group()


async def test_restart_rereads_its_own_pending_entries_first(h: Harness) -> None:
    await ensure_group(h.redis, h.key, h.group)
    await h.send(*(Ping(key=f"old-{i}") for i in range(3)))
    # live-1 read these, then its process died before handling them.
    await h.read(h.group, "live-1", 10)
    await h.send(Ping(key="new-0"), Ping(key="new-1"))
    seen: list[str] = []

    # Same consumer name after the restart; no reclaim could pick them up in time.
    await h.start_consumer({Ping: h.recorder(seen)}, name="live-1", bus={"concurrency": 1})

    await eventually(lambda: _effects_are(h, 5), what="all five handled")
    assert seen == ["old-0", "old-1", "old-2", "new-0", "new-1"]
    await eventually(lambda: _pending_is(h, 0), what="all acked")


async def test_entries_of_unhandled_types_are_acked_and_skipped(h: Harness) -> None:
    await h.start_consumer({Ping: h.recorder()})
    other = Envelope.wrap(Pong(key="x"), source="elsewhere").model_copy(
        update={"type": "bustest.SomethingElse"}
    )
    entry_id = await h.add(other)

    await eventually(lambda: _delivered_through(h, str(entry_id)), what="entry read")
    await eventually(lambda: _pending_is(h, 0), what="entry acked")
    assert await h.effect_count() == 0
    assert await h.dead_letters() == []


async def test_handler_sets_log_context_and_replies_inherit_the_ids(h: Harness) -> None:
    await h.start_outbox()
    context: list[tuple[str | None, str | None]] = []

    async def reply(uow: UnitOfWork, envelope: Envelope, message: Ping) -> None:
        context.append((correlation_id_var.get(), event_id_var.get()))
        uow.publish(Pong(key=message.key))

    await h.start_consumer({Ping: reply})
    [ping] = await h.publish(Ping(key="k1"), correlation_id="order-saga-1")
    replies = stream_key(h.prefix, Pong.STREAM)

    await eventually(lambda: _xlen_is_key(h, replies, 1), what="the reply")
    [(_, pong)] = await h.stream(replies)
    assert context == [("order-saga-1", str(ping.id))]
    assert (pong.correlation_id, pong.causation_id) == ("order-saga-1", str(ping.id))
    assert correlation_id_var.get() is None  # the handler's context did not leak


async def _xlen_is_key(h: Harness, key: str, n: int) -> bool:
    return int(await h.redis.xlen(key)) == n


async def test_consumer_recreates_its_group_when_the_stream_is_deleted(h: Harness) -> None:
    await h.start_consumer({Ping: h.recorder()})
    await h.send(Ping(key="before"))
    await eventually(lambda: _effects_are(h, 1), what="first message")

    await h.redis.delete(h.key)  # an operator's mistake; the next XADD recreates the stream
    await h.send(Ping(key="after"))

    await eventually(lambda: _effects_are(h, 1, "after"), what="message after the deletion")


async def test_a_batch_commits_once_and_a_failing_message_does_not_fail_its_neighbours(
    h: Harness,
) -> None:
    calls: list[tuple[str, int]] = []  # (key, the unit of work it ran in)

    async def handler(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        calls.append((message.key, id(uow)))
        if message.key == "bad":
            raise RuntimeError("never digestible")
        await uow.session.execute(h.effects.insert().values(key=message.key))

    # All in the stream before the consumer starts: its first read takes them as one batch.
    await h.send(*(Ping(key=f"k{n}") for n in range(6)), Ping(key="bad"))
    await h.start_consumer({Ping: handler}, bus={"batch_size": 16, "concurrency": 16})

    await eventually(lambda: _effects_are(h, 6), what="the good ones committed")
    await eventually(lambda: _dead_letters_are(h, 1), what="the bad one dead-lettered")
    batch = calls[:7]
    assert [key for key, _ in batch] == [*(f"k{n}" for n in range(6)), "bad"]
    assert len({uow for _, uow in batch}) == 1  # one unit of work for the whole batch
    # Then each was handled alone: the good ones once, the bad one until it gave up (its
    # failure in the batch was its first attempt).
    alone = [key for key, _ in calls[7:]]
    assert sorted(k for k in alone if k != "bad") == [f"k{n}" for n in range(6)]
    assert alone.count("bad") == h.settings.bus.max_attempts - 1
    await eventually(lambda: _pending_is(h, 0), what="every entry settled")


async def test_a_batch_runs_locking_handlers_in_key_order_each_key_in_stream_order(
    h: Harness,
) -> None:
    """Two batches locking the same rows in their own stream orders would deadlock; run in
    key order, they wait for each other instead. Per key, the stream order holds."""
    calls: list[str] = []

    async def handler(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        calls.append(message.key)
        await uow.session.execute(h.effects.insert().values(key=message.key))

    keys = ["c/1", "a/1", "b/1", "a/2", "c/2", "a/3"]
    await h.send(*(Ping(key=key) for key in keys))  # read as one batch, as above
    locking = Locks(lambda ping: ping.key.split("/")[0], handler)
    await h.start_consumer({Ping: locking}, bus={"batch_size": 16, "concurrency": 16})

    await eventually(lambda: _effects_are(h, len(keys)), what="the batch committed")
    assert calls == ["a/1", "a/2", "a/3", "b/1", "c/1", "c/2"]


async def test_graceful_stop_lets_an_in_flight_handler_finish(h: Harness) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        started.set()
        await release.wait()
        await uow.session.execute(h.effects.insert().values(key=message.key))

    consumer = await h.start_consumer({Ping: slow})
    await h.send(Ping(key="k1"))
    await eventually(_flag(started), what="handler started")

    stopping = asyncio.create_task(consumer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not done, "stop() returned while a handler was still running"
    release.set()
    await asyncio.wait_for(stopping, 5)

    assert await h.effect_count("k1") == 1
    assert await h.pending() == 0
    assert not consumer.running


def _flag(event: asyncio.Event) -> Callable[[], Awaitable[bool]]:
    async def is_set() -> bool:
        return event.is_set()

    return is_set


async def test_consumer_refuses_a_block_longer_than_the_socket_timeout(h: Harness) -> None:
    with pytest.raises(ValueError, match="BUS_BLOCK_MS"):
        h.consumer({Ping: h.recorder()}, bus={"block_ms": 5_000}, redis={"timeout_seconds": 2.0})


async def test_housekeeping_is_idle_only_while_nothing_is_pending(h: Harness) -> None:
    """Idle cost: with no entry pending in the group, nothing can be claimable before
    bus.reclaim_idle_ms, so housekeeping may wait that long; a pending entry keeps it busy."""
    await ensure_group(h.redis, h.key, h.group)
    consumer = h.consumer({Ping: h.recorder()}, bus={"reclaim_idle_ms": 60_000})
    assert await consumer.housekeep() == bus.Idle()

    await h.send(Ping(key="k1"))
    await h.read(h.group, "dead-1")  # read by a consumer that may be dead: pending
    assert await consumer.housekeep() is None


async def test_gauges_report_lag_and_pending(h: Harness) -> None:
    await ensure_group(h.redis, h.key, h.group)
    await h.send(*(Ping(key=f"k{i}") for i in range(5)))
    await h.read(h.group, "dead-1", 2)
    consumer = h.consumer({Ping: h.recorder()})

    await consumer.update_gauges(h.key)

    assert sample("bus_consumer_lag", stream=h.key, group=h.group) == 3
    assert sample("bus_consumer_pending", stream=h.key, group=h.group) == 2


# -- dead letters ---------------------------------------------------------------------------


async def test_a_poison_message_is_dead_lettered_then_listed_and_replayed(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed = False
    attempts: list[str] = []

    async def fragile(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        attempts.append(message.key)
        if message.key == "poison" and not fixed:
            raise RuntimeError("boom: cannot digest this one")
        await uow.session.execute(h.effects.insert().values(key=message.key))

    await h.start_consumer({Ping: fragile}, bus={"reclaim_idle_ms": 30, "max_attempts": 3})
    [poison, _] = await h.send(Ping(key="poison"), Ping(key="fine"))

    await eventually(lambda: _dead_letters_are(h, 1), what="the dead letter")
    [letter] = await h.dead_letters()
    assert (letter.stream, letter.group, letter.type) == (h.key, h.group, Ping.TYPE)
    assert letter.attempts == 3
    assert attempts.count("poison") == 3
    assert "RuntimeError: boom: cannot digest this one" in letter.error
    assert Envelope.from_json(letter.envelope).id == poison.id
    assert await h.effect_count("fine") == 1
    assert await h.effect_count("poison") == 0
    await eventually(lambda: _pending_is(h, 0), what="the poison acked after dead-lettering")
    assert sample("bus_messages_failed_total", group=h.group, type=Ping.TYPE) == 3
    assert sample("bus_messages_dead_lettered_total", group=h.group, type=Ping.TYPE) == 1

    # The operator looks...
    capsys.readouterr()
    assert await cli([*h.redis_args, "--prefix", h.prefix, "list"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.split("\t")[:5] == [letter.id, h.key, h.group, Ping.TYPE, "3"]
    assert line.endswith("RuntimeError: boom: cannot digest this one")

    # ...fixes the bug, and replays.
    fixed = True
    assert await cli([*h.redis_args, "--prefix", h.prefix, "replay", letter.id]) == 0
    assert f"replayed {letter.id}" in capsys.readouterr().out

    await eventually(lambda: _effects_are(h, 1, "poison"), what="the replayed message handled")
    assert await h.dead_letters() == []
    assert await cli([*h.redis_args, "--prefix", h.prefix, "replay", letter.id]) == 1


async def test_a_handler_failing_in_a_batch_runs_exactly_max_attempts_times(h: Harness) -> None:
    """The batch's failed attempt is the failing entry's first; its neighbour's rolled-back
    run is not counted against it (both were in the stream before the consumer read)."""
    attempts: list[str] = []

    async def fragile(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        attempts.append(message.key)
        if message.key == "poison":
            raise RuntimeError("boom")
        await uow.session.execute(h.effects.insert().values(key=message.key))

    await h.send(Ping(key="poison"), Ping(key="fine"))
    await h.start_consumer({Ping: fragile}, bus={"max_attempts": 3})

    await eventually(lambda: _dead_letters_are(h, 1), what="the dead letter")
    [letter] = await h.dead_letters()
    assert letter.attempts == 3
    assert attempts[:2] == ["poison", "fine"], "both were handled in one batch first"
    assert attempts.count("poison") == 3
    assert await h.effect_count("fine") == 1
    assert sample("bus_messages_failed_total", group=h.group, type=Ping.TYPE) == 3


RAISE_DEADLOCK = "DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"


async def test_a_deadlock_is_tried_again_without_counting_toward_the_dead_letter(
    h: Harness,
) -> None:
    """Postgres picks a deadlock's victim (SQLSTATE 40P01): nobody's bug, so the handler
    runs again, more times than ``bus.max_attempts``, and nothing is dead-lettered."""
    runs: list[str] = []

    async def unlucky(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        runs.append(message.key)
        if len(runs) <= 3:  # the server raises it, as it does for a real deadlock's victim
            await uow.session.execute(text(RAISE_DEADLOCK))
        await uow.session.execute(h.effects.insert().values(key=message.key))

    await h.send(Ping(key="victim"))
    await h.start_consumer({Ping: unlucky}, bus={"max_attempts": 2})

    await eventually(lambda: h.effect_count("victim"), lambda n: n == 1, what="the effect")
    assert runs == ["victim"] * 4
    assert await h.dead_letters() == []
    assert sample("bus_transaction_conflicts_total", group=h.group, type=Ping.TYPE) == 3
    assert sample("bus_messages_failed_total", group=h.group, type=Ping.TYPE) == 0


async def _dead_letters_are(h: Harness, n: int) -> bool:
    return len(await h.dead_letters()) == n


async def test_a_message_whose_handler_never_returns_is_dead_lettered_by_delivery_count(
    h: Harness,
) -> None:
    await ensure_group(h.redis, h.key, h.group)
    [envelope] = await h.send(Ping(key="k1"))
    # Three consumers in turn took it and died mid-handling (each delivery counts).
    await h.read(h.group, "dead-1")
    for name in ("dead-2", "dead-3"):
        await h.redis.xclaim(h.key, h.group, name, 0, [(await h.stream())[0][0]])
    await h.start_consumer({Ping: h.recorder()}, bus={"reclaim_idle_ms": 30, "max_attempts": 3})

    await eventually(lambda: _dead_letters_are(h, 1), what="the dead letter")
    [letter] = await h.dead_letters()
    assert letter.attempts == 3
    assert "gave up after 3 deliveries" in letter.error
    assert Envelope.from_json(letter.envelope).id == envelope.id
    assert await h.effect_count() == 0
    await eventually(lambda: _pending_is(h, 0), what="acked after dead-lettering")


async def test_malformed_entries_go_straight_to_dead_letters(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    await h.start_consumer({Ping: h.recorder()})
    await h.redis.xadd(h.key, {"envelope": "{not json"})
    await h.redis.xadd(h.key, {"something": "else"})
    bad_payload = Envelope.wrap(Ping(key="x"), source="t").model_copy(update={"payload": {}})
    await h.add(bad_payload)

    await eventually(lambda: _dead_letters_are(h, 3), what="three dead letters")
    letters = await h.dead_letters()
    assert [letter.attempts for letter in letters] == [1, 1, 1]
    # Read together or not, in any order: two undecodable envelopes, one invalid payload.
    kinds = sorted(letter.error.split(":")[0] for letter in letters)
    assert kinds == ["invalid payload", "undecodable envelope", "undecodable envelope"]
    await eventually(lambda: _pending_is(h, 0), what="malformed entries acked")

    # Replaying them all puts them back; still malformed, they come back as dead letters.
    capsys.readouterr()
    assert await cli([*h.redis_args, "--prefix", h.prefix, "replay", "--all"]) == 0
    assert "replayed 3" in capsys.readouterr().out
    await eventually(lambda: _delivered_count(h, 6), what="replayed entries read")
    await eventually(lambda: _dead_letters_are(h, 3), what="dead-lettered again")


async def _delivered_count(h: Harness, n: int) -> bool:
    return int((await h.group_info())["entries-read"]) == n


async def test_the_deadletters_module_runs_as_a_command(h: Harness) -> None:
    await h.start_consumer({Ping: h.recorder()})
    await h.redis.xadd(h.key, {"envelope": "{not json"})
    await eventually(lambda: _dead_letters_are(h, 1), what="a dead letter")
    [letter] = await h.dead_letters()

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "common.bus",
        "--prefix",
        h.prefix,
        "list",
        "--limit",
        "5",
        env={**os.environ, "BUS_REDIS_URL": h.redis_url},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0
    assert out.decode().startswith(f"{letter.id}\t{h.key}\t{h.group}\t?\t1\tundecodable")


# -- trimming -------------------------------------------------------------------------------


async def test_trimming_never_drops_unacknowledged_entries(h: Harness) -> None:
    await ensure_group(h.redis, h.key, "slow")
    await h.start_consumer({Ping: h.recorder()}, group="fast")
    await h.send(*(Ping(key=f"k{i}") for i in range(10)))
    ids = [entry_id for entry_id, _ in await h.stream()]
    await eventually(lambda: _pending_is(h, 0, "fast"), what="fast group done")
    await eventually(lambda: _effects_are(h, 10), what="fast group done")
    await h.read("slow", "slow-1", 3)  # slow: 3 pending
    trimmer = StreamTrimmer(h.redis, [h.key], settings=h.settings)

    assert await trimmer.trim(h.key) == 0  # the slow group still needs them all
    await h.redis.xack(h.key, "slow", ids[0], ids[1])
    assert await trimmer.trim(h.key) == 2  # only what every group acknowledged
    assert [entry_id for entry_id, _ in await h.stream()] == ids[2:]

    assert await h.read("slow", "slow-1") == ids[3:]
    await h.redis.xack(h.key, "slow", *ids[2:])
    assert await trimmer.trim(h.key) == 8  # now every group is done with every entry
    assert await h.redis.xlen(h.key) == 0


async def test_trimming_keeps_the_minimum_retention(h: Harness) -> None:
    await h.start_consumer({Ping: h.recorder()})
    await h.send(*(Ping(key=f"k{i}") for i in range(10)))
    await eventually(lambda: _pending_is(h, 0), what="all acked")
    await eventually(lambda: _effects_are(h, 10), what="all handled")

    by_count = StreamTrimmer(
        h.redis, [h.key], settings=h.with_settings(stream={"min_retention": 4})
    )
    by_age = StreamTrimmer(
        h.redis, [h.key], settings=h.with_settings(stream={"min_retention_seconds": 3600})
    )

    assert await by_age.trim(h.key) == 0
    assert await by_count.trim(h.key) == 6
    assert await h.redis.xlen(h.key) == 4


async def test_a_stream_nobody_consumes_yet_is_not_trimmed(h: Harness) -> None:
    await h.send(Ping(key="k1"))
    trimmer = StreamTrimmer(h.redis, [h.key, h.prefix + "missing"], settings=h.settings)

    assert await trimmer.trim_all() == {h.key: 0, h.prefix + "missing": 0}
    assert await h.redis.xlen(h.key) == 1


# -- tracing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """An SDK tracer provider exporting to memory (the global one can be set only once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


async def test_one_trace_spans_the_publisher_and_the_consumer(
    h: Harness, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /orders") as request_span:
        [envelope] = await h.send(Ping(key="traced"))
    assert "traceparent" in envelope.trace

    await h.start_consumer({Ping: h.recorder()})
    await eventually(lambda: _effects_are(h, 1), what="handled")

    handled = [s for s in spans.get_finished_spans() if s.name == "handle bustest.Ping"]
    assert len(handled) == 1
    request = request_span.get_span_context()
    assert handled[0].context.trace_id == request.trace_id
    assert handled[0].parent is not None
    assert handled[0].parent.span_id == request.span_id


async def test_only_the_wanted_messages_reach_the_handler_the_rest_cost_no_transaction(
    h: Harness,
) -> None:
    seen: list[str] = []
    await h.start_consumer({Ping: Only(lambda ping: ping.key.startswith("yes"), h.recorder(seen))})
    await h.send(Ping(key="yes-1"), Ping(key="no-1"), Ping(key="yes-2"), Ping(key="no-2"))

    await eventually(lambda: _pending_is(h, 0), what="all four acknowledged")
    assert sorted(seen) == ["yes-1", "yes-2"]
    async with h.database.session() as session:
        handled = (await session.execute(select(func.count()).select_from(h.inbox))).scalar_one()
    assert handled == 2  # the unwanted ones never opened a unit of work


async def _xacks_on(h: Harness, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in commands if str(c["command"]).startswith(f"XACK {h.key} ")]


async def test_unwanted_entries_are_acknowledged_together_in_the_next_reads_round_trip(
    h: Harness,
) -> None:
    """Entries a group ignores cost no round trip of their own: one XACK for all of them,
    pipelined with the next XREADGROUP on the same connection (seen by MONITOR)."""
    await h.send(*(Ping(key=f"no-{i}") for i in range(4)))  # read together, in one batch
    async with _monitoring(h) as seen:
        await h.start_consumer({Ping: Only(lambda ping: False, h.recorder())})
        await eventually(lambda: _pending_is(h, 0), what="all four acknowledged")
        await eventually(lambda: _monitored_read_after_xack(h, seen), what="the read after")

    [xack] = await _xacks_on(h, seen)
    assert len(str(xack["command"]).split()) == 3 + 4  # XACK key group + the four ids
    same_connection = [c for c in seen if c["client_port"] == xack["client_port"]]
    after = same_connection[same_connection.index(xack) + 1]
    assert str(after["command"]).startswith("XREADGROUP ")


async def test_unhurried_entries_are_handled_alone_or_with_the_next_wake_up(h: Harness) -> None:
    """Pongs may wait: a Pong alone is handled by the next read (after ``bus.block_ms`` at
    most), one sent with a Ping with the Ping's wake-up; nothing stays pending."""
    await _unhurried_pongs_handled(h)
    pongs = stream_key(h.prefix, Pong.STREAM)
    await eventually(lambda: _none_pending_on(h, pongs), what="the Pongs acknowledged")


async def test_an_unhurried_stream_is_read_after_the_blocking_read_never_waited_on(
    h: Harness,
) -> None:
    """The Pongs' stream is read without BLOCK, in the blocking read's round trip (MONITOR)."""
    pongs = stream_key(h.prefix, Pong.STREAM)
    async with _monitoring(h) as monitored:
        await _unhurried_pongs_handled(h)

    ours = f"XREADGROUP GROUP {h.group} "  # MONITOR sees every client of the server
    reads = [str(c["command"]) for c in monitored if str(c["command"]).startswith(ours)]
    blocking = [r for r in reads if " BLOCK " in r]
    assert blocking
    assert all(h.key in r and pongs not in r for r in blocking)
    unhurried = [r for r in reads if pongs in r]
    assert unhurried
    assert all(" BLOCK " not in r for r in unhurried)


async def _unhurried_pongs_handled(h: Harness) -> None:
    seen: list[str] = []
    await h.start_consumer({Ping: h.recorder(seen), Pong: h.recorder(seen)}, unhurried=[Pong])
    await h.send(Pong(key="alone"))
    await eventually(lambda: _seen_now(seen, "alone"), what="the lone Pong handled")
    await h.send(Ping(key="ping"), Pong(key="with-ping"))
    await eventually(lambda: _seen_now(seen, "ping", "with-ping"), what="both handled")


async def test_unhurried_entries_are_handled_before_the_entries_that_woke_the_read(
    h: Harness,
) -> None:
    """A Pong that waited is handled before the Ping that came after it and woke the read
    (as a sign-up's welcome comes before its first order's outcome). The read blocks for
    long enough that the Pong is not read alone meanwhile."""
    seen: list[str] = []
    handlers: Handlers = {Ping: h.recorder(seen), Pong: h.recorder(seen)}
    await h.start_consumer(handlers, unhurried=[Pong], bus={"block_ms": 1_000})
    await h.send(Pong(key="earlier"))
    await h.send(Ping(key="later"))
    await eventually(lambda: _seen_now(seen, "earlier", "later"), what="both handled")
    assert seen == ["earlier", "later"]


async def test_a_stream_with_a_hurried_type_is_waited_on_though_it_has_unhurried_ones(
    h: Harness,
) -> None:
    """Unhurried is per stream: one type on it that is not makes the stream waited on."""

    class Later(Ping):
        TYPE: ClassVar[str] = "bustest.Later"  # on the Pings' stream

    consumer = h.consumer({Ping: h.recorder(), Later: h.recorder()}, unhurried=[Later])
    assert consumer.waited_on == (h.key,)


async def _none_pending_on(h: Harness, key: str) -> bool:
    """Handled entries are acknowledged after their commit, a moment after their effect."""
    return await h.pending(key=key) == 0


async def _seen_now(seen: list[str], *keys: str) -> bool:
    return set(keys) <= set(seen)


@contextlib.asynccontextmanager
async def _monitoring(h: Harness) -> AsyncIterator[list[dict[str, Any]]]:
    """Every command Redis runs meanwhile (MONITOR), with its client's address."""
    seen: list[dict[str, Any]] = []

    async def monitor() -> None:
        async with h.redis.monitor() as m:
            async for command in m.listen():
                seen.append(command)

    watching = asyncio.create_task(monitor())
    await eventually(lambda: _monitor_ready(h, seen), what="MONITOR started")
    try:
        yield seen
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


async def _monitor_ready(h: Harness, seen: list[dict[str, Any]]) -> bool:
    await h.redis.echo("monitor-probe")
    return any("monitor-probe" in str(c["command"]) for c in seen)


async def _monitored_read_after_xack(h: Harness, seen: list[dict[str, Any]]) -> bool:
    xacks = await _xacks_on(h, seen)
    if not xacks:
        return False
    port = xacks[-1]["client_port"]
    later = seen[seen.index(xacks[-1]) + 1 :]
    return any(c["client_port"] == port for c in later)


def _counting(h: Harness, key: str, reported: list[bool]) -> Handler:
    """A handler whose unit of work INCRs ``key`` after commit, and LPUSHes on it too (a
    WRONGTYPE error: the XACK must go through all the same)."""

    async def handle(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        await uow.session.execute(h.effects.insert().values(key=message.key))
        uow.after_commit_redis(AfterCommit(h.redis, lambda pipe: pipe.incr(key), reported.append))
        uow.after_commit_redis(
            AfterCommit(h.redis, lambda pipe: pipe.lpush(key, "x"), reported.append)
        )

    return handle


async def test_a_handlers_redis_commands_go_with_the_xack_and_their_errors_do_not_stop_it(
    h: Harness,
) -> None:
    key = f"{h.key}:counter"  # the stream's hash tag: one slot on a cluster
    reported: list[bool] = []
    await h.start_consumer({Ping: _counting(h, key, reported)})
    await h.send(Ping(key="k1"))

    await eventually(lambda: _pending_is(h, 0), what="acknowledged")
    assert await h.effect_count("k1") == 1
    assert await h.redis.get(key) == "1"
    assert reported == [True, False]


async def test_a_handlers_redis_commands_cost_no_round_trip_of_their_own(h: Harness) -> None:
    key = f"{h.key}:counter"
    async with _monitoring(h) as seen:
        await h.start_consumer({Ping: _counting(h, key, [])})
        await h.send(Ping(key="k1"))
        await eventually(lambda: _pending_is(h, 0), what="acknowledged")
        await eventually(lambda: _saw(seen, f"LPUSH {key}"), what="the commands seen")

    [xack] = await _xacks_on(h, seen)
    same_connection = [c for c in seen if c["client_port"] == xack["client_port"]]
    after = [str(c["command"]).split()[0] for c in same_connection[same_connection.index(xack) :]]
    assert after[:3] == ["XACK", "INCRBY", "LPUSH"]  # one pipeline, one round trip


async def _saw(seen: list[dict[str, Any]], prefix: str) -> bool:
    return any(str(c["command"]).startswith(prefix) for c in seen)


# -- handlers whose effect is one statement (OneStatement): no transaction ------------------


def _one_statement_recorder(h: Harness, calls: list[str] | None = None) -> Handler:
    """A handler writing its effect and the message's inbox row in one statement, the effect
    only if the row is new (what the saga's replies do)."""
    inbox = InboxRow(h.inbox, 2)
    sql = (
        f"WITH {inbox.cte} INSERT INTO {qualified(h.effects)} (key) "
        f"SELECT $1::varchar WHERE {inbox.first_time}"
    )

    async def handle(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        assert not uow.connection.is_in_transaction()
        if calls is not None:
            calls.append(message.key)
        if message.key.startswith("bad"):
            raise RuntimeError("never digestible")
        await uow.connection.execute(sql, message.key, *InboxRow.params(uow.inbox_claim))

    return handle


async def test_a_one_statement_handler_records_its_message_with_its_effect_once(
    h: Harness,
) -> None:
    calls: list[str] = []
    await h.start_consumer({Ping: OneStatement(_one_statement_recorder(h, calls))})
    [envelope] = await h.send(Ping(key="once"))
    await eventually(lambda: _effects_are(h, 1), what="first delivery")

    duplicate_id = await h.add(envelope)  # as after a crash between XADD and DELETE

    await eventually(lambda: _delivered_through(h, duplicate_id), what="duplicate read")
    await eventually(lambda: _pending_is(h, 0), what="duplicate acked")
    assert calls == ["once", "once"]  # the consumer ran it again: its statement did nothing
    assert await h.effect_count("once") == 1
    async with h.database.session() as session:
        inbox = h.inbox.c
        recorded = await session.execute(
            select(inbox.consumer_group, inbox.occurred_at).where(inbox.message_id == envelope.id)
        )
        assert recorded.all() == [(h.group, envelope.occurred_at)]


async def test_a_failing_one_statement_handler_is_retried_alone_then_dead_lettered(
    h: Harness,
) -> None:
    calls: list[str] = []
    await h.send(Ping(key="k1"), Ping(key="bad"), Ping(key="k2"))  # one batch
    await h.start_consumer({Ping: OneStatement(_one_statement_recorder(h, calls))})

    await eventually(lambda: _dead_letters_are(h, 1), what="the bad one dead-lettered")
    await eventually(lambda: _pending_is(h, 0), what="every entry settled")
    assert await h.effect_count() == 2  # its neighbours' effects, once each
    assert calls[:3] == ["k1", "bad", "k2"]  # stream order, each in its own statement
    assert calls.count("bad") == h.settings.bus.max_attempts
    assert calls.count("k1") == calls.count("k2") == 1


async def test_one_statement_handlers_of_a_batch_are_acknowledged_with_one_xack(
    h: Harness,
) -> None:
    await h.send(*(Ping(key=f"k{i}") for i in range(4)))  # read together, in one batch
    async with _monitoring(h) as seen:
        await h.start_consumer({Ping: OneStatement(_one_statement_recorder(h))})
        await eventually(lambda: _effects_are(h, 4), what="four effects")
        await eventually(lambda: _pending_is(h, 0), what="all four acknowledged")

    [xack] = await _xacks_on(h, seen)
    assert len(str(xack["command"]).split()) == 3 + 4  # XACK key group + the four ids
