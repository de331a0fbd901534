"""Redis client factory. One pooled client per process, created in the lifespan.

A single Redis (``redis.url``) or a Redis Cluster (``redis.cluster_nodes``), chosen by a
setting. The cluster client is redis-py's own :class:`redis.asyncio.cluster.RedisCluster`,
which follows ``MOVED``/``ASK`` redirections and fail-overs itself; nothing here routes keys.
What the code must do for a cluster, it does with keys and channels:

* Keys a script or a transaction touches together share a hash tag (``{...}``), so they are
  in one slot: the bus (every stream and the dead letters, see ``ServiceSettings``), a user's
  cached view and its generation, a webhook breaker's state and probe lock. ``limits`` tags
  its sliding-window pair itself.
* Fan-out uses sharded pub/sub on a cluster (``SPUBLISH``/``SSUBSCRIBE``: a message travels
  only within the channel's shard) and plain ``PUBLISH`` otherwise (:func:`publish`).

The client is typed as :class:`redis.asyncio.Redis` everywhere: ``RedisCluster`` serves the
same commands with the same signatures for everything this project calls (the cluster tests
run the bus, sessions, rate limits, cache, breaker and live fan-out against a real cluster),
and one type keeps every signature of the code base unchanged.
"""

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from common.settings import ServiceSettings, cluster_nodes

logger = logging.getLogger("common.redis")


def retry_options() -> dict[str, Any]:
    """Retry a command once when its pooled connection turns out to be dead.

    After a Redis restart every connection in the pool is stale: without this, the first
    command on each fails, and a client sees 503s for seconds after Redis is back. One retry
    on a fresh connection is enough, and it never doubles a command: a command that failed
    with a connection error was not answered, and the bus's own writes are idempotent or
    guarded by the inbox.
    """
    return {
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    }


def create_redis(settings: ServiceSettings) -> Redis:
    """A client whose every call has a timeout, so a stuck Redis never hangs a request.

    No health check (``health_check_interval=0``): with one, a pooled connection idle past
    the interval first sends a PING, a round trip before the command, to find out what the
    command itself finds out, and the one retry on a fresh connection (:func:`retry_options`)
    already recovers from a connection that went stale (a Redis restart, an idle timeout).
    """
    if settings.redis.cluster_nodes:
        return create_cluster(settings)
    # A blocking pool: past redis.max_connections a command waits (up to the timeout) for a
    # connection to come back, where the default pool would fail at once; a burst of
    # requests (streams being opened) must queue for a moment, not answer 503.
    pool = BlockingConnectionPool.from_url(
        settings.redis.url,
        decode_responses=True,
        max_connections=settings.redis.max_connections,
        timeout=settings.redis.timeout_seconds,
        socket_timeout=settings.redis.timeout_seconds,
        socket_connect_timeout=settings.redis.timeout_seconds,
        health_check_interval=0,  # the retry on a fresh connection covers a stale one
        **retry_options(),
    )
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # closed with the client, as from_url's is
    return client


def create_cluster(settings: ServiceSettings) -> Redis:
    """A :class:`RedisCluster` seeded with ``redis.cluster_nodes`` (it discovers the rest).

    A primary that dies is replaced by its replica (or its slots become unavailable, then
    503s, without one); the client re-reads the slot map after a connection error, with
    its own retries bounded by the same timeouts.
    """
    nodes = [ClusterNode(host, port) for host, port in cluster_nodes(settings.redis.cluster_nodes)]
    client = RedisCluster(
        startup_nodes=nodes,
        decode_responses=True,
        max_connections=settings.redis.max_connections,
        socket_timeout=settings.redis.timeout_seconds,
        socket_connect_timeout=settings.redis.timeout_seconds,
        health_check_interval=0,  # see create_redis
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        password=settings.redis.cluster_password or None,
        **cluster_options(),
    )
    return cast(Redis, client)


def cluster_options() -> dict[str, Any]:
    """Options every cluster client gets (ours and the rate limiter's).

    RESP2 and maintenance notifications off: those notifications (RESP3 only) are for
    managed Redis offerings that announce migrations, and redis-py 8's per-connection
    handshake for them races a concurrent reconnect under load (``'NoneType' object has no
    attribute 'writelines'``, seen as 500s in `make e2e-cluster` while a primary failed
    over). Disabling them in the config alone did not reach every node connection; RESP2
    skips the handshake altogether. The bus parses both reply shapes.
    """
    return {
        "protocol": 2,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


async def refresh_cluster_map(redis: Redis) -> None:
    """Read a Redis Cluster's slot map now (nothing on a single Redis).

    redis-py reads the map lazily, on the client's first command, and again only when a
    regular command fails. Sharded pub/sub looks channels up in that map without ever
    triggering either: a process whose first Redis call is an ``SSUBSCRIBE`` finds no slot
    covered, and one whose subscription died with a failed-over primary keeps resubscribing
    to the dead node until unrelated traffic refreshes the map. A subscriber calls this
    before each (re)subscription: one ``CLUSTER SLOTS`` (two on the client's first use), the
    connections of nodes still in the cluster kept.
    """
    if not isinstance(redis, RedisCluster):
        return
    await redis.initialize()  # the first use: nodes, pools and the command table
    await redis.nodes_manager.initialize()


def pubsub_namespace(redis: Redis) -> str:
    """What channel names carry to keep stacks that share one Redis server apart.

    Pub/sub ignores database numbers, so a single Redis's channels name the client's
    database; a cluster has only database 0 (and one stack per cluster).
    """
    if is_cluster(redis):
        return "c"
    return str(redis.connection_pool.connection_kwargs.get("db", 0))


async def publish(redis: Redis, messages: Sequence[tuple[str, str]]) -> None:
    """Each ``(channel, message)`` published, all in one pipelined round trip: ``SPUBLISH``
    on a cluster (sharded pub/sub: the client sends each to its channel's shard), ``PUBLISH``
    otherwise. The one way the code base publishes (logouts, live notifications); fire and
    forget, as pub/sub is: how many subscribers got a message is not returned."""
    if not messages:
        return
    async with redis.pipeline(transaction=False) as pipe:
        queue_publish(pipe, redis, messages)
        await pipe.execute()


def queue_publish(pipe: Any, redis: Redis, messages: Sequence[tuple[str, str]]) -> None:
    """:func:`publish`'s commands, queued on ``pipe`` (a pipeline of ``redis``)."""
    sharded = is_cluster(redis)
    for channel, message in messages:
        if sharded:
            pipe.spublish(channel, message)
        else:
            pipe.publish(channel, message)


@dataclass(frozen=True, slots=True)
class AfterCommit:
    """Redis commands a unit of work sends once it commits (``UnitOfWork.after_commit_redis``):
    queued on a pipeline of ``redis`` shared with the unit of work's other commands (in a bus
    handler, with its batch's XACK and XADDs), so they cost no round trip of their own.
    ``done`` is told whether they went through. Best effort, as an after-commit callback is:
    a failure is logged and reported to ``done``, never to the committed transaction."""

    redis: Redis
    queue: Callable[[Any], object]
    done: Callable[[bool], object] | None = None

    def report(self, went_through: bool) -> None:
        if self.done is not None:
            self.done(went_through)


Queued = list[tuple[AfterCommit, slice]]
"""Commands queued on a pipeline, each with the slice of the pipeline's replies that is its."""


def queue_after_commit(pipe: Any, commands: Sequence[AfterCommit]) -> Queued:
    """Queue ``commands`` on ``pipe`` (after what it holds already)."""
    queued: Queued = []
    for command in commands:
        start = len(pipe)
        command.queue(pipe)
        queued.append((command, slice(start, len(pipe))))
    return queued


def report_results(queued: Queued, results: Sequence[Any] | None) -> None:
    """Tell each queued command whether its replies hold an error (None: the pipeline as a
    whole failed); log the errors."""
    for command, replies in queued:
        errors = [r for r in results[replies] if isinstance(r, Exception)] if results else None
        if errors:
            logger.warning("Redis command after commit failed", extra={"error": repr(errors[0])})
        command.report(results is not None and not errors)


async def execute_reporting(pipe: Any, queued: Queued) -> list[Any]:
    """Run ``pipe``; its replies, errors among them not raised (the caller looks at its own
    commands'), the queued after-commit commands told how theirs went."""
    try:
        results: list[Any] = await pipe.execute(raise_on_error=False)
    except Exception:
        report_results(queued, None)
        raise
    report_results(queued, results)
    return results


async def send_after_commit(commands: Sequence[AfterCommit]) -> None:
    """Send ``commands``: one pipelined round trip per Redis client among them."""
    clients: dict[int, list[AfterCommit]] = {}
    for command in commands:
        clients.setdefault(id(command.redis), []).append(command)
    for batch in clients.values():
        pipe = batch[0].redis.pipeline(transaction=False)
        await execute_reporting(pipe, queue_after_commit(pipe, batch))


class Script:
    """A Lua script run with ``EVALSHA``; on ``NOSCRIPT`` (a Redis restarted empty, a node
    that never saw it) with ``EVAL``, which also caches it on that server for the next call.

    Instead of redis-py's ``register_script``: its call checks ``isinstance(client,
    Pipeline)`` against a runtime-checkable protocol every time, about 5% of a cached read's
    CPU in users-api (py-spy), for a pipeline feature nothing here uses. On a cluster the
    client sends either command to the node of the keys, as it does every command.
    """

    def __init__(self, redis: Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.redis.eval(self.source, len(keys), *keys, *args)
