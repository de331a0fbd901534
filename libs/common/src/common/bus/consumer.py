"""Consumer: reads a service's subscribed streams in its consumer group and runs handlers.

Delivery is at-least-once, made effectively-once by the inbox. The traps of Redis Streams
are designed out here, once, for every service:

* A restarted consumer first re-reads its own pending entries (``XREADGROUP ... 0``), then
  new ones (``>``); otherwise what it had read before dying would wait for a reclaim.
* An entry is acknowledged only after the handler's transaction committed; a handler error
  never acknowledges it.
* A handler that raises is retried at once, in-process, with exponential backoff and jitter
  (``bus.retry_base_seconds`` doubling up to ``bus.retry_max_seconds``); after
  ``bus.max_attempts`` failures the entry goes to the dead-letter stream, then is
  acknowledged (atomically). An entry that cannot be decoded goes there at once. Nothing is
  dropped silently.
* Postgres or Redis being unreachable is not the handler's failure: consumption pauses, one
  probe pings both with backoff (up to ``bus.pause_max_seconds``), and every entry in hand is
  tried again once they answer. Nothing is counted, so a long outage dead-letters nothing.
* Pending entries idle ``bus.reclaim_idle_ms``, of any consumer of the group (dead pods), are
  reclaimed with ``XAUTOCLAIM``, batch after batch while batches come back full. An entry
  delivered more than ``bus.max_attempts`` times without an outcome (its handler may crash
  the process) is dead-lettered.
* Consumer names are stable per process slot (``settings.consumer_name``, the pod name); a
  consumer of the group idle for ``bus.consumer_delete_idle_ms`` is deleted, but only by a
  script that checks, atomically, that it has no pending entries left (deleting a consumer
  deletes its pending list, which would lose those entries).
* Blocking reads use ``BLOCK bus.block_ms``, below the client's socket timeout.

Unhurried streams: a group may declare types whose handling can wait for its next read
(``unhurried``: the users group's welcome confirmations, the notifications group's
sign-ups). A stream that carries no other type this group handles is never waited on: the
blocking XREADGROUP names the other streams only, and in the same round trip, right after
it, a non-blocking XREADGROUP takes what the unhurried streams hold. Such an entry is
handled at the group's next wake-up for other work, or after ``bus.block_ms`` at most. What
it saves is the wake-up: those streams also carry the types this group ignores (every
credit reply and saga confirmation), and each such entry would otherwise wake the worker
for a read, a decode and an acknowledgement, about a millisecond of CPU per saga each.

Batches: the entries one XREADGROUP returns (up to ``bus.batch_size``) are handled together,
in stream order (handlers that take a lock, :class:`Locks`, in the order of their keys),
in one unit of work (one inbox INSERT, one COMMIT, one XACK per stream), so
a busy consumer pays for a transaction per batch, not per message. A handler whose effect is
one statement (:class:`OneStatement`) needs no transaction at all: its statement records the
message in the inbox itself, and a batch's such entries share only the XACK. A handler that raises
fails only its batch's attempt: each entry is then handled alone. Several batches run
concurrently, up to ``bus.concurrency`` entries in flight, so one slow handler does not hold
up the stream. What holds: entries of one batch with the same lock key are handled in stream
order; across batches (and replicas, and retries) there is no order, so handlers must not
depend on one (the saga's transitions and the credit rules do not: they are keyed and
idempotent per order).
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError
from redis.typing import KeyT, StreamIdT
from sqlalchemy import Table

from common.backoff import equal_jitter, exponential
from common.bus import metrics
from common.bus.deadletters import dead_letter
from common.bus.envelope import ENVELOPE_FIELD, Envelope
from common.bus.held import RetryLater, hold, newer_than_known
from common.bus.outbox import Outgoing
from common.bus.periodic import Idle, Periodic
from common.bus.statements import InboxStatements
from common.bus.streams import ensure_group, stream_key, text
from common.contracts import Message
from common.db import Database, InboxClaim, UnitOfWork
from common.logging import correlation_id_var, event_id_var
from common.redis import AfterCommit as RedisAfterCommit
from common.redis import Script, execute_reporting, queue_after_commit, send_after_commit
from common.settings import ServiceSettings
from common.tracing import message_span
from common.unavailable import is_transaction_conflict, is_unavailable

logger = logging.getLogger("common.bus.consumer")

Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]
"""``handler(uow, envelope, message)``: the message is the typed contract model.

It runs inside the unit of work that also records the message in the inbox; it must not
commit. Whatever it publishes with ``uow.publish`` continues the message's conversation
(its correlation id, caused by its id).
"""

RawEntry = tuple[str, dict[str, str]]

MAX_REMEMBERED_ERRORS = 10_000

# KEYS[1]: stream. ARGV[1]: group. ARGV[2]: consumer. Deletes the consumer only if it has no
# pending entries, in one step, so entries it reads meanwhile cannot be lost with it.
_DELETE_IDLE_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class _HandlerFailed(Exception):
    """The handler of ``item`` raised: one attempt toward the dead-letter stream, unless
    Postgres only rolled its transaction back to settle a race (``counted`` False)."""

    def __init__(self, item: "_Ready", error: str, *, counted: bool = True) -> None:
        super().__init__(error)
        self.item = item
        self.error = error
        self.counted = counted


@dataclass(frozen=True)
class OneStatement:
    """A handler whose effect is one statement that also records the message in the inbox:
    it runs in a single-statement unit of work (``Database.single_statement``), with no
    BEGIN and no COMMIT round trip, and no inbox INSERT of the consumer's own.

    The consumer sets ``uow.inbox_claim``; every statement of the handler that writes must
    write the claim's inbox row (common.bus.statements.InboxRow) and write its effect only
    if that row is new, so that the record and the effect commit together or not at all, as
    in a transaction. Reads before that statement decide what it writes. The saga's replies
    are such handlers: three Postgres round trips fewer per message.
    """

    handler: Handler


@dataclass(frozen=True)
class Only:
    """A handler for the messages of a type that ``wanted`` accepts; the others are
    acknowledged as they are read, with no transaction (e.g. the users service wants only
    the welcome's NotificationRecorded, not every order's)."""

    wanted: Callable[[Any], bool]
    handler: Handler | OneStatement


@dataclass(frozen=True)
class Locks:
    """A handler that takes one lock per message (a row's, or an advisory lock), the one
    ``key(message)`` names: the user's, for a credit command. A batch runs such handlers in
    the order of their keys, so two batches running at once take their locks in the same
    order and cannot deadlock (a deadlock costs Postgres's ``deadlock_timeout``, a second,
    and a retry of the batch). Messages with the same key keep their stream order."""

    key: Callable[[Any], object]
    handler: Handler | OneStatement | Only


Handlers = Mapping[type[Message], Handler | OneStatement | Only | Locks]
"""A consumer group's handlers: message type -> handler (or :class:`Only` some of them,
:class:`Locks` for one that takes a lock, :class:`OneStatement` for one that needs no
transaction)."""


@dataclass(frozen=True)
class _Route:
    message_type: type[Message]
    handler: Handler
    wanted: Callable[[Any], bool] | None = None
    lock_key: Callable[[Any], object] | None = None
    one_statement: bool = False


def _route(message_type: type[Message], declared: Handler | OneStatement | Only | Locks) -> _Route:
    lock_key = None
    wanted = None
    if isinstance(declared, Locks):
        lock_key, declared = declared.key, declared.handler
    if isinstance(declared, Only):
        wanted, declared = declared.wanted, declared.handler
    if isinstance(declared, OneStatement):
        return _Route(message_type, declared.handler, wanted, lock_key, one_statement=True)
    return _Route(message_type, declared, wanted, lock_key)


def _lock_order(item: "_Ready") -> tuple[int, str]:
    """Sort key of a batch's handlers: those that take no lock first, then by the key they
    lock (sorted() is stable: otherwise stream order)."""
    lock_key = item.route.lock_key
    return (0, "") if lock_key is None else (1, str(lock_key(item.message)))


class Entry(NamedTuple):
    """A stream entry as read, with how many times the group has had it delivered."""

    key: str
    entry_id: str
    fields: dict[str, str]
    deliveries: int


@dataclass(kw_only=True, eq=False)
class _Tracked:
    """A pending entry being settled, with what this process has tried on it."""

    key: str
    entry_id: str
    deliveries: int
    failures: int = 0
    """This process's failed handler attempts (they count toward ``bus.max_attempts``)."""
    retries: int = 0
    """Retry-later outcomes so far (counted or held), for the backoff."""
    settled: bool = False
    """Acknowledged or dead-lettered."""


@dataclass(kw_only=True, eq=False)
class _Ready(_Tracked):
    """An entry decoded and routed, ready for its handler."""

    envelope: Envelope
    route: _Route
    message: Message
    duplicate: bool = False


class Verdict(StrEnum):
    """What became of entries; :meth:`Consumer.settle` maps each to what the bus does."""

    HANDLED = "handled"
    """The handlers committed: XACK."""
    DUPLICATE = "duplicate"
    """The inbox had every one of them already: XACK."""
    UNWANTED = "unwanted"
    """No handler of this group wants it (or the entry is gone from the stream): XACK."""
    RETRY_LATER = "retry-later"
    """Try again after a backoff. ``counted``: a handler's own failure, which after
    ``bus.max_attempts`` becomes poison; not counted: held (it may be handled later), or
    a transaction Postgres rolled back to settle a race (a deadlock)."""
    POISON = "poison"
    """It can never be handled: the dead-letter stream."""
    DEPENDENCY_DOWN = "dependency-down"
    """Postgres or Redis unreachable: pause until both answer, try again, count nothing."""
    STRANDED = "stranded"
    """An unexpected error outside the handler: logged; the entries stay pending, to be
    re-read at restart or reclaimed."""


@dataclass(frozen=True, eq=False)
class Outcome:
    """A verdict with what settling it needs."""

    verdict: Verdict
    reason: str = ""
    """Why (the dead letter's error, the handler's failure, the log line)."""
    counted: bool = True
    """retry-later: does it count toward ``bus.max_attempts``?"""
    culprit: _Ready | None = None
    """retry-later of a batch: the entry whose handler failed."""
    held: RetryLater | None = None
    """retry-later: a schema version newer than this consumer reads (common.bus.held)."""
    message_type: str = ""
    attempts: int = 0
    envelope: str = ""
    """poison: what the dead letter records."""
    error: BaseException | None = None
    """dependency-down, stranded: the error seen."""
    duration_ms: float = 0.0
    published: "Sequence[tuple[int, Outgoing]]" = ()
    """handled: the outbox rows the handlers committed, sent with the XACK."""
    redis_after_commit: Sequence[RedisAfterCommit] = ()
    """handled: the Redis commands the handlers committed with, sent with the XACK."""


def _by_stream(targets: Sequence[_Tracked]) -> dict[str, list[str]]:
    """The targets' entry ids, by stream: what one XACK per stream acknowledges."""
    by_stream: dict[str, list[str]] = {}
    for target in targets:
        by_stream.setdefault(target.key, []).append(target.entry_id)
    return by_stream


def _merged(handled: Sequence[tuple["_Ready", Outcome]]) -> Outcome:
    """One handled outcome for entries handled one by one: what they committed, sent with
    their one XACK."""
    outcomes = [outcome for _, outcome in handled]
    return Outcome(
        Verdict.HANDLED,
        duration_ms=sum(outcome.duration_ms for outcome in outcomes),
        published=tuple(row for outcome in outcomes for row in outcome.published),
        redis_after_commit=tuple(
            command for outcome in outcomes for command in outcome.redis_after_commit
        ),
    )


def _poison(message_type: str, attempts: int, reason: str, envelope: str) -> Outcome:
    return Outcome(
        Verdict.POISON,
        reason=reason,
        message_type=message_type,
        attempts=attempts,
        envelope=envelope,
    )


class Consumer:
    """One consumer group's reader for a set of message types, with their handlers."""

    def __init__(
        self,
        database: Database,
        redis: Redis,
        *,
        group: str,
        handlers: Handlers,
        inbox_table: Table,
        settings: ServiceSettings,
        consumer_name: str | None = None,
        unhurried: Collection[type[Message]] = (),
    ) -> None:
        if not handlers:
            raise ValueError("a consumer needs at least one handler")
        if settings.bus.block_ms >= settings.redis.timeout_seconds * 1000:
            raise ValueError(
                "bus.block_ms (BUS_BLOCK_MS) must be below redis.timeout_seconds "
                "(REDIS_TIMEOUT_SECONDS), or every idle read "
                "would end in a socket timeout"
            )
        self.database = database
        self.redis = redis
        self.group = group
        self.consumer_name = consumer_name or settings.consumer_name
        self.inbox_table = inbox_table
        self._inbox = InboxStatements(inbox_table)
        self.prefix = settings.bus.stream_prefix
        self.block_ms = settings.bus.block_ms
        self.batch_size = settings.bus.batch_size
        self.concurrency = settings.bus.concurrency
        self._batch_slots = asyncio.Semaphore(settings.bus.batches_in_flight)
        self.max_attempts = settings.bus.max_attempts
        self.reclaim_idle_ms = settings.bus.reclaim_idle_ms
        self.delete_idle_ms = settings.bus.consumer_delete_idle_ms
        self.shutdown_timeout_seconds = settings.bus.shutdown_timeout_seconds
        self.retry_base_seconds = settings.bus.retry_base_seconds
        self.retry_max_seconds = settings.bus.retry_max_seconds
        self.pause_max_seconds = settings.bus.pause_max_seconds
        self._routes = {cls.TYPE: _route(cls, handler) for cls, handler in handlers.items()}
        self.streams = tuple(sorted({stream_key(self.prefix, cls.STREAM) for cls in handlers}))
        hurried = {stream_key(self.prefix, cls.STREAM) for cls in handlers if cls not in unhurried}
        self.waited_on = tuple(key for key in self.streams if key in hurried) or self.streams
        """The streams a blocking read waits on; the others are read after it, without."""
        self._unhurried = tuple(key for key in self.streams if key not in self.waited_on)
        self._in_flight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._last_errors: dict[tuple[str, str], str] = {}
        self._claim_cursors = dict.fromkeys(self.streams, "0-0")
        self._unwanted: dict[str, list[str]] = {}
        """Entries of types this group ignores, acknowledged in the next read's round trip."""
        self._delete_script = Script(redis, _DELETE_IDLE_CONSUMER)
        self._stopping = asyncio.Event()
        self._dependencies_up = asyncio.Event()
        self._dependencies_up.set()
        self._probe: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._housekeeping = Periodic(
            f"bus-housekeeping:{group}",
            settings.bus.reclaim_interval_seconds,
            self.housekeep,
            run_at_start=False,
            # Nothing pending in the group: an entry delivered from now on becomes claimable
            # only bus.reclaim_idle_ms later, so waiting that long delays no reclaim.
            idle_interval_seconds=settings.bus.reclaim_idle_ms / 1000,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the group on every stream, then read (own pending first) and housekeep."""
        self._stopping.clear()
        await self._ensure_groups()
        self._reader = asyncio.create_task(self._read_loop(), name=f"bus-reader:{self.group}")
        self._housekeeping.start()

    async def stop(self) -> None:
        """Stop reading, let in-flight handlers finish, return.

        Handlers still running after ``bus.shutdown_timeout_seconds`` are cancelled: their
        transactions roll back and their entries stay pending, to be re-read or reclaimed.
        """
        self._stopping.set()
        await self._housekeeping.stop(self.shutdown_timeout_seconds)
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(reader), self.block_ms / 1000 + 1)
            except TimeoutError:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        probe, self._probe = self._probe, None
        if probe is not None:  # it returns as soon as it sees the stop
            await asyncio.gather(probe, return_exceptions=True)
        tasks = list(self._in_flight.values())
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=self.shutdown_timeout_seconds)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            if unfinished:
                logger.warning(
                    "handlers cancelled at shutdown; their messages stay pending",
                    extra={"group": self.group, "count": len(unfinished)},
                )
        await self._acknowledge_unwanted()

    @property
    def running(self) -> bool:
        """True while the reader and the housekeeping are alive (the worker's health)."""
        return self._reader is not None and not self._reader.done() and self._housekeeping.running

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- reading ----------------------------------------------------------------------------

    async def _ensure_groups(self) -> None:
        for key in self.streams:
            await ensure_group(self.redis, key, self.group)

    async def _read_loop(self) -> None:
        own_pending_done = False
        while not self._stopping.is_set():
            await self._dependencies_up.wait()
            try:
                if not own_pending_done:
                    await self._read_own_pending()
                    own_pending_done = True
                else:
                    await self._read_new()
            except Exception as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    logger.warning("consumer group or stream vanished; recreating it")
                    if await self._recreate_groups():
                        continue
                if is_unavailable(exc):
                    await self._wait_out_outage(exc)
                    continue
                logger.exception("bus read failed; retrying", extra={"group": self.group})
                await self._pause(self.block_ms / 1000)

    async def _recreate_groups(self) -> bool:
        try:
            await self._ensure_groups()
        except Exception:
            return False
        return True

    async def _read_own_pending(self) -> None:
        """Re-read what this consumer name had read but not acknowledged (a restart)."""
        cursors: dict[KeyT, StreamIdT] = dict.fromkeys(self.streams, "0")
        while cursors and not self._stopping.is_set():
            await self._wait_for_capacity()
            response = await self.redis.xreadgroup(
                self.group, self.consumer_name, cursors, count=self._read_count()
            )
            for key, entries in _stream_entries(response):
                if not entries:
                    cursors.pop(key, None)
                    continue
                cursors[key] = entries[-1][0]
                counts = await self._delivery_counts(key, [entry_id for entry_id, _ in entries])
                await self._dispatch(
                    [Entry(key, e_id, fields, counts.get(e_id, 1)) for e_id, fields in entries]
                )

    async def _read_new(self) -> None:
        await self._wait_for_capacity()
        await self._wait_for_a_batch_slot()
        if self._stopping.is_set():
            return
        acks, self._unwanted = self._unwanted, {}
        try:
            responses = await self._read_after(acks)
        except BaseException:
            self._ack_later(acks)  # XACK is idempotent: sent again with the next read
            raise
        await self._dispatch(
            [
                Entry(key, entry_id, fields, 1)
                for response in responses
                for key, entries in _stream_entries(response)
                for entry_id, fields in entries
            ]
        )

    async def _read_after(self, acks: dict[str, list[str]]) -> list[Any]:
        """XREADGROUP for new entries; the XACKs of unwanted entries go in its round trip,
        and so does the read of the unhurried streams (after the blocking one, so it finds
        what came meanwhile). Returns the XREADGROUP replies, the unhurried streams' first:
        their entries were there before the ones that woke the read, so they are handled
        first (a sign-up's welcome before its first order's outcome, say).

        A group reads every entry of its streams, also the types it ignores (the users group
        reads the notifications' confirmations of orders, say): acknowledging those with the
        next read, instead of in a round trip each, is one Redis round trip less per such
        entry. They stay pending that long (at most ``bus.block_ms`` while idle), far below
        ``bus.reclaim_idle_ms``; a crash meanwhile has them read again and acknowledged then.
        Each read takes up to the capacity left (:meth:`_read_count`), so a wake-up may read
        twice that when unhurried streams hold entries; most of those are ignored types.
        """
        waited_on: dict[KeyT, StreamIdT] = dict.fromkeys(self.waited_on, ">")
        count = self._read_count()
        if not acks and not self._unhurried:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer_name, waited_on, count=count, block=self.block_ms
            )
            return [reply]
        pipe = self.redis.pipeline(transaction=False)
        self._queue_xacks(pipe, acks)
        pipe.xreadgroup(self.group, self.consumer_name, waited_on, count=count, block=self.block_ms)
        if not self._unhurried:
            return [(await pipe.execute())[-1]]
        unhurried: dict[KeyT, StreamIdT] = dict.fromkeys(self._unhurried, ">")
        pipe.xreadgroup(self.group, self.consumer_name, unhurried, count=count)
        *_, woken, unhurried_reply = await pipe.execute()
        return [unhurried_reply, woken]

    def _ack_later(self, acks: dict[str, list[str]]) -> None:
        for key, entry_ids in acks.items():
            self._unwanted.setdefault(key, []).extend(entry_ids)

    def _queue_xacks(self, pipe: Pipeline, acks: dict[str, list[str]]) -> None:
        """One XACK per stream, queued on ``pipe``."""
        for key, entry_ids in acks.items():
            pipe.xack(key, self.group, *entry_ids)

    async def _acknowledge_unwanted(self) -> None:
        """At stop: the unwanted entries not acknowledged yet (else, read again after a
        restart, they are acknowledged then)."""
        acks, self._unwanted = self._unwanted, {}
        if not acks:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            self._queue_xacks(pipe, acks)
            await pipe.execute()
        except Exception as exc:
            logger.warning(
                "unwanted entries left pending at stop",
                extra={"group": self.group, "error": str(exc)},
            )

    def _read_count(self) -> int:
        return max(1, min(self.batch_size, self.concurrency - len(self._in_flight)))

    async def _wait_for_capacity(self) -> None:
        """Read no more than can be handled soon: a read entry is pending for us alone."""
        while len(self._in_flight) >= self.concurrency and not self._stopping.is_set():
            await asyncio.wait(set(self._in_flight.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _delivery_counts(self, key: str, entry_ids: list[str]) -> dict[str, int]:
        """How many times each entry has been delivered to this group (XPENDING)."""
        if not entry_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xpending_range(key, self.group, min=entry_id, max=entry_id, count=1)
        counts: dict[str, int] = {}
        for rows in await pipe.execute():
            for row in rows:
                counts[text(row["message_id"])] = int(row["times_delivered"])
        return counts

    async def _dispatch(self, entries: list[Entry]) -> None:
        """Handle entries read together as one batch, in one task (one unit of work).

        At most ``bus.batches_in_flight`` batches run at once (each holds a pooled
        connection): while they are all busy, entries wait in the stream, and the next read
        takes up to ``bus.batch_size`` of them at once. So batches grow with the load.
        """
        batch = [entry for entry in entries if (entry.key, entry.entry_id) not in self._in_flight]
        if not batch:
            return
        await self._batch_slots.acquire()
        task = asyncio.create_task(self._process(batch))
        idents = [(entry.key, entry.entry_id) for entry in batch]
        for ident in idents:
            self._in_flight[ident] = task

        def finished(_: "asyncio.Task[None]") -> None:
            self._batch_slots.release()
            for ident in idents:
                self._in_flight.pop(ident, None)

        task.add_done_callback(finished)

    async def _wait_for_a_batch_slot(self) -> None:
        """Read nothing while every batch slot is busy: what waits in the stream is read
        later, as a bigger batch (and stays claimable by other consumers meanwhile)."""
        async with self._batch_slots:
            pass

    # -- handling ---------------------------------------------------------------------------

    async def _process(self, batch: list[Entry]) -> None:
        """Handle a batch: the entries' handlers in one unit of work, one pipelined XACK.

        Preparing (:meth:`_prepare`) and attempting (:meth:`_attempt`) only say what became
        of the entries, as an :class:`Outcome`; :meth:`settle` alone acts on it. So:

        * entries that need no handler (a type this group ignores, undecodable, delivered
          too often) are settled first, each on its own;
        * the rest run together: one inbox INSERT, every handler, one COMMIT, one XACK per
          stream. If a handler raises, nothing of the batch is committed, and each entry
          is then handled alone (:meth:`_handle_alone`), so one bad message never fails its
          neighbours;
        * entries whose handler is :class:`OneStatement` need no transaction to share:
          each runs in its own single-statement unit of work, in stream order, and those
          handled are acknowledged together, one XACK per stream (:meth:`_each_once`);
        * Postgres or Redis unreachable is nobody's failure: consumption pauses
          (:meth:`_wait_out_outage`) and the same entries are tried again once both answer;
        * stopping: the entries stay pending; this consumer re-reads them when it restarts
          (or another one reclaims them).
        """
        ready = await self._prepare_all(batch)
        together = [item for item in ready if not item.route.one_statement]
        left = await self._each_once([item for item in ready if item.route.one_statement])
        if len(together) > 1:
            last = await self._until_settled(together)
            alone = last is not None and last.verdict is Verdict.RETRY_LATER
            together = [item for item in together if not item.settled] if alone else []
        await asyncio.gather(*(self._handle_alone(item) for item in left + together))

    async def _each_once(self, items: list[_Ready]) -> list[_Ready]:
        """Attempt :class:`OneStatement` handlers once each, in stream order, and settle
        those handled with one XACK for all; the others' outcomes are settled at once. The
        entries to try again (each alone, :meth:`_handle_alone`)."""
        handled: list[tuple[_Ready, Outcome]] = []
        again: list[_Ready] = []
        for item in items:
            if self._stopping.is_set():
                break  # the rest stay pending, as a batch's do
            await self._dependencies_up.wait()
            outcome = await self._attempt([item])
            if outcome.verdict in (Verdict.HANDLED, Verdict.DUPLICATE):
                handled.append((item, outcome))
            elif await self.settle([item], outcome):
                again.append(item)
        if handled and await self.settle([item for item, _ in handled], _merged(handled)):
            again.extend(item for item, _ in handled)  # the XACK met an outage: the inbox
            # rows are committed, so trying again finds each a duplicate and acknowledges it
        return again

    async def _prepare_all(self, batch: list[Entry]) -> list[_Ready]:
        """Settle what needs no handler; the rest, ready to handle (each message once)."""
        ready: list[_Ready] = []
        seen: set[uuid.UUID] = set()
        for entry in batch:
            tracked = _Tracked(key=entry.key, entry_id=entry.entry_id, deliveries=entry.deliveries)
            while not self._stopping.is_set():
                await self._dependencies_up.wait()
                prepared = await self._prepare(entry)
                if isinstance(prepared, _Ready):
                    # The same message twice in one batch (a duplicate XADD): its second entry
                    # is acknowledged with the first, the inbox would skip it anyway.
                    prepared.duplicate = prepared.envelope.id in seen
                    seen.add(prepared.envelope.id)
                    ready.append(prepared)
                    break
                if not await self.settle([tracked], prepared):
                    break
        return ready

    async def _handle_alone(self, item: _Ready) -> None:
        """Handle one entry until it is settled for good or we stop (a failed handler is
        retried here, in-process, with exponential backoff and jitter)."""
        if item.retries:  # its batch's attempt failed because of it
            await self._back_off(item)
        await self._until_settled([item])

    async def _until_settled(self, items: list[_Ready]) -> "Outcome | None":
        """Attempt ``items`` together and settle, again while :meth:`settle` says so.

        A batch stops at its first retry-later (the caller then handles each entry alone).
        None when stopping interrupted it.
        """
        while not self._stopping.is_set():
            await self._dependencies_up.wait()
            if self._stopping.is_set():
                return None
            outcome = await self._attempt(items)
            again = await self.settle(items, outcome)
            if not again or (len(items) > 1 and outcome.verdict is Verdict.RETRY_LATER):
                return outcome
            if outcome.verdict is Verdict.RETRY_LATER:
                await self._back_off(items[0])
        return None

    async def _prepare(self, entry: Entry) -> "_Ready | Outcome":
        """Decode and route an entry: ready for its handler, or why it needs none."""
        key, entry_id, fields, deliveries = entry
        try:
            if not fields:
                # Only an entry deleted from the stream while pending reads back without fields.
                return Outcome(Verdict.UNWANTED, reason="pending entry no longer in the stream")
            try:
                envelope = Envelope.from_fields(fields)
            except ValueError as exc:
                raw = fields.get(ENVELOPE_FIELD) or json.dumps(
                    {text(k): text(v) for k, v in fields.items()}
                )
                return _poison("", deliveries, f"undecodable envelope: {exc}", text(raw))
            route = self._routes.get(envelope.type)
            if route is None:
                return Outcome(Verdict.UNWANTED)  # a type this group ignores
            if (later := newer_than_known(envelope, route.message_type)) is not None:
                return Outcome(Verdict.RETRY_LATER, reason=later.reason, counted=False, held=later)
            if deliveries > self.max_attempts:
                # Delivered this often without an outcome: its handler may crash the process.
                error = self._last_errors.get(
                    (key, entry_id), "no error recorded: the handler never returned"
                )
                return _poison(
                    envelope.type,
                    deliveries - 1,
                    f"gave up after {deliveries - 1} deliveries; last error: {error}",
                    envelope.to_json(),
                )
            try:
                message = envelope.parse(route.message_type)
            except ValueError as exc:
                return _poison(
                    envelope.type, deliveries, f"invalid payload: {exc}", envelope.to_json()
                )
            if route.wanted is not None and not route.wanted(message):
                return Outcome(Verdict.UNWANTED)  # not for this group's handler
        except Exception as exc:
            return self._failure(exc)
        return _Ready(
            key=key,
            entry_id=entry_id,
            deliveries=deliveries,
            envelope=envelope,
            route=route,
            message=message,
        )

    async def _attempt(self, items: list[_Ready]) -> "Outcome":
        """One unit of work for ``items``: the inbox rows and the handlers, one COMMIT (or,
        for a :class:`OneStatement` handler, its own statement)."""
        started = time.perf_counter()
        try:
            if items[0].route.one_statement:
                (alone,) = items  # such entries are attempted one by one (_each_once)
                uow = await self._in_one_statement(alone)
            else:
                uow = await self._in_a_transaction(items)
        except _HandlerFailed as failed:
            # The failed handler's attempt counts toward its entry's limit; the others'
            # handlers ran in a transaction that rolled back: not their failure.
            return Outcome(
                Verdict.RETRY_LATER,
                reason=failed.error,
                culprit=failed.item,
                counted=failed.counted,
            )
        except Exception as exc:
            return self._failure(exc)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        verdict = Verdict.DUPLICATE if all(item.duplicate for item in items) else Verdict.HANDLED
        return Outcome(
            verdict,
            duration_ms=elapsed_ms,
            published=tuple(uow.committed),
            redis_after_commit=tuple(uow.redis_after_commit),
        )

    async def _in_a_transaction(self, items: list[_Ready]) -> UnitOfWork:
        """The inbox rows of ``items`` and the handlers of those new to the group, in one
        transaction (committed when this returns)."""
        async with self.database.transaction(send=False) as uow:
            first_time = await self._inbox.record(
                uow.connection,
                [(item.envelope.id, item.envelope.occurred_at) for item in items],
                self.group,
            )
            for item in sorted(items, key=_lock_order):
                item.duplicate = item.duplicate or item.envelope.id not in first_time
                if not item.duplicate:
                    await self._run_handler(uow, item)
        return uow

    async def _in_one_statement(self, item: _Ready) -> UnitOfWork:
        """A :class:`OneStatement` handler in a single-statement unit of work, told which
        inbox row its statement writes (``uow.inbox_claim``)."""
        async with self.database.single_statement(send=False) as uow:
            if not item.duplicate:  # its twin earlier in the batch is handled
                envelope = item.envelope
                uow.inbox_claim = InboxClaim(envelope.id, self.group, envelope.occurred_at)
                await self._run_handler(uow, item)
        return uow

    @staticmethod
    def _failure(exc: Exception) -> "Outcome":
        """An error that is not a handler's own: an outage, or something unexpected."""
        if is_unavailable(exc):
            return Outcome(Verdict.DEPENDENCY_DOWN, error=exc)
        return Outcome(Verdict.STRANDED, error=exc)

    async def _run_handler(self, uow: UnitOfWork, item: _Ready) -> None:
        """One handler, with the message's ids in the logging context and its trace span."""
        envelope = item.envelope
        correlation_token = correlation_id_var.set(envelope.correlation_id)
        event_token = event_id_var.set(str(envelope.id))
        try:
            with message_span(
                f"handle {envelope.type}",
                envelope.trace,
                **{"messaging.consumer.group.name": self.group},
            ):
                await item.route.handler(uow, envelope, item.message)
        except Exception as exc:
            if is_unavailable(exc) and not await self._dependencies_answer():
                raise  # not the handler's fault: the caller pauses, nothing is counted
            if is_transaction_conflict(exc):
                # Two batches locked the same rows in opposite orders (a deadlock) or raced
                # under SERIALIZABLE: Postgres rolled this one back. Run again, it succeeds.
                metrics.CONFLICTS.labels(self.group, envelope.type).inc()
                logger.warning(
                    "transaction conflict, trying again",
                    extra={"group": self.group, "type": envelope.type, "error": str(exc)},
                )
                raise _HandlerFailed(item, f"{type(exc).__name__}: {exc}", counted=False) from exc
            metrics.FAILED.labels(self.group, envelope.type).inc()
            logger.exception(
                "handler failed",
                extra={"group": self.group, "type": envelope.type, "attempt": item.deliveries},
            )
            raise _HandlerFailed(item, f"{type(exc).__name__}: {exc}") from exc
        finally:
            correlation_id_var.reset(correlation_token)
            event_id_var.reset(event_token)

    # -- settling: the one place that acknowledges, retries, pauses or dead-letters ---------

    async def settle(self, targets: Sequence["_Tracked"], outcome: "Outcome") -> bool:
        """Do what ``outcome`` means for ``targets``; True when they are to be tried again.

        handled, duplicate -> XACK (one per stream); unwanted -> XACK with the next read;
        poison -> the dead-letter stream (XADD + XACK, atomically); retry-later -> back off
        and try again, or, once a handler has failed ``bus.max_attempts`` times, poison;
        dependency-down -> wait out the outage, then try again (nothing counted); stranded
        -> log, the entries stay pending for a restart or a reclaim.
        """
        try:
            match outcome.verdict:
                case Verdict.HANDLED | Verdict.DUPLICATE:
                    await self._acknowledge(targets, outcome.published, outcome.redis_after_commit)
                    self._record_settled(targets, outcome)
                    return False
                case Verdict.UNWANTED:
                    self._ack_later(_by_stream(targets))
                    for target in targets:
                        target.settled = True
                    self._record_settled(targets, outcome)
                    return False
                case Verdict.POISON:
                    for target in targets:
                        await self._dead_letter(target, outcome)
                    return False
                case Verdict.RETRY_LATER:
                    return await self._retry_later(targets, outcome)
                case Verdict.DEPENDENCY_DOWN:
                    await self._wait_out_outage(outcome.error)
                    return True
                case Verdict.STRANDED:
                    self._log_unprocessed(targets, outcome.error)
                    return False
        except Exception as exc:
            if is_unavailable(exc):  # the XACK or the dead letter itself met the outage
                await self._wait_out_outage(exc)
                return True
            self._log_unprocessed(targets, exc)
        return False

    async def _retry_later(self, targets: Sequence["_Tracked"], outcome: "Outcome") -> bool:
        if outcome.held is not None:  # left pending, its count reset: a later reclaim retries
            target = targets[0]
            await hold(
                self.redis,
                prefix=self.prefix,
                group=self.group,
                consumer=self.consumer_name,
                stream=target.key,
                entry_id=target.entry_id,
                outcome=outcome.held,
            )
            return False
        culprit = outcome.culprit or targets[0]
        culprit.retries += 1
        if outcome.counted:
            culprit.failures += 1
            self._remember_error((culprit.key, culprit.entry_id), outcome.reason)
            attempts = self._attempts(culprit)
            if attempts >= self.max_attempts and isinstance(culprit, _Ready):
                await self.settle([culprit], self._gave_up(culprit, attempts))
                return len(targets) > 1  # the rest of a batch is handled alone
        return True  # after a back-off: the caller's (_until_settled, _handle_alone)

    def _gave_up(self, item: "_Ready", attempts: int) -> "Outcome":
        error = self._last_errors.get((item.key, item.entry_id), "no error recorded")
        return _poison(
            item.envelope.type,
            attempts,
            f"gave up after {attempts} attempts; last error: {error}",
            item.envelope.to_json(),
        )

    @staticmethod
    def _attempts(item: "_Tracked") -> int:
        """Attempts used: earlier deliveries (other processes' tries) plus ours."""
        return item.deliveries - 1 + item.failures

    async def _back_off(self, item: "_Tracked") -> None:
        """Wait before the next attempt, with jitter, longer after each retry."""
        await self._pause(equal_jitter(self._retry_delay(item.retries)))

    def _retry_delay(self, retries: int) -> float:
        return exponential(
            max(1, retries) - 1, base=self.retry_base_seconds, cap=self.retry_max_seconds
        )

    async def _acknowledge(
        self,
        targets: Sequence["_Tracked"],
        published: Sequence[tuple[int, "Outgoing"]] = (),
        after_commit: Sequence[RedisAfterCommit] = (),
    ) -> None:
        """The one XACK: one command per stream, in one round trip with the XADDs of what
        the handlers published (XADDs first: an entry is never acknowledged before what its
        handler published is on its way; rows not sent stay in the outbox for the sweeper)
        and the Redis commands they committed with (a cache invalidation, a live PUBLISH:
        best effort, their errors logged, never failing the XACK).
        """
        pipe = self.redis.pipeline(transaction=False)
        outbox = self.database.outbox
        staged = outbox is not None and outbox.stage(pipe, published)
        self._queue_xacks(pipe, _by_stream(targets))
        acknowledging = len(pipe)
        ours = [command for command in after_commit if command.redis is self.redis]
        results = await execute_reporting(pipe, queue_after_commit(pipe, ours))
        for result in results[:acknowledging]:
            if isinstance(result, Exception):
                raise result
        if staged and outbox is not None:
            outbox.staged_sent(published)
        for target in targets:
            target.settled = True
        if theirs := [command for command in after_commit if command.redis is not self.redis]:
            try:  # another Redis than the bus's: its own round trip
                await send_after_commit(theirs)
            except Exception as exc:
                logger.warning("Redis commands after commit not sent", extra={"error": repr(exc)})

    def _record_settled(self, targets: Sequence["_Tracked"], outcome: "Outcome") -> None:
        """Metrics and the log line of acknowledged entries."""
        if outcome.reason:
            logger.warning(outcome.reason, extra={"group": self.group})
        now = time.time()
        for item in targets:
            self._last_errors.pop((item.key, item.entry_id), None)
            if not isinstance(item, _Ready):
                continue
            metrics.HANDLED.labels(self.group, item.envelope.type).inc()
            metrics.HANDLE_LATENCY.labels(self.group, item.envelope.type).observe(
                max(0.0, now - item.envelope.occurred_at.timestamp())
            )
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "duplicate message skipped" if item.duplicate else "message handled",
                    extra={
                        "group": self.group,
                        "type": item.envelope.type,
                        "attempt": item.deliveries,
                        "batch": len(targets),
                        "duration_ms": outcome.duration_ms,
                        "correlation_id": item.envelope.correlation_id,
                        "event_id": str(item.envelope.id),
                    },
                )

    def _log_unprocessed(self, targets: Sequence["_Tracked"], exc: BaseException | None) -> None:
        logger.error(
            "bus entries not processed; they stay pending",
            exc_info=exc,
            extra={
                "group": self.group,
                "entries": [f"{target.key}/{target.entry_id}" for target in targets],
            },
        )

    # -- pausing while Postgres or Redis is down -------------------------------------------

    async def _wait_out_outage(self, exc: BaseException | None) -> None:
        """The one outage wait: stop reading and handling until Postgres and Redis answer again.

        The first task to see the outage starts one probe (ping both, with exponential
        backoff and jitter); every task waits for it. So an outage of minutes costs a few
        pings, not one failed attempt per entry per cycle, and no entry is dead-lettered for
        it.
        """
        if self._dependencies_up.is_set():
            self._dependencies_up.clear()
            metrics.CONSUMER_PAUSED.labels(self.group).set(1)
            logger.warning(
                "Postgres or Redis unavailable; consumption paused",
                extra={"group": self.group, "error": repr(exc)},
            )
            self._probe = asyncio.create_task(
                self._probe_until_up(), name=f"bus-probe:{self.group}"
            )
        await self._dependencies_up.wait()

    async def _dependencies_answer(self) -> bool:
        """Do Postgres and Redis answer right now? A handler's error that looks like an
        outage (a timeout, a reset) while both answer is the handler's own failure."""
        try:
            await self.database.ping()
            await self.redis.ping()
        except Exception:
            return False
        return True

    async def _probe_until_up(self) -> None:
        failed_probes = 0
        paused_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                delay = exponential(
                    failed_probes, base=self.retry_base_seconds, cap=self.pause_max_seconds
                )
                await self._pause(equal_jitter(delay))
                if not await self._dependencies_answer():
                    failed_probes += 1
                    continue
                logger.info(
                    "Postgres and Redis answer; consumption resumed",
                    extra={"group": self.group, "paused_s": round(time.monotonic() - paused_at, 2)},
                )
                return
        finally:
            metrics.CONSUMER_PAUSED.labels(self.group).set(0)
            self._dependencies_up.set()  # also on stop, so that no task waits for ever

    def _remember_error(self, ident: tuple[str, str], error: str) -> None:
        """Kept for the dead letter, in case the last attempt is not a clean failure."""
        if len(self._last_errors) >= MAX_REMEMBERED_ERRORS:
            self._last_errors.pop(next(iter(self._last_errors)))
        self._last_errors[ident] = error

    async def _dead_letter(self, target: "_Tracked", outcome: "Outcome") -> None:
        """The one dead-lettering: XADD to the dead-letter stream and XACK, atomically."""
        await dead_letter(
            self.redis,
            prefix=self.prefix,
            stream=target.key,
            group=self.group,
            entry_id=target.entry_id,
            consumer=self.consumer_name,
            message_type=outcome.message_type,
            attempts=outcome.attempts,
            error=outcome.reason,
            envelope=outcome.envelope,
        )
        target.settled = True
        self._last_errors.pop((target.key, target.entry_id), None)
        metrics.DEAD_LETTERED.labels(self.group, outcome.message_type or "unknown").inc()
        logger.error(
            "message dead-lettered",
            extra={
                "stream": target.key,
                "group": self.group,
                "entry_id": target.entry_id,
                "type": outcome.message_type,
                "attempts": outcome.attempts,
                "error": outcome.reason,
            },
        )

    # -- housekeeping -----------------------------------------------------------------------

    async def housekeep(self) -> Idle | None:
        """One pass: reclaim stale pending entries, drop idle empty consumers, update gauges.

        Skipped while consumption is paused: a claim would only bump delivery counts of
        entries nobody can handle yet. :class:`Idle` when no consumer of the group has an
        entry pending on any stream: nothing can become claimable before
        ``bus.reclaim_idle_ms`` from now, so the next pass may wait that long (the idle
        cadence; a held or stranded entry is pending, so it keeps the busy one).
        """
        pending = 0
        for key in self.streams:
            if self._stopping.is_set() or not self._dependencies_up.is_set():
                return None
            try:
                await self.reclaim(key)
                await self.delete_idle_consumers(key)
                pending += await self.update_gauges(key)
            except Exception:
                logger.exception("bus housekeeping failed", extra={"stream": key})
                return None
        return Idle() if pending == 0 else None

    async def reclaim(self, key: str) -> int:
        """Claim entries pending longer than ``bus.reclaim_idle_ms`` (any consumer's).

        Keeps claiming while batches come back full, so a backlog left by a dead consumer
        is taken in one pass, not one batch every ``bus.reclaim_interval_seconds``.
        """
        claimed = 0
        while not self._stopping.is_set():
            await self._wait_for_capacity()
            # An entry of ours still being handled (a retry waiting out its backoff) is
            # claimed too when it has been idle long enough; the claim only bumps its count.
            # It must not be handled a second time, even if its handler settles it while
            # the claim's reply is on its way.
            busy_before_claim = set(self._in_flight)
            response = await self.redis.xautoclaim(
                key,
                self.group,
                self.consumer_name,
                self.reclaim_idle_ms,
                start_id=self._claim_cursors.get(key, "0-0"),
                count=self.batch_size,
            )
            cursor = text(response[0])
            self._claim_cursors[key] = cursor
            entries = [
                (text(entry_id), _fields(fields))
                for entry_id, fields in response[1]
                if entry_id is not None and (key, text(entry_id)) not in busy_before_claim
            ]
            counts = await self._delivery_counts(key, [entry_id for entry_id, _ in entries])
            # No longer pending (acknowledged meanwhile, by whoever had it): nothing to do.
            await self._dispatch(
                [
                    Entry(key, e_id, fields, counts[e_id])
                    for e_id, fields in entries
                    if e_id in counts
                ]
            )
            claimed += len(entries)
            if len(response[1]) < self.batch_size or cursor == "0-0":
                return claimed
        return claimed

    async def delete_idle_consumers(self, key: str) -> list[str]:
        """Delete other consumers idle for ``bus.consumer_delete_idle_ms`` with nothing pending."""
        if self.delete_idle_ms <= 0:
            return []
        deleted: list[str] = []
        for consumer in await self.redis.xinfo_consumers(key, self.group):
            name = text(consumer["name"])
            if name == self.consumer_name:
                continue
            if int(consumer["pending"]) or int(consumer["idle"]) < self.delete_idle_ms:
                continue
            if await self._delete_script(keys=[key], args=[self.group, name]):
                deleted.append(name)
                logger.info("idle consumer deleted", extra={"stream": key, "consumer": name})
        return deleted

    async def update_gauges(self, key: str) -> int:
        """Set the group's lag and pending gauges of ``key``; its pending count."""
        pending = 0
        for group in await self.redis.xinfo_groups(key):
            if text(group["name"]) != self.group:
                continue
            if group.get("lag") is not None:
                metrics.CONSUMER_LAG.labels(key, self.group).set(int(group["lag"]))
            pending = int(group["pending"])
            metrics.CONSUMER_PENDING.labels(key, self.group).set(pending)
        return pending


def _fields(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    return {text(key): text(value) for key, value in raw.items()}


def _stream_entries(response: Any) -> list[tuple[str, list[RawEntry]]]:
    """XREADGROUP's reply as ``[(stream, [(id, fields)])]``, for RESP2 and RESP3 shapes."""
    if not response:
        return []
    if isinstance(response, dict):
        pairs = [
            (key, value[0] if value and isinstance(value[0], list) else value)
            for key, value in response.items()
        ]
    else:
        pairs = [(item[0], item[1]) for item in response]
    return [
        (
            text(key),
            [(text(entry_id), _fields(fields)) for entry_id, fields in entries or [] if entry_id],
        )
        for key, entries in pairs
    ]
