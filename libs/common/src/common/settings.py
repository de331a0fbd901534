"""Settings base class: every service reads its configuration from the environment.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (``USERS_``,
``ORDERS_``, ``NOTIFICATIONS_``) so that one shell or one Kubernetes ConfigMap can hold the
settings of all three without collisions.

Settings are grouped per concern into nested models (``settings.bus.block_ms``), and every
environment variable keeps its flat name: with ``env_nested_delimiter="_"`` and
``env_nested_max_split=1``, pydantic-settings reads a group field ``bus`` from the variables
``<PREFIX>BUS_<FIELD>`` (everything after the group's own name and one ``_`` is the field's
name, underscores included), so ``ORDERS_BUS_BLOCK_MS`` is ``settings.bus.block_ms``. A group's
name may itself hold underscores (``worker_db``, ``rate_limit``): the variable is
``<PREFIX><GROUP>_<FIELD>``, upper-case. Fields outside any group are read as before.
"""

import ipaddress
import socket
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# What every settings class (ServiceSettings and each service's subclass) is configured with.
NESTED = SettingsConfigDict(
    env_file=".env", extra="ignore", env_nested_delimiter="_", env_nested_max_split=1
)

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class DbSettings(BaseModel):
    """An API process's Postgres pool (``<PREFIX>DB_*``)."""

    # An API process's Postgres pool. The stack's budget (docs/design.md section 9): per
    # replica, three APIs x (6 + 2) and three workers x (4 + 2) = 42 connections, so
    # REPLICAS=2 takes 84 of Postgres' default max_connections 100, leaving 16 (3 of them
    # reserved for superusers) to operators, migrations and scripts. Each process checks at
    # start that its own pool fits in what the server has free. A small fixed pool beats a
    # large overflow, whose connections open and close under load.
    pool_size: int = Field(default=6, ge=1, le=200)
    max_overflow: int = Field(default=2, ge=0, le=200)
    pool_timeout_seconds: float = Field(default=5.0, gt=0)
    statement_timeout_ms: int = Field(default=10_000, ge=0)


class WorkerDbSettings(BaseModel):
    """A worker's Postgres pool (``<PREFIX>WORKER_DB_*``)."""

    # A worker's pool: its batches in flight (bus.batches_in_flight), the outbox and its
    # timers each hold one connection at a time.
    pool_size: int = Field(default=4, ge=1, le=200)
    max_overflow: int = Field(default=2, ge=0, le=200)


class ReplicaSettings(BaseModel):
    """Reads from the read replica (``<PREFIX>REPLICA_*``; its URL is database_replica_url)."""

    # After a client's write, its reads go to the primary this long (read-your-writes).
    stick_seconds: float = Field(default=5.0, ge=0)
    # A replica that failed is not tried again for this long (reads go to the primary).
    retry_seconds: float = Field(default=5.0, gt=0)


class RedisSettings(BaseModel):
    """Where Redis is (``<PREFIX>REDIS_*``)."""

    url: str = "redis://127.0.0.1:6379/0"
    # A Redis Cluster instead of redis.url: seed nodes "host:port,host:port" (the client
    # discovers the rest). See common.redis.
    cluster_nodes: str = ""
    cluster_password: str = ""
    max_connections: int = Field(default=50, ge=1)
    timeout_seconds: float = Field(default=2.0, gt=0)


class HttpSettings(BaseModel):
    """Serving limits of one API process (``<PREFIX>HTTP_*``)."""

    # Requests one API process serves at once; beyond, a 503 with Retry-After (load shedding).
    max_in_flight: int = Field(default=64, ge=1, le=100_000)
    # Edge limits (common.edge), before parsing, auth and load shedding: a body over this is
    # a 413; a body or the headers not arrived within their deadline is a 408.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    body_timeout_seconds: float = Field(default=10.0, gt=0)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # Streaming responses (SSE) open at once in one process; they hold no load-shedding slot,
    # and one more is a 503 with Retry-After.
    max_streams: int = Field(default=256, ge=1, le=100_000)


class BusSettings(BaseModel):
    """The event bus, common.bus (``<PREFIX>BUS_*``)."""

    # The event bus (common.bus). Intervals are settings so tests can make them tiny.
    # Every bus key starts with it: "bus:users.events". On a Redis Cluster it must carry a
    # hash tag ("{bus}:", the default there), so that every stream and the dead letters
    # share one slot: XREADGROUP over a service's streams and the dead-letter MULTI need it.
    stream_prefix: str = "bus:"
    # Below redis.timeout_seconds; also the longest an unhurried stream waits to be read.
    block_ms: int = Field(default=1_000, ge=1)

    batch_size: int = Field(default=32, ge=1, le=10_000)  # entries handled in one transaction
    # Entries in flight at once, in at most bus.batches_in_flight batches (each holds one
    # pooled connection while it runs: keep it at most worker_db.pool_size).
    concurrency: int = Field(default=64, ge=1, le=10_000)
    batches_in_flight: int = Field(default=4, ge=1, le=1_000)
    max_attempts: int = Field(default=5, ge=1)  # handler failures before dead-lettering
    retry_base_seconds: float = Field(default=0.05, gt=0)  # first in-process retry delay
    retry_max_seconds: float = Field(default=2.0, gt=0)  # retry delays double up to this
    pause_max_seconds: float = Field(default=5.0, gt=0)  # outage probes back off to this
    reclaim_idle_ms: int = Field(default=15_000, ge=1)  # pending this long: retry/reclaim
    reclaim_interval_seconds: float = Field(default=5.0, gt=0)
    consumer_delete_idle_ms: int = Field(default=3_600_000, ge=0)  # 0: never delete
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)  # in-flight handlers' grace


class InboxSettings(BaseModel):
    """The consumers' inbox of handled message ids (``<PREFIX>INBOX_*``)."""

    # Handled message ids are kept this long (far beyond any redelivery), then pruned.
    retention_hours: float = Field(default=7 * 24, gt=0)
    prune_interval_seconds: float = Field(default=3600.0, gt=0)


class PartitionSettings(BaseModel):
    """Time-partitioned tables, docs/partitioning.md (``<PREFIX>PARTITION_*``)."""

    # How often the worker maintains its time-partitioned tables (docs/partitioning.md).
    maintenance_interval_seconds: float = Field(default=600.0, gt=0)
    # Days of partitions created ahead of now (a default partition catches anything beyond).
    ahead_days: int = Field(default=14, ge=2, le=400)
    # Per table name, the grid of new partitions: {"saga_steps": "day"} ("day" or "month").
    intervals: dict[str, Literal["day", "month"]] = Field(default_factory=dict)
    # Per table name, days kept before a partition is dropped: {"saga_steps": 90}. The
    # inbox's is inbox.retention_hours, rounded up to days.
    retention_days: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)


class OutboxSettings(BaseModel):
    """The transactional outbox, common.bus.outbox (``<PREFIX>OUTBOX_*``)."""

    batch_size: int = Field(default=100, ge=1, le=10_000)
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    # Rows are sent from memory right after their commit; the sweeper takes only rows older
    # than this (their process died before sending, or Redis was down then).
    sweep_grace_seconds: float = Field(default=5.0, ge=0)
    # Sent rows are deleted this long after a commit, with every other commit's meanwhile:
    # one DELETE (one transaction) for many. Keep it well below the sweep grace.
    delete_delay_seconds: float = Field(default=0.5, ge=0)


class StreamSettings(BaseModel):
    """Trimming the bus's Redis Streams (``<PREFIX>STREAM_*``)."""

    trim_interval_seconds: float = Field(default=60.0, gt=0)
    min_retention: int = Field(default=1_000, ge=0)  # newest entries always kept
    min_retention_seconds: float = Field(default=600.0, ge=0)  # younger always kept


class RateLimitSettings(BaseModel):
    """Rate limits per route group (``<PREFIX>RATE_LIMIT_*``)."""

    # Rate limits per route group, per user (or client address when anonymous), shared by
    # every replica through Redis. Syntax of the `limits` library: "600/minute", "10/second".
    enabled: bool = True
    auth: str = "30/minute"
    read: str = "1200/minute"
    write: str = "300/minute"


class ServiceSettings(BaseSettings):
    """What every service needs: where Postgres and Redis are, how to serve, how to log."""

    model_config = NESTED

    service_name: str = "service"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/app"
    # Postgres itself when database_url goes through a transaction pooler (PgBouncer, past
    # one replica): migrations and partition maintenance need a session of their own (a
    # session advisory lock, DDL over several commits), which a transaction pooler does not
    # keep. Set, it also means the pool's connections are the pooler's clients, not the
    # server's: the start-up connection budget check is the pooler's business. Empty: none.
    database_direct_url: str = ""
    db: DbSettings = DbSettings()
    worker_db: WorkerDbSettings = WorkerDbSettings()
    # A read replica (streaming replication) for reads that may lag: lists and histories.
    # Empty: every read goes to the primary. See common.replica.
    database_replica_url: str = ""
    replica: ReplicaSettings = ReplicaSettings()
    # A rolling update drains before it stops: while this file exists (Kubernetes' preStop
    # creates it), /readyz answers 503 "draining", so no new traffic is routed here before
    # SIGTERM. Empty: no drain file.
    drain_file: str = ""
    redis: RedisSettings = RedisSettings()

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Listen with SO_REUSEPORT, so that several API processes share the port (REPLICAS=n).
    reuse_port: bool = False
    worker_port: int = Field(default=9000, ge=1, le=65535)
    http: HttpSettings = HttpSettings()
    log_level: str = "INFO"
    session_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    consumer_name: str = Field(default_factory=socket.gethostname)

    bus: BusSettings = BusSettings()
    inbox: InboxSettings = InboxSettings()
    partition: PartitionSettings = PartitionSettings()
    outbox: OutboxSettings = OutboxSettings()
    stream: StreamSettings = StreamSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    # Peers whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated in the
    # environment: "10.244.0.0/16,192.0.2.7"): the ingress controller's. None by default, so
    # the client address is the TCP peer's and a forged header changes nothing.
    trusted_proxies: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = ()

    @property
    def session_database_url(self) -> str:
        """Where work that needs a session of its own connects (migrations, partition
        maintenance): Postgres itself when the pool goes through a transaction pooler."""
        return self.database_direct_url or self.database_url

    @property
    def behind_pooler(self) -> bool:
        return bool(self.database_direct_url)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _bus_keys_share_a_slot_on_a_cluster(self) -> Self:
        """On a cluster, the untagged default prefix ``bus:`` becomes ``{bus}:``; another
        prefix without a hash tag is refused (its keys would spread over slots)."""
        if self.redis.cluster_nodes and not _has_hash_tag(self.bus.stream_prefix):
            if self.bus.stream_prefix != "bus:":
                raise ValueError(
                    "bus.stream_prefix (BUS_STREAM_PREFIX) needs a hash tag on a Redis "
                    "Cluster, e.g. '{bus}:'"
                )
            self.bus = self.bus.model_copy(update={"stream_prefix": "{bus}:"})
        return self


def with_changes(settings: SettingsT, **changes: Any) -> SettingsT:
    """A copy of ``settings`` with some values changed, without validation (like
    ``model_copy``): a group takes a dict of its fields' new values, which are merged into
    the group's current ones; any other field takes its new value.

        with_changes(settings, bus={"block_ms": 5}, drain_file="/tmp/drain")
    """
    update: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in type(settings).model_fields:
            raise TypeError(f"{type(settings).__name__} has no setting {name!r}")
        current = getattr(settings, name)
        if isinstance(value, dict) and isinstance(current, BaseModel):
            unknown = set(value) - set(type(current).model_fields)
            if unknown:
                raise TypeError(f"{name} has no setting {sorted(unknown)}")
            value = current.model_copy(update=value)
        update[name] = value
    return settings.model_copy(update=update)


def _has_hash_tag(prefix: str) -> bool:
    opening = prefix.find("{")
    return opening >= 0 and prefix.find("}", opening + 2) > opening


def cluster_nodes(spec: str) -> list[tuple[str, int]]:
    """``"host:port,host:port"`` as ``[(host, port)]``."""
    nodes = []
    for item in spec.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a cluster node is host:port, not {item!r}")
        nodes.append((host, int(port)))
    return nodes
