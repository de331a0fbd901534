"""Private data stores for tests and drills: a Redis Cluster, a Postgres primary + replica.

Everything runs from the installed binaries (``redis-server``, ``redis-cli``, Postgres's
``initdb``/``pg_ctl``/``pg_basebackup``) on private ports, in private directories under
``.run/``, and is torn down by :meth:`stop`. Never the machine's own Redis or Postgres.

* :class:`LocalRedisCluster`: ``n`` primaries (and optionally a replica each), created with
  ``redis-cli --cluster create``. ``cluster-require-full-coverage no``: while a primary is
  down, the other shards keep serving (a drill kills one).
* :class:`LocalPostgresPair`: a primary and a streaming replica made with
  ``pg_basebackup -R``; run as the unprivileged ``postgres`` user when we are root (Postgres
  refuses to run as root).
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RUN_DIR = Path(os.environ.get("RUN_DIR", ".run"))


def postgres_reachable_directory(name: str) -> Path:
    """A fresh directory for a private Postgres's data, in the system's temporary directory.

    Not under the checkout: when we are root the server runs as ``postgres``, which cannot
    enter a checkout under a private home (mode 700); the temporary directory it can.
    """
    return Path(tempfile.mkdtemp(prefix=f"shop-{name}-"))


def _wait(check: Callable[[], bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready within {within} s")
        time.sleep(0.05)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


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
        """The ``redis_cluster_nodes`` setting: every node as a seed."""
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
        _wait(self.healthy, within=30, what="redis cluster")
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
        _wait(lambda: port_open(port), within=10, what=f"redis node {port}")

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
        _wait(lambda: not port_open(port), within=10, what=f"redis node {port} gone")

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

    def wait_healthy(self, within: float = 30) -> None:
        _wait(self.healthy, within=within, what="redis cluster")

    def wait_failover(self, key: str, dead: int, within: float = 30) -> None:
        """Until a replica serves ``key``'s slot in place of the killed primary ``dead``, and
        the cluster is healthy again. Right after a kill the other nodes still call the
        cluster ok (they notice only after ``cluster-node-timeout``): health alone is no sign
        that the failover happened."""
        _wait(
            lambda: self._served_by_other(key, dead) and self.healthy(),
            within=within,
            what=f"failover of {key!r} away from {dead}",
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


def _postgres_bin() -> Path:
    """The directory of the installed server binaries (``initdb`` is not on PATH on Debian)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if not found:
        raise RuntimeError("no Postgres server binaries (initdb) installed")
    return Path(found).parent


@dataclass
class LocalPostgresPair:
    """A private Postgres primary on ``primary_port`` and its streaming replica."""

    primary_port: int
    replica_port: int
    directory: Path = field(default_factory=lambda: RUN_DIR / "pg-pair")

    @property
    def primary_dir(self) -> Path:
        return self.directory / "primary"

    @property
    def replica_dir(self) -> Path:
        return self.directory / "replica"

    def url(self, database: str = "postgres", *, replica: bool = False) -> str:
        port = self.replica_port if replica else self.primary_port
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def _run(self, args: Sequence[str], *, timeout: float = 120) -> None:
        """Run a Postgres tool, as the ``postgres`` user when we are root."""
        command = [str(_postgres_bin() / args[0]), *args[1:]]
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        subprocess.run(  # noqa: S603
            command, check=True, capture_output=True, timeout=timeout, cwd="/", **kwargs
        )  # type: ignore[call-overload]

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(path, account.pw_uid, account.pw_gid)

    def start(self) -> "LocalPostgresPair":
        for port in (self.primary_port, self.replica_port):
            if port_open(port):
                raise RuntimeError(f"port {port} is taken; is another Postgres running?")
        shutil.rmtree(self.directory, ignore_errors=True)
        self._own(self.directory.resolve())
        primary = str(self.primary_dir.resolve())
        self._run(["initdb", "-D", primary, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 5\n"
                "hot_standby = on\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nmax_connections = 200\n"
                f"unix_socket_directories = '{primary}'\n"
            )
        with (self.primary_dir / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        self.start_primary()
        replica = str(self.replica_dir.resolve())
        self._run(
            ["pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
             "-D", replica, "-R", "-X", "stream", "-c", "fast"]
        )  # fmt: skip
        with (self.replica_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.replica_port}\nunix_socket_directories = '{replica}'\n")
        self.start_replica()
        return self

    def _pg_ctl(self, data: Path, action: str, port: int | None = None) -> None:
        args = ["pg_ctl", "-D", str(data.resolve()), "-w", "-t", "60"]
        if action == "start":
            args += ["-l", str((data / "server.log").resolve()), "-o", f"-p {port}", "start"]
        else:
            args += ["-m", "fast", action]
        self._run(args)

    def start_primary(self) -> None:
        self._pg_ctl(self.primary_dir, "start", self.primary_port)

    def start_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "start", self.replica_port)

    def stop_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "stop")

    def stop(self) -> None:
        for data in (self.replica_dir, self.primary_dir):
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.SubprocessError):
                    self._pg_ctl(data, "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
