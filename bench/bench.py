"""`make bench`: measure the stack against its baseline; print one table, write it as JSON.

Runs against the stack `bench/run.sh` brings up (``STACK=bench``: its own ports, database
``app_bench`` and Redis DB, rate limits raised, logging at WARNING). What is measured and
how is in bench/README.md. Every load is bounded in count and time and goes to loopback.
This module only drives the run; the parts live by concern:

* load: ``readpath`` (wrk against users-api and the baseline), ``saga`` (the open-loop
  ladder, with ``loadgen``), ``gateway``, ``preload``;
* measurement: ``procs`` (CPU and memory from /proc), ``histograms`` and ``counters`` (bus
  metrics, Postgres and Redis counters), ``profiling`` (py-spy), ``stacklogs``;
* report: ``report`` (the target table and the text tables), JSON written here.

    python -m bench.bench [--rates 20,50,100] [--preload-orders N] [--profile orders-worker] ...
"""

import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from bench import gateway, preload, procs, stacklogs, wrk
from bench.compare import comparison
from bench.config import FINAL_SETTLE_SECONDS, PROCESSES, STARTED, Config, log, parse_args
from bench.database import database_figures
from bench.idle import measure_idle
from bench.readpath import read_path
from bench.report import render
from bench.saga import Rig, saga, wait_all_settled
from bench.stack import (
    create_users,
    gateway_group,
    git_state,
    machine_quiet_check,
    postgres_headroom,
    replica_pids,
    stack_pids,
    supervised_pid,
)
from bench.targets import targets


async def main_async(config: Config) -> int:
    if wrk.available() is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk); bench/run.sh does that")
    machine = machine_quiet_check()
    if machine["cpu_busy_percent_before"] > 20:
        log(
            f"WARNING: the machine was {machine['cpu_busy_percent_before']:.0f}% busy before the"
            " run; other work skews every figure"
        )
    pids = stack_pids(config)
    process_groups: procs.PidGroups = {
        name: procs.fixed(pid, *replica_pids(config, name)) for name, pid in pids.items()
    }
    cpu = procs.CpuTracker(cpu_groups(process_groups))
    cpu.start()
    log_start = stacklogs.offsets(config.run_dir / "logs", PROCESSES)
    memory = procs.MemorySampler(pids)
    memory.start()
    report: dict[str, Any] = {"meta": meta(config, machine)}
    limits = httpx.Limits(max_connections=32)
    async with (
        httpx.AsyncClient(timeout=30.0, limits=limits) as client,
        asyncpg.create_pool(config.dsn, min_size=1, max_size=4) as pool,
        Redis.from_url(config.redis_url) as redis,
    ):
        report["meta"]["postgres"] = await postgres_headroom(pool)
        log(f"creating {config.users} users with sessions")
        memory.enter("sign-up")
        users = await create_users(client, config)
        rig = Rig(config, users, client, pool, redis, cpu, pids)
        report |= await measure_pass(rig, memory, first=True)
        if config.preload_orders:
            report["preloaded"] = await preloaded_pass(rig, memory)
        report["comparison"] = comparison(report, report.get("preloaded", {}), config.compare_rates)
        if "saga" in config.parts:
            report["saga"]["unsettled_at_end"] = await wait_all_settled(pool, FINAL_SETTLE_SECONDS)
        if config.idle_seconds > 0:
            report["idle"] = await measure_idle(
                {**process_groups, **gateway_group(config)},
                config.database,
                seconds=config.idle_seconds,
                settle_seconds=config.idle_settle_seconds,
            )
    await memory.stop()
    await cpu.stop()
    report["stack_errors"] = stacklogs.errors_since(config.run_dir / "logs", log_start)
    report["rss_samples"] = memory.samples
    report["rss"] = memory_report(memory, pids)
    report["targets"] = targets(report)
    report["meta"]["wall_seconds"] = round(time.monotonic() - STARTED, 1)
    print(render(report), flush=True)
    write_results(config, report)
    return 0


def cpu_groups(process_groups: procs.PidGroups) -> procs.PidGroups:
    """The stack's processes, Postgres (every database's backends), Redis, and this process
    with its children (the load generator, wrk, py-spy)."""
    return {
        **process_groups,
        "postgres": procs.named("postgres"),
        "redis": procs.named("redis-server"),
        "bench": lambda: [os.getpid(), *procs.children(os.getpid())],
    }


def meta(config: Config, machine: dict[str, Any]) -> dict[str, Any]:
    commit, dirty = git_state()
    return {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "dirty": dirty,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": machine,
        "config": {k: str(v) for k, v in asdict(config).items()},
    }


async def measure_pass(rig: Rig, memory: procs.MemorySampler, *, first: bool) -> dict[str, Any]:
    """The figures of one state of the database. The first pass (empty) runs everything: the
    read path and the gateway, the whole saga ladder and the overload step; the preloaded
    pass the read path and the ladder at the compared rates only. Both end with the
    database figures (lists, sizes, a retention drop while sagas run). BENCH_PROFILE
    profiles the first pass only: a second profile would overwrite the first's file."""
    config = rig.config
    figures: dict[str, Any] = {}
    if "read" in config.parts:
        memory.enter("read")
        figures["read_path"] = await read_path(
            config, rig.client, rig.users[0], rig.cpu, rig.pids, profiled=first
        )
        if first:
            figures["gateway"] = await gateway_cost(rig)
    if "saga" in config.parts:
        memory.enter("saga")
        rates = config.rates if first else config.compare_rates
        figures["saga"] = await saga(rig, rates, overload=first and config.overload, profile=first)
        if figures["saga"]["measured"]:
            figures["database"] = await database_figures(rig, min(config.compare_rates))
    return figures


async def gateway_cost(rig: Rig) -> dict[str, Any]:
    """bench/gateway.py: the read path through the gateway beside the direct one."""
    config, user = rig.config, rig.users[0]
    return await gateway.compare(
        gateway_url=gateway.gateway_url_beside(config.users_url),
        users_url=config.users_url,
        user_id=user.id,
        token=user.token,
        gateway_pid=supervised_pid(config, "gateway-api"),
        connections=config.connections,
        seconds=config.read_seconds,
        rounds=config.rounds,
        warmup_seconds=config.warmup_seconds,
    )


async def preloaded_pass(rig: Rig, memory: procs.MemorySampler) -> dict[str, Any]:
    """COPY the history in (bench/preload.py), then measure again."""
    config = rig.config
    log(f"preload: {config.preload_orders:,} orders of history (COPY)")
    memory.enter("preload")
    counts = await preload.preload(config.dsn, config.preload_orders, months=6)
    log(preload.report(counts))
    figures = await measure_pass(rig, memory, first=False)
    return {
        "orders": config.preload_orders,
        "preload": {
            "rows": counts.rows,
            "seconds": counts.seconds,
            "vacuum_seconds": counts.vacuum_seconds,
        },
        **figures,
    }


def memory_report(memory: procs.MemorySampler, pids: dict[str, int]) -> dict[str, Any]:
    rss: dict[str, Any] = {
        name: {
            "pid": pid,
            "peak_hwm_mib": memory.hwm_kib.get(name, 0) / 1024,
            "max_rss_mib_by_phase": {
                phase: peaks.get(name, 0) / 1024 for phase, peaks in memory.max_rss_kib.items()
            },
        }
        for name, pid in pids.items()
    }
    for name in PROCESSES:
        rss.setdefault(name, {"pid": None, "not_running": True})
    return rss


def write_results(config: Config, report: dict[str, Any]) -> None:
    config.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["meta"]["timestamp"].replace(":", "").replace("-", "")
    text = json.dumps(report, indent=2, default=str)
    path = config.results_dir / f"{stamp}.json"
    for target in (path, config.results_dir / "latest.json"):
        target.write_text(text + "\n")
    log(f"wrote {path} and latest.json")


def main() -> None:
    sys.exit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
