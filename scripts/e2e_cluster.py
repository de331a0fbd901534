"""`make e2e-cluster`: the e2e suite against a Redis Cluster, a Postgres replica, two of each.

Starts, from the installed binaries, on private ports and under ``.run/e2e-cluster/``:

* a Redis Cluster of 3 primaries, each with a replica (so that the drill's killed primary
  fails over, as a production cluster would);
* a Postgres primary and a streaming replica (``pg_basebackup -R``);

then the local stack against them (``scripts/stack.sh up`` with ``STACK=e2e``,
``REPLICAS=2``, ``REDIS_CLUSTER_NODES`` and ``DATABASE_REPLICA_URL``: twelve processes, and
the PgBouncer that stack.sh puts between them and the primary past one replica),
runs ``tests/e2e`` (``tests/e2e/test_cluster_drill.py`` included: it kills the primary that
holds the bus and stops the Postgres replica, knowing where they are from ``E2E_CLUSTER_*``),
checks the saga invariants, and tears everything down, whatever happened. Prints how long
each phase took. Exit status: pytest's, or 1 when a phase before it failed.

Environment: E2E_PORT_BASE / E2E_WORKER_PORT_BASE (default 18200 / 19200), E2E_DB_NAME
(app_e2e_cluster), E2E_CLUSTER_PORT_BASE (17000: six ports from there, and +10000 for the
cluster bus), E2E_CLUSTER_PG_PORT (17090, and the next one for the replica), REPLICAS (2).
Extra arguments go to pytest.
"""

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common.testing.cluster import (
    LocalPostgresPair,
    LocalRedisCluster,
    free_port_run,
)
from common.testing.servers import private_directory

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run" / "e2e-cluster"


def log(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def stack_environment(cluster: LocalRedisCluster, pair: LocalPostgresPair) -> dict[str, str]:
    port_base = int(setting("E2E_PORT_BASE", "18200"))
    worker_base = int(setting("E2E_WORKER_PORT_BASE", "19200"))
    database = setting("E2E_DB_NAME", "app_e2e_cluster")
    env = {
        **os.environ,
        "STACK": "e2e",
        "MODE": "local",
        "RUN_DIR": str(RUN / "stack"),
        "REPLICAS": setting("REPLICAS", "2"),
        "PORT_BASE": str(port_base),
        "WORKER_PORT_BASE": str(worker_base),
        "DB_NAME": database,
        "PG_HOST": "127.0.0.1",
        "PG_PORT": str(pair.primary_port),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(cluster.base_port),
        "REDIS_DB": "0",
        "REDIS_CLUSTER_NODES": cluster.nodes,
        "DATABASE_REPLICA_URL": pair.url(database, replica=True).replace(
            "postgresql://", "postgresql+asyncpg://", 1
        ),
        # The password-hash budget is per host, not per process: two users-api replicas with
        # the default of 2 each would let the edge drill's flood hold four hashes on this
        # two-core machine, every core, and starve the customer it measures.
        "USERS_PASSWORD_HASHES_IN_FLIGHT": setting("USERS_PASSWORD_HASHES_IN_FLIGHT", "1"),
        # What the drill needs to find (and bring back) what it breaks.
        "E2E_CLUSTER_PORT_BASE": str(cluster.base_port),
        "E2E_CLUSTER_DIR": str(cluster.directory),
        "E2E_CLUSTER_PG_PORT": str(pair.primary_port),
        "E2E_CLUSTER_PG_DIR": str(pair.directory),
    }
    env["GATEWAY_URL"] = f"http://127.0.0.1:{port_base}"  # what the suite's customers call
    for index, service in enumerate(("users", "orders", "notifications"), start=1):
        env[f"{service.upper()}_URL"] = f"http://127.0.0.1:{port_base + index}"
        env[f"{service.upper()}_WORKER_URL"] = f"http://127.0.0.1:{worker_base + index}"
    return env


def run(command: Sequence[str], env: dict[str, str], *, timeout: float) -> int:
    return subprocess.run(list(command), env=env, cwd=ROOT, timeout=timeout, check=False).returncode  # noqa: S603


def main(pytest_args: Sequence[str]) -> int:
    timings: list[tuple[str, float]] = []
    started = phase = time.monotonic()

    def lap(name: str) -> None:
        nonlocal phase
        timings.append((name, time.monotonic() - phase))
        phase = time.monotonic()

    cluster = LocalRedisCluster(
        free_port_run(int(setting("E2E_CLUSTER_PORT_BASE", "17000")), 6),
        replicas_per_primary=1,
        directory=RUN / "redis",
    )
    pg_port = free_port_run(int(setting("E2E_CLUSTER_PG_PORT", "17090")), 2)
    pair = LocalPostgresPair(pg_port, pg_port + 1, directory=private_directory("e2e-cluster-pg"))
    env = stack_environment(cluster, pair)
    stack = [str(ROOT / "scripts" / "stack.sh")]
    status = 1
    try:
        log(f"Redis Cluster (3 primaries + 3 replicas) on {cluster.nodes}")
        cluster.start()
        log(f"Postgres primary on {pair.primary_port}, streaming replica on {pair.replica_port}")
        pair.start()
        lap("stores up")
        log(f"Stack with REPLICAS={env['REPLICAS']} against them")
        if run([*stack, "up"], env, timeout=300) != 0:
            return 1
        lap("stack up")
        status = run([sys.executable, "-m", "pytest", "tests/e2e", *pytest_args], env, timeout=1800)
        lap("tests/e2e")
        if status == 0:
            status = run([*stack, "check-invariants"], env, timeout=120)
            lap("invariants")
        return status
    finally:
        run([*stack, "down"], env, timeout=120)
        pair.stop()
        cluster.stop()
        lap("teardown")
        total = time.monotonic() - started
        print("e2e-cluster timing: " + ", ".join(f"{name} {s:.1f} s" for name, s in timings))
        print(f"e2e-cluster: {'passed' if status == 0 else 'FAILED'} in {total:.1f} s")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
