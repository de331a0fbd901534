"""Private data stores for tests and drills: a Redis Cluster, a Postgres primary + replica.

Everything runs from the installed binaries (``redis-server``, ``redis-cli``, Postgres's
``initdb``/``pg_ctl``/``pg_basebackup``, through :mod:`common.testing.servers`) on private
ports, in private directories, and is torn down by :meth:`stop`. Never the machine's own
Redis or Postgres.

* :class:`LocalRedisCluster`: ``n`` primaries (and optionally a replica each), created with
  ``redis-cli --cluster create``. ``cluster-require-full-coverage no``: while a primary is
  down, the other shards keep serving (a drill kills one).
* :class:`LocalPostgresPair`: a primary and a streaming replica made with
  ``pg_basebackup -R``; run as the unprivileged ``postgres`` user when we are root (Postgres
  refuses to run as root).
"""

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from common.testing.servers import (
    FAST_POSTGRES,
    PostgresServer,
    ServerError,
    port_open,
    private_directory,
    run_postgres_tool,
    wait_until,
)

RUN_DIR = Path(os.environ.get("RUN_DIR", ".run"))


def free_port_run(start: int, count: int) -> int:
    """The first port from ``start`` (in steps of ``count``) with ``count`` free ports, and
    free cluster-bus ports (+10000) for each: a run that another cluster (a test suite's, a
    previous run's being torn down) does not hold."""
    for base in range(start, start + 80, count):
        ports = range(base, base + count)
        if not any(port_open(p) or port_open(p + 10_000) for p in ports):
            return base
    raise RuntimeError(f"no {count} free ports from {start}")


@dataclass
class LocalRedisCluster:
    """A Redis Cluster of ``primaries`` shards on ``base_port``, ``base_port + 1``, ..."""

    base_port: int
    primaries: int = 3
    replicas_per_primary: int = 0
    directory: Path = field(default_factory=lambda: RUN_DIR / "redis-cluster")
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ports(self) -> list[int]:
        count = self.primaries * (1 + self.replicas_per_primary)
        return [self.base_port + i for i in range(count)]

    @property
    def nodes(self) -> str:
        """The ``redis.cluster_nodes`` setting: every node as a seed."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> "LocalRedisCluster":
        for port in self.ports:
            if port_open(port):
                raise RuntimeError(f"port {port} is taken; is another cluster running?")
        shutil.rmtree(self.directory, ignore_errors=True)
        for port in self.ports:
            self.start_node(port)
        create = ["redis-cli", "--cluster", "create", *self.nodes.split(",")]
        create += ["--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)  # noqa: S603
        wait_until("redis cluster", self.healthy, 30)
        wait_until("redis cluster replicas in sync", self.replicas_in_sync, 30)
        return self

    def start_node(self, port: int) -> None:
        """Start (or restart, keeping its ``nodes.conf``) the node on ``port``."""
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(node_dir.resolve()),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000",
            "--cluster-require-full-coverage", "no",
            "--appendonly", "no",
            "--save", "",
            "--logfile", "redis.log",
        ]  # fmt: skip
        self.processes[port] = subprocess.Popen(command)  # noqa: S603
        wait_until(f"redis node {port}", lambda: port_open(port), 10)

    def kill_node(self, port: int) -> None:
        """SIGKILL one node (a drill), whoever started it; back with :meth:`start_node`."""
        process = self.processes.pop(port, None)
        if process is not None:
            process.kill()
            process.wait(timeout=10)
            return
        pid = self.node_pid(port)
        if pid is None:
            raise RuntimeError(f"no redis node answers on {port}")
        os.kill(pid, signal.SIGKILL)
        wait_until(f"redis node {port} gone", lambda: not port_open(port), 10)

    def cluster_info(self, port: int) -> dict[str, str]:
        result = subprocess.run(  # noqa: S603
            ["redis-cli", "-p", str(port), "cluster", "info"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        pairs = (line.strip().partition(":") for line in result.stdout.splitlines())
        return {key: value for key, _, value in pairs if key}

    def healthy(self) -> bool:
        """Every running node sees the cluster as ok, with every slot assigned."""
        for port in [p for p in self.ports if port_open(p)]:
            info = self.cluster_info(port)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                return False
        return True

    def replicas_in_sync(self) -> bool:
        """Every replica's link to its primary is up. A replica that has never synced counts
        its data as infinitely old and refuses to take over when its primary dies (Redis's
        ``cluster-replica-validity-factor``): a fail-over drill must wait for this."""
        for port in [p for p in self.ports if port_open(p)]:
            info = self._cli(port, "info", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def wait_healthy(self, within: float = 30) -> None:
        wait_until("redis cluster", self.healthy, within)

    def wait_failover(self, key: str, dead: int, within: float = 30) -> None:
        """Until a replica serves ``key``'s slot in place of the killed primary ``dead``, and
        the cluster is healthy again. Right after a kill the other nodes still call the
        cluster ok (they notice only after ``cluster-node-timeout``): health alone is no sign
        that the failover happened."""
        wait_until(
            f"failover of {key!r} away from {dead}",
            lambda: self._served_by_other(key, dead) and self.healthy(),
            within,
        )

    def _served_by_other(self, key: str, dead: int) -> bool:
        try:
            return self.owner_of(key) != dead
        except RuntimeError:  # between the failure and the election no primary serves it
            return False

    def node_pid(self, port: int) -> int | None:
        """The pid of the node on ``port`` (it may have been started by another process)."""
        info = self._cli(port, "info", "server")
        for line in info.splitlines():
            if line.startswith("process_id:"):
                return int(line.partition(":")[2])
        return None

    def owner_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot now."""
        for port in self.ports:
            slot = self._cli(port, "cluster", "keyslot", key).strip()
            if not slot.isdigit():
                continue
            for line in self._cli(port, "cluster", "nodes").splitlines():
                fields = line.split()
                if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
                    continue
                for span in fields[8:]:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= int(slot) <= int(high or low):
                        return int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no primary serves {key!r}")

    def _cli(self, port: int, *args: str) -> str:
        result = subprocess.run(  # noqa: S603
            ["redis-cli", "-p", str(port), *args],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return result.stdout

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        for port in self.ports:  # nodes another process (re)started, e.g. a drill
            if port_open(port):
                self._cli(port, "shutdown", "nosave")
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class LocalPostgresPair:
    """A private Postgres primary on ``primary_port`` and its streaming replica."""

    primary_port: int
    replica_port: int
    directory: Path = field(default_factory=lambda: private_directory("pg-pair"))

    @property
    def primary(self) -> PostgresServer:
        return PostgresServer(self.directory / "primary", self.primary_port)

    @property
    def replica(self) -> PostgresServer:
        return PostgresServer(self.directory / "replica", self.replica_port)

    def url(self, database: str = "postgres", *, replica: bool = False) -> str:
        return (self.replica if replica else self.primary).url(database)

    def start(self) -> "LocalPostgresPair":
        for port in (self.primary_port, self.replica_port):
            if port_open(port):
                raise RuntimeError(f"port {port} is taken; is another Postgres running?")
        self.primary.initialise(
            {**FAST_POSTGRES, "wal_level": "replica", "max_wal_senders": "5", "hot_standby": "on"}
        )
        with (self.primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        self.primary.start()
        run_postgres_tool(
            ["pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
             "-D", str(self.replica.data), "-R", "-X", "stream", "-c", "fast"]
        )  # fmt: skip
        self.replica.configure({})
        self.replica.start()
        return self

    def start_primary(self) -> None:
        self.primary.start()

    def start_replica(self) -> None:
        self.replica.start()

    def stop_replica(self) -> None:
        self.replica.stop()

    def stop(self) -> None:
        for server in (self.replica, self.primary):
            with contextlib.suppress(ServerError, subprocess.SubprocessError):
                server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
