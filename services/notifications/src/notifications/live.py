"""Live notifications: PUBLISH after commit, one pub/sub connection per API, server-sent events.

Publishing (worker): for each new notification ``service.record_and_confirm`` has
:class:`LivePublisher` queue a PUBLISH on the unit of work (``common.redis.queue_publish``, in
the worker's XACK round trip), sent once its statement has committed (never when it failed),
on
``notifications:live:<redis db>:<user id>``. Pub/sub ignores database numbers, hence the db in
the name: stacks sharing a Redis server (dev, e2e, tests) stay apart.

Fan-out (API): :class:`LiveHub` holds the process's one pub/sub connection, PSUBSCRIBEd to
every user's channel, and hands each message to the :class:`Subscription` of every stream of
that user in this process. Handing over never blocks: a subscription is a bounded buffer,
and one that overflows is flagged for a resync from Postgres instead of blocking the hub.

Streams (:class:`NotificationStream`): what a client receives always comes from Postgres,
read in ``(created_at, id)`` order after the last event it was sent; a live message only says
"there is something newer than X". Because a user's notifications commit in that order (see
``repository.lock_user``), this gives no gaps and no duplicates: the stream subscribes
first, then replays from ``Last-Event-ID``, then skips live messages at or below what it has
sent. Out-of-order PUBLISHes, a hub reconnect (every stream resyncs) or a slow client
(overflow -> resync) cannot lose or repeat an event. Event ``id``: the opaque cursor of
``common.pagination`` over ``(created_at, id)``.

On a Redis Cluster the same runs on sharded pub/sub: a pattern cannot be SSUBSCRIBEd, so a
user's channel is one of ``LIVE_PARTITIONS`` fixed channels, ``notifications:live:{p<n>}``
(``n`` from the user id, the hash tag spreading them over the shards); every hub SSUBSCRIBEs
all of them (redis-py's cluster pub/sub keeps one connection per shard) and routes by the
payload's user id, as it does now. Each (re)subscription re-reads the slot map first, so a
hub follows a fail-over by itself.

Logout: the hub also SUBSCRIBEs to ``common.auth.revocation_channel``; a token's hash there
(published by the users service's logout) ends that token's streams in this process at once.
A revocation missed while the hub reconnects is caught by the session check every stream
makes at each heartbeat and after each reconnect.

Cap (:class:`StreamSlots`): each open stream holds a slot in a Redis sorted set per user, so
the cap holds across replicas. A slot is a lease renewed at every heartbeat: the slots of a
process killed without closing its streams expire instead of blocking the user for ever.
"""

import asyncio
import contextlib
import json
import logging
import math
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any, cast

import anyio
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterPubSub

from common.auth import AuthenticatedUser, revocation_channel, session_valid
from common.db import Database, UnitOfWork
from common.pagination import encode_cursor
from common.redis import AfterCommit as RedisAfterCommit
from common.redis import is_cluster, pubsub_namespace, queue_publish, refresh_cluster_map
from notifications import repository
from notifications.models import Notification
from notifications.repository import CursorKey
from notifications.schemas import NotificationOut
from notifications.settings import Settings

logger = logging.getLogger(__name__)

STREAM_CLIENTS = Gauge("notifications_stream_clients", "Open notification streams")
STREAM_EVENTS = Counter("notifications_stream_events_total", "Notifications sent on streams")
STREAM_RESYNCS = Counter(
    "notifications_stream_resyncs_total",
    "Streams re-read from Postgres without a live event, by reason",
    ["reason"],
)
STREAMS_REFUSED = Counter(
    "notifications_stream_refused_total", "Streams refused: the user's open-stream cap reached"
)
STREAMS_REVOKED = Counter(
    "notifications_stream_revoked_total", "Streams ended because their token was logged out"
)
LIVE_PUBLISHED = Counter(
    "notifications_live_published_total", "Notifications PUBLISHed after commit, by result",
    ["result"],
)  # fmt: skip

ORIGIN: CursorKey = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))
REPLAY_BATCH = 100
LIVE_PARTITIONS = 16  # sharded channels on a cluster; a few per shard spreads the fan-out


def channel_prefix(redis: Redis) -> str:
    return f"notifications:live:{pubsub_namespace(redis)}:"


def live_channel(redis: Redis, user_id: uuid.UUID) -> str:
    """The channel a user's new notifications are published on."""
    if is_cluster(redis):
        return partition_channels()[user_id.int % LIVE_PARTITIONS]
    return channel_prefix(redis) + str(user_id)


def partition_channels() -> list[str]:
    return [f"notifications:live:{{p{n}}}" for n in range(LIVE_PARTITIONS)]


def live_payload(notification: Notification) -> dict[str, Any]:
    return {
        **NotificationOut.model_validate(notification).model_dump(mode="json"),
        "user_id": str(notification.user_id),
    }


class LivePublisher:
    """PUBLISHes new notifications to their users' live streams, after their commit."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def publish_after_commit(self, uow: UnitOfWork, notification: Notification) -> None:
        """Have ``notification`` PUBLISHed once ``uow`` commits (never if it rolls back), with
        the unit of work's other Redis commands (in the worker, with its XACK). Best effort:
        a live stream missing one catches up on its resync."""
        message = (
            live_channel(self.redis, notification.user_id),
            json.dumps(live_payload(notification)),
        )
        uow.after_commit_redis(
            RedisAfterCommit(
                self.redis,
                lambda pipe: queue_publish(pipe, self.redis, [message]),
                done=_count_published,
            )
        )


def _count_published(went_through: bool) -> None:
    if went_through:
        LIVE_PUBLISHED.labels("published").inc()
    else:
        LIVE_PUBLISHED.labels("failed").inc()
        logger.warning("live PUBLISH failed; streams catch up on their resync")


class Subscription:
    """One stream's inbox in the hub: a bounded buffer of "newer than" keys, never blocking."""

    def __init__(self, user_id: uuid.UUID, limit: int, token_hash: str = "") -> None:
        self.user_id = user_id
        self.token_hash = token_hash
        self.limit = limit
        self.closed = False
        self._keys: deque[CursorKey] = deque()
        self._resync: str | None = None
        self._wake = asyncio.Event()

    def offer(self, key: CursorKey) -> None:
        if len(self._keys) >= self.limit:
            self.request_resync("overflow")  # the client is slow: re-read, never block
        else:
            self._keys.append(key)
            self._wake.set()

    def request_resync(self, reason: str) -> None:
        self._resync = self._resync or reason
        self._keys.clear()
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()

    def take(self) -> tuple[list[CursorKey], str | None]:
        keys, reason = list(self._keys), self._resync
        self._keys.clear()
        self._resync = None
        self._wake.clear()
        return keys, reason


class LiveHub:
    """The API process's one pub/sub connection and its in-process fan-out."""

    def __init__(self, redis: Redis, *, queue_size: int, reconnect_seconds: float = 1.0) -> None:
        self.redis = redis
        self.queue_size = queue_size
        self.reconnect_seconds = reconnect_seconds
        self.prefix = channel_prefix(redis)
        self.revocations = revocation_channel(redis)
        self.sharded = is_cluster(redis)
        self._confirmations = 0
        self.closing = False
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}
        self._by_token: dict[str, set[Subscription]] = {}
        self._ready = asyncio.Event()
        self._subscribed_once = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.closing = False
        self._task = asyncio.create_task(self._run(), name="live-hub")

    def shutdown(self) -> None:
        """End every stream now (a SIGTERM: clients reconnect elsewhere and resume)."""
        self.closing = True
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.close()

    async def stop(self) -> None:
        self.shutdown()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self, within: float) -> bool:
        """True once the pattern subscription is confirmed (False after ``within`` s)."""
        if self._ready.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._ready.wait()
        return self._ready.is_set()

    def subscribe(self, user_id: uuid.UUID, token_hash: str = "") -> Subscription:
        subscription = Subscription(user_id, self.queue_size, token_hash)
        if self.closing:
            subscription.close()
        self._subscriptions.setdefault(user_id, set()).add(subscription)
        self._by_token.setdefault(token_hash, set()).add(subscription)
        STREAM_CLIENTS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.user_id)
        if subscriptions is None or subscription not in subscriptions:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._subscriptions[subscription.user_id]
        same_token = self._by_token.get(subscription.token_hash, set())
        same_token.discard(subscription)
        if not same_token:
            self._by_token.pop(subscription.token_hash, None)
        STREAM_CLIENTS.dec()

    def revoke(self, token_hash: str) -> None:
        """The token was logged out: end its streams in this process now."""
        for subscription in self._by_token.get(token_hash, ()):
            if not subscription.closed:
                STREAMS_REVOKED.inc()
            subscription.close()

    async def _run(self) -> None:
        while not self.closing:
            pubsub = self.redis.pubsub()
            try:
                if self.sharded:
                    await self._listen_sharded(cast(ClusterPubSub, pubsub))
                    continue
                await pubsub.subscribe(self.revocations)
                await pubsub.psubscribe(self.prefix + "*")
                while not self.closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("live pub/sub connection lost; reconnecting", exc_info=True)
                self._ready.clear()
                await asyncio.sleep(self.reconnect_seconds)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _listen_sharded(self, pubsub: ClusterPubSub) -> None:
        """SSUBSCRIBE the revocations and every partition (one connection per shard), then
        poll the shards in turn; ready once every channel is confirmed.

        The slot map is read first, every time: at start-up nothing else may have used the
        client yet, and after a fail-over the map still names the dead primary, which no
        pub/sub error corrects (``common.redis.refresh_cluster_map``)."""
        await refresh_cluster_map(self.redis)
        self._confirmations = 0
        await pubsub.ssubscribe(self.revocations, *partition_channels())
        while not self.closing:
            message = await pubsub.get_sharded_message(timeout=0.05)
            if message is None:
                continue
            if message["type"] == "ssubscribe":
                self._confirmations += 1
                if self._confirmations == LIVE_PARTITIONS + 1:
                    self._handle({**message, "type": "psubscribe"})
            elif message["type"] == "smessage":
                kind = "message" if message["channel"] == self.revocations else "pmessage"
                self._handle({**message, "type": kind})

    def _handle(self, message: dict[str, Any]) -> None:
        if message["type"] == "psubscribe":
            if self._subscribed_once:
                # (Re)subscribed after a disconnect: whatever was published meanwhile never
                # reached us, so every stream re-reads Postgres.
                for subscriptions in self._subscriptions.values():
                    for subscription in subscriptions:
                        subscription.request_resync("reconnect")
            self._subscribed_once = True
            self._ready.set()
            return
        if message["type"] == "message":
            if message["channel"] == self.revocations and message["data"]:
                self.revoke(str(message["data"]))
            return
        if message["type"] != "pmessage":
            return
        try:
            payload = json.loads(message["data"])
            user_id = uuid.UUID(payload["user_id"])
            key = (datetime.fromisoformat(payload["created_at"]), uuid.UUID(payload["id"]))
        except (ValueError, KeyError, TypeError):
            logger.warning(
                "undecodable live message ignored", extra={"channel": message["channel"]}
            )
            return
        for subscription in self._subscriptions.get(user_id, ()):
            subscription.offer(key)


def on_shutdown_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` (in the event loop) when SIGTERM/SIGINT arrives, then let the
    server's own handler run. Returns the function that undoes it.

    Uvicorn waits for open responses before running the lifespan's shutdown, and a stream
    never ends by itself, so the signal itself is the moment to end them. Only in the main
    thread, and only over a Python-level handler (uvicorn's); otherwise a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Callable[[int, FrameType | None], Any]] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        previous[signum](signum, frame)

    for signum in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(signum)
        if callable(current):
            previous[signum] = current
            signal.signal(signum, handler)

    def restore() -> None:
        for signum, original in previous.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, original)

    return restore


# KEYS[1]: the user's slots (member: stream id, score: lease end in Redis's clock).
# ARGV: cap, stream id, lease seconds. Returns 1 if the slot was taken, 0 if the cap is reached.
_ACQUIRE_SLOT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return 1
"""
# ARGV: stream id, lease seconds. Extends the lease (re-takes a slot lost to a Redis restart).
_RENEW_SLOT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return 1
"""


class StreamSlots:
    """At most ``cap`` open streams per user, across every replica (a sorted set in Redis).

    Scores are lease ends in Redis's own clock (``TIME`` in the scripts), so replicas with
    skewed clocks agree; a slot not renewed within ``lease_seconds`` is free again.
    """

    KEY_PREFIX = "notifications:streams:"

    def __init__(self, redis: Redis, *, cap: int, lease_seconds: float) -> None:
        self.redis = redis
        self.cap = cap
        self.lease_seconds = lease_seconds

    def key(self, user_id: uuid.UUID) -> str:
        return f"{self.KEY_PREFIX}{user_id}"

    @property
    def retry_after_seconds(self) -> int:
        """When to try again: by then a crashed process's slot has certainly expired."""
        return max(1, math.ceil(self.lease_seconds))

    async def acquire(self, user_id: uuid.UUID, stream_id: str) -> bool:
        taken = await self.redis.eval(
            _ACQUIRE_SLOT, 1, self.key(user_id), self.cap, stream_id, self.lease_seconds
        )
        if not taken:
            STREAMS_REFUSED.inc()
        return bool(taken)

    async def renew(self, user_id: uuid.UUID, stream_id: str) -> None:
        await self.redis.eval(_RENEW_SLOT, 1, self.key(user_id), stream_id, self.lease_seconds)

    async def release(self, user_id: uuid.UUID, stream_id: str) -> None:
        """Best effort and shielded (it runs as a stream is torn down, maybe cancelled): a
        release that fails leaves the slot to expire with its lease."""
        with anyio.move_on_after(2, shield=True):
            try:
                await self.redis.zrem(self.key(user_id), stream_id)
            except Exception:
                logger.warning("stream slot not released; it expires", exc_info=True)


def _event(notification: Notification) -> bytes:
    cursor = encode_cursor(notification.created_at, notification.id)
    data = NotificationOut.model_validate(notification).model_dump_json()
    return f"id: {cursor}\nevent: notification\ndata: {data}\n\n".encode()


class NotificationStream:
    """One client's ``text/event-stream``: replay after ``after``, then live."""

    def __init__(
        self,
        *,
        hub: LiveHub,
        db: Database,
        redis: Redis,
        user: AuthenticatedUser,
        after: CursorKey | None,
        settings: Settings,
        slots: StreamSlots | None = None,
        slot_id: str = "",
    ) -> None:
        self.hub = hub
        self.slots = slots
        self.slot_id = slot_id
        self.db = db
        self.redis = redis
        self.user = user
        self.sent = after  # the (created_at, id) of the last event the client has
        self.settings = settings

    async def events(self) -> AsyncIterator[bytes]:
        # Subscribe before anything is read from Postgres, so nothing committed from here on
        # can fall between the replay and the live part.
        subscription = self.hub.subscribe(self.user.id, self.user.token_hash)
        try:
            preamble = f"retry: {self.settings.stream.retry_ms}\n"
            if self.sent is None:
                # A fresh stream starts at the newest existing notification; its id is sent
                # at once, so even a client that disconnects before any event resumes there.
                async with self.db.session() as session:
                    latest = await repository.latest_notification_key(session, self.user.id)
                self.sent = latest or ORIGIN
                preamble += f"id: {encode_cursor(*self.sent)}\n"
            yield (preamble + ": connected\n\n").encode()
            async for chunk in self._catch_up():
                yield chunk
            async for chunk in self._live(subscription):
                yield chunk
        finally:
            self.hub.unsubscribe(subscription)
            if self.slots is not None:
                await self.slots.release(self.user.id, self.slot_id)

    async def _live(self, subscription: Subscription) -> AsyncIterator[bytes]:
        heartbeat = self.settings.stream.heartbeat_seconds
        resync_every = self.settings.stream.resync_seconds
        next_heartbeat = time.monotonic() + heartbeat
        last_read = time.monotonic()
        while True:
            await subscription.wait(next_heartbeat - time.monotonic())
            if subscription.closed or self.hub.closing:
                return
            keys, resync = subscription.take()
            assert self.sent is not None
            if resync is not None:
                STREAM_RESYNCS.labels(resync).inc()
                # The hub reconnected: a logout announced meanwhile never reached it.
                if resync == "reconnect" and not await self._session_alive():
                    return
            if resync is not None or any(key > self.sent for key in keys):
                async for chunk in self._catch_up():
                    yield chunk
                last_read = time.monotonic()
            if time.monotonic() >= next_heartbeat:
                if not await self._session_alive():
                    return  # logged out (and the announcement missed): end here too
                await self._renew_slot()
                if resync_every and time.monotonic() - last_read >= resync_every:
                    STREAM_RESYNCS.labels("periodic").inc()
                    async for chunk in self._catch_up():
                        yield chunk
                    last_read = time.monotonic()
                yield b": heartbeat\n\n"
                next_heartbeat = time.monotonic() + heartbeat

    async def _catch_up(self) -> AsyncIterator[bytes]:
        """Every notification after the last one sent, oldest first, in batches."""
        while True:
            assert self.sent is not None
            async with self.db.session() as session:
                batch = await repository.notifications_since(
                    session, self.user.id, after=self.sent, limit=REPLAY_BATCH
                )
            for notification in batch:
                self.sent = (notification.created_at, notification.id)
                STREAM_EVENTS.inc()
                yield _event(notification)
            if len(batch) < REPLAY_BATCH:
                return

    async def _renew_slot(self) -> None:
        if self.slots is None:
            return
        try:
            await self.slots.renew(self.user.id, self.slot_id)
        except Exception:
            logger.warning("stream slot not renewed; retried at the next heartbeat", exc_info=True)

    async def _session_alive(self) -> bool:
        """The same session rule as every request's (``common.auth.session_valid``); a
        check that cannot reach Redis keeps the stream (the next heartbeat asks again)."""
        try:
            return await session_valid(self.redis, self.user)
        except Exception:
            logger.warning("session check failed; the stream stays open", exc_info=True)
            return True
