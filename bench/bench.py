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

    python -m bench.bench [--rates 50,75,100,150,200,300,400] [--profile orders-worker] ...
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
from bench.config import FINAL_SETTLE_SECONDS, PROCESSES, STARTED, Config, log, parse_args
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
    cpu_groups = dict(process_groups)
    cpu_groups["postgres"] = procs.named("postgres")  # every database's backends
    cpu_groups["redis"] = procs.named("redis-server")
    # This process and its children: the load generator, wrk, py-spy.
    cpu_groups["bench"] = lambda: [os.getpid(), *procs.children(os.getpid())]
    cpu = procs.CpuTracker(cpu_groups)
    cpu.start()
    log_start = stacklogs.offsets(config.run_dir / "logs", PROCESSES)
    memory = procs.MemorySampler(pids)
    memory.start()
    config.results_dir.mkdir(parents=True, exist_ok=True)
    commit, dirty = git_state()
    report: dict[str, Any] = {
        "meta": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": commit,
            "dirty": dirty,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": machine,
            "config": {k: str(v) for k, v in asdict(config).items()},
        }
    }
    limits = httpx.Limits(max_connections=32)
    async with (
        httpx.AsyncClient(timeout=30.0, limits=limits) as client,
        asyncpg.create_pool(config.dsn, min_size=1, max_size=2) as pool,
        Redis.from_url(config.redis_url) as redis,
    ):
        report["meta"]["postgres"] = await postgres_headroom(pool)
        log(f"creating {config.users} users with sessions")
        memory.enter("sign-up")
        users = await create_users(client, config)
        if "read" in config.parts:
            memory.enter("read")
            report["read_path"] = await read_path(config, client, users[0], cpu, pids)
            report["gateway"] = await gateway.compare(  # bench/gateway.py: the gateway's cost
                gateway_url=gateway.gateway_url_beside(config.users_url),
                users_url=config.users_url,
                user_id=users[0].id,
                token=users[0].token,
                gateway_pid=supervised_pid(config, "gateway-api"),
                connections=config.connections,
                seconds=config.read_seconds,
                rounds=config.rounds,
                warmup_seconds=config.warmup_seconds,
            )
        if "saga" in config.parts:
            memory.enter("saga")
            rig = Rig(config, users, client, pool, redis, cpu, pids)
            report["saga"] = await saga(rig, config.rates, overload=config.overload)
            report["saga"]["unsettled_at_end"] = await wait_all_settled(pool, FINAL_SETTLE_SECONDS)
        if config.idle_seconds > 0:
            report["idle"] = await measure_idle(
                {**process_groups, **gateway_group(config)}, config.database, config.idle_seconds
            )
    await memory.stop()
    await cpu.stop()
    report["stack_errors"] = stacklogs.errors_since(config.run_dir / "logs", log_start)
    report["rss_samples"] = memory.samples
    report["rss"] = {
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
        report["rss"].setdefault(name, {"pid": None, "not_running": True})
    report["targets"] = targets(report)
    report["meta"]["wall_seconds"] = round(time.monotonic() - STARTED, 1)
    print(render(report), flush=True)
    stamp = report["meta"]["timestamp"].replace(":", "").replace("-", "")
    text = json.dumps(report, indent=2, default=str)
    for path in (config.results_dir / f"{stamp}.json", config.results_dir / "latest.json"):
        path.write_text(text + "\n")
    log(f"wrote {config.results_dir / f'{stamp}.json'} and latest.json")
    return 0


def main() -> None:
    config = parse_args()
    if config.preload_orders:
        counts = asyncio.run(preload.preload(config.dsn, config.preload_orders, months=6))
        log(preload.report(counts))
    sys.exit(asyncio.run(main_async(config)))


if __name__ == "__main__":
    main()
