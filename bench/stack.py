"""The bench stack as the benchmark sees it: its pids, the machine's load, Postgres
headroom, the users that place orders, and the commit being measured."""

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import procs
from bench.config import PROCESSES, ROOT, SERVICES, BenchUser, Config, log
from common.settings import ServiceSettings

# Each pool bound: its variable (after the service's prefix) and its default.
_DEFAULTS = ServiceSettings.model_construct()
POOL_SETTINGS = {
    "DB_POOL_SIZE": _DEFAULTS.db.pool_size,
    "DB_MAX_OVERFLOW": _DEFAULTS.db.max_overflow,
    "WORKER_DB_POOL_SIZE": _DEFAULTS.worker_db.pool_size,
    "WORKER_DB_MAX_OVERFLOW": _DEFAULTS.worker_db.max_overflow,
}


def supervised_pid(config: Config, name: str) -> int | None:
    """A process's pid from the bench stack's supervisord; None when it does not run."""
    result = subprocess.run(  # noqa: S603 - our own venv's supervisorctl, fixed arguments
        [
            str(ROOT / ".venv" / "bin" / "supervisorctl"),
            "-c",
            str(config.run_dir / "supervisord.conf"),
            "pid",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    pid = result.stdout.strip()
    return int(pid) if pid.isdigit() and pid != "0" else None


def replica_pids(config: Config, name: str) -> list[int]:
    """The pids of a process's other slots under ``REPLICAS=n`` (``users-api-2``...), so
    that CPU per saga counts every replica, not only the first."""
    slots = (supervised_pid(config, f"{name}-{slot}") for slot in range(2, 10))
    return [pid for pid in slots if pid is not None]


def stack_pids(config: Config) -> dict[str, int]:
    """The pid of each of the six processes that runs (slot 1 under ``REPLICAS=n``)."""
    pids = {}
    for name in PROCESSES:
        pid = supervised_pid(config, name)
        if pid is None:
            log(f"WARNING: {name} is not running in the bench stack")
            continue
        pids[name] = pid
        if procs.children(int(pid)):
            log(f"note: {name} (pid {pid}) has child processes; only its own memory is counted")
    return pids


def machine_quiet_check() -> dict[str, Any]:
    """How busy the machine was just before the run: other work skews every figure."""
    first = procs.machine_cpu()
    time.sleep(1.0)
    second = procs.machine_cpu()
    busy = 100 * (second[0] - first[0]) / max(second[1] - first[1], 1e-9)
    load1 = float(Path("/proc/loadavg").read_text().split()[0])
    return {"cpu_busy_percent_before": round(busy, 1), "loadavg_1m_before": load1}


async def postgres_headroom(pool: asyncpg.Pool) -> dict[str, Any]:
    """Can Postgres take every connection the stack may open? (three APIs' and three
    workers' pools, each size + overflow: common.db.PoolBounds, the defaults unless set)."""
    limit = int(await pool.fetchval("SHOW max_connections"))
    in_use = int(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND datname IS DISTINCT FROM current_database()"
        )
    )
    may_open = 0
    for service in SERVICES:
        prefix = service.upper()
        for variable, default in POOL_SETTINGS.items():
            may_open += int(os.environ.get(f"{prefix}_{variable}", default))
    if in_use + may_open > limit:
        log(
            f"WARNING: the stack's pools may open up to {may_open} Postgres connections and"
            f" other databases use {in_use}, over max_connections {limit}: under overload,"
            " expect 'too many clients' errors"
        )
    return {"max_connections": limit, "others_in_use": in_use, "stack_pools_may_open": may_open}


async def create_users(client: httpx.AsyncClient, config: Config) -> list[BenchUser]:
    """Many users with big credit limits (every order is approved), each with a session."""
    run_id = uuid.uuid4().hex[:8]
    # Password hashing is CPU-bound (argon2id) and there are two cores: more at once is no
    # faster, and each hash in flight holds 19 MiB in the users API.
    gate = asyncio.Semaphore(2)

    async def one(index: int) -> BenchUser:
        email = f"bench-{run_id}-{index}@example.com"
        password = f"bench-password-{run_id}"
        async with gate:
            created = await client.post(
                f"{config.users_url}/users",
                json={
                    "email": email,
                    "password": password,
                    "name": f"Bench {index}",
                    "credit_limit_cents": 100_000_000,
                },
            )
            created.raise_for_status()
            session = await client.post(
                f"{config.users_url}/users/sessions", json={"email": email, "password": password}
            )
            session.raise_for_status()
        return BenchUser(id=created.json()["id"], token=session.json()["token"])

    return list(await asyncio.gather(*(one(index) for index in range(config.users))))


def git_state() -> tuple[str, bool]:
    def git(*args: str) -> str:
        result = subprocess.run(  # noqa: S603 - fixed git arguments
            ["git", *args],  # noqa: S607 - git from PATH
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip()

    return git("rev-parse", "--short", "HEAD") or "unknown", bool(git("status", "--porcelain"))


def gateway_group(config: Config) -> procs.PidGroups:
    """The gateway's process as a CPU group, when the bench stack runs one."""
    pid = supervised_pid(config, "gateway-api")
    return {} if pid is None else {"gateway-api": procs.fixed(pid)}
