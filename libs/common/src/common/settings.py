"""Settings base class: every service reads its configuration from the environment.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (``USERS_``,
``ORDERS_``, ``NOTIFICATIONS_``) so that one shell or one Kubernetes ConfigMap can hold the
settings of all three without collisions.
"""

import ipaddress
import socket
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service needs: where Postgres and Redis are, how to serve, how to log."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    service_name: str = "service"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/app"
    # An API process's Postgres pool. The stack's budget (docs/design.md section 9): per
    # replica, three APIs x (6 + 2) and three workers x (4 + 2) = 42 connections, so
    # REPLICAS=2 takes 84 of Postgres' default max_connections 100, leaving 16 (3 of them
    # reserved for superusers) to operators, migrations and scripts. Each process checks at
    # start that its own pool fits in what the server has free. A small fixed pool beats a
    # large overflow, whose connections open and close under load.
    db_pool_size: int = Field(default=6, ge=1, le=200)
    db_max_overflow: int = Field(default=2, ge=0, le=200)
    # A worker's pool: its batches in flight (bus_batches_in_flight), the outbox and its
    # timers each hold one connection at a time.
    worker_db_pool_size: int = Field(default=4, ge=1, le=200)
    worker_db_max_overflow: int = Field(default=2, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=10_000, ge=0)
    # A read replica (streaming replication) for reads that may lag: lists and histories.
    # Empty: every read goes to the primary. See common.replica.
    database_replica_url: str = ""
    # After a client's write, its reads go to the primary this long (read-your-writes).
    replica_stick_seconds: float = Field(default=5.0, ge=0)
    # A replica that failed is not tried again for this long (reads go to the primary).
    replica_retry_seconds: float = Field(default=5.0, gt=0)
    # A rolling update drains before it stops: while this file exists (Kubernetes' preStop
    # creates it), /readyz answers 503 "draining", so no new traffic is routed here before
    # SIGTERM. Empty: no drain file.
    drain_file: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A Redis Cluster instead of redis_url: seed nodes "host:port,host:port" (the client
    # discovers the rest). See common.redis.
    redis_cluster_nodes: str = ""
    redis_cluster_password: str = ""
    redis_max_connections: int = Field(default=50, ge=1)
    redis_timeout_seconds: float = Field(default=2.0, gt=0)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Listen with SO_REUSEPORT, so that several API processes share the port (REPLICAS=n).
    reuse_port: bool = False
    worker_port: int = Field(default=9000, ge=1, le=65535)
    # Requests one API process serves at once; beyond, a 503 with Retry-After (load shedding).
    http_max_in_flight: int = Field(default=64, ge=1, le=100_000)
    # Edge limits (common.edge), before parsing, auth and load shedding: a body over this is
    # a 413; a body or the headers not arrived within their deadline is a 408.
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    http_body_timeout_seconds: float = Field(default=10.0, gt=0)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    # Streaming responses (SSE) open at once in one process; they hold no load-shedding slot,
    # and one more is a 503 with Retry-After.
    http_max_streams: int = Field(default=256, ge=1, le=100_000)
    log_level: str = "INFO"
    session_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    consumer_name: str = Field(default_factory=socket.gethostname)

    # The event bus (common.bus). Intervals are settings so tests can make them tiny.
    # Every bus key starts with it: "bus:users.events". On a Redis Cluster it must carry a
    # hash tag ("{bus}:", the default there), so that every stream and the dead letters
    # share one slot: XREADGROUP over a service's streams and the dead-letter MULTI need it.
    bus_stream_prefix: str = "bus:"
    bus_block_ms: int = Field(default=1_000, ge=1)  # must stay below redis_timeout_seconds
    bus_batch_size: int = Field(default=32, ge=1, le=10_000)  # entries handled in one transaction
    # Entries in flight at once, in at most bus_batches_in_flight batches (each holds one
    # pooled connection while it runs: keep it at most worker_db_pool_size).
    bus_concurrency: int = Field(default=64, ge=1, le=10_000)
    bus_batches_in_flight: int = Field(default=4, ge=1, le=1_000)
    bus_max_attempts: int = Field(default=5, ge=1)  # handler failures before dead-lettering
    bus_retry_base_seconds: float = Field(default=0.05, gt=0)  # first in-process retry delay
    bus_retry_max_seconds: float = Field(default=2.0, gt=0)  # retry delays double up to this
    bus_pause_max_seconds: float = Field(default=5.0, gt=0)  # outage probes back off to this
    bus_reclaim_idle_ms: int = Field(default=15_000, ge=1)  # pending this long: retry/reclaim
    bus_reclaim_interval_seconds: float = Field(default=5.0, gt=0)
    bus_consumer_delete_idle_ms: int = Field(default=3_600_000, ge=0)  # 0: never delete
    bus_shutdown_timeout_seconds: float = Field(default=20.0, gt=0)  # in-flight handlers' grace
    # Handled message ids are kept this long (far beyond any redelivery), then pruned.
    inbox_retention_hours: float = Field(default=7 * 24, gt=0)
    inbox_prune_interval_seconds: float = Field(default=3600.0, gt=0)
    # How often the worker maintains its time-partitioned tables (docs/partitioning.md).
    partition_maintenance_interval_seconds: float = Field(default=600.0, gt=0)
    # Days of partitions created ahead of now (a default partition catches anything beyond).
    partition_ahead_days: int = Field(default=14, ge=2, le=400)
    # Per table name, the grid of new partitions: {"saga_steps": "day"} ("day" or "month").
    partition_intervals: dict[str, Literal["day", "month"]] = Field(default_factory=dict)
    # Per table name, days kept before a partition is dropped: {"saga_steps": 90}. The
    # inbox's is inbox_retention_hours, rounded up to days.
    partition_retention_days: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)

    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)
    outbox_sweep_interval_seconds: float = Field(default=1.0, gt=0)
    # Rows are sent from memory right after their commit; the sweeper takes only rows older
    # than this (their process died before sending, or Redis was down then).
    outbox_sweep_grace_seconds: float = Field(default=5.0, ge=0)
    # Sent rows are deleted this long after a commit, with every other commit's meanwhile:
    # one DELETE (one transaction) for many. Keep it well below the sweep grace.
    outbox_delete_delay_seconds: float = Field(default=0.5, ge=0)
    stream_trim_interval_seconds: float = Field(default=60.0, gt=0)
    stream_min_retention: int = Field(default=1_000, ge=0)  # newest entries always kept
    stream_min_retention_seconds: float = Field(default=600.0, ge=0)  # younger always kept

    # Rate limits per route group, per user (or client address when anonymous), shared by
    # every replica through Redis. Syntax of the `limits` library: "600/minute", "10/second".
    rate_limit_enabled: bool = True
    rate_limit_auth: str = "30/minute"
    rate_limit_read: str = "1200/minute"
    rate_limit_write: str = "300/minute"
    # Peers whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated in the
    # environment: "10.244.0.0/16,192.0.2.7"): the ingress controller's. None by default, so
    # the client address is the TCP peer's and a forged header changes nothing.
    trusted_proxies: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _bus_keys_share_a_slot_on_a_cluster(self) -> "ServiceSettings":
        """On a cluster, the untagged default prefix ``bus:`` becomes ``{bus}:``; another
        prefix without a hash tag is refused (its keys would spread over slots)."""
        if self.redis_cluster_nodes and not _has_hash_tag(self.bus_stream_prefix):
            if self.bus_stream_prefix != "bus:":
                raise ValueError(
                    "bus_stream_prefix needs a hash tag on a Redis Cluster, e.g. '{bus}:'"
                )
            self.bus_stream_prefix = "{bus}:"
        return self


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
