"""Read-path load: ``GET /users/{id}`` on users-api against the plain asyncpg baseline,
with wrk, alternated rounds, each server's CPU."""

import asyncio
import contextlib
import signal
import sys
import time
from datetime import datetime
from typing import Any

import httpx

from bench import procs, wrk
from bench.config import ROOT, BenchUser, Config, log
from bench.profiling import profile_report, profile_start


async def start_baseline(config: Config, client: httpx.AsyncClient) -> asyncio.subprocess.Process:
    log_path = config.run_dir / "logs" / "baseline.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.baseline.app",
            "--dsn",
            config.dsn,
            "--port",
            str(config.baseline_port),
            cwd=ROOT,
            stdout=log_file,
            stderr=log_file,
        )
    (config.run_dir / "baseline.pid").write_text(str(process.pid))
    url = f"http://127.0.0.1:{config.baseline_port}/healthz"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.returncode is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url, timeout=1.0)).status_code == 200:
                return process
        await asyncio.sleep(0.2)
    await stop_process(process)
    raise SystemExit(f"the baseline did not start; see {log_path}")


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def same_answer(client: httpx.AsyncClient, config: Config, user: BenchUser) -> None:
    """The baseline must read what the service reads, or the comparison means nothing."""
    headers = {"authorization": f"Bearer {user.token}"}
    service = (await client.get(f"{config.users_url}/users/{user.id}", headers=headers)).json()
    baseline = (await client.get(f"http://127.0.0.1:{config.baseline_port}/users/{user.id}")).json()
    for record in (service, baseline):
        record["created_at"] = datetime.fromisoformat(record["created_at"].replace("Z", "+00:00"))
    if service != baseline:
        raise SystemExit(f"baseline and service disagree:\n  {service}\n  {baseline}")


async def read_path(
    config: Config,
    client: httpx.AsyncClient,
    user: BenchUser,
    cpu: procs.CpuTracker,
    pids: dict[str, int],
    *,
    profiled: bool = True,
) -> dict[str, Any]:
    profile: dict[str, Any] | None = None
    baseline = await start_baseline(config, client)
    try:
        await same_answer(client, config, user)
        targets = {
            "service": f"{config.users_url}/users/{user.id}",
            "baseline": f"http://127.0.0.1:{config.baseline_port}/users/{user.id}",
        }
        cpu.add("baseline", procs.fixed(baseline.pid))
        for name, url in targets.items():
            log(f"read path: warm-up {name} ({config.warmup_seconds:g} s)")
            await wrk.run(url, token=user.token, connections=8, seconds=config.warmup_seconds)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for round_number in range(1, config.rounds + 1):
            for name, url in targets.items():
                profiler = None
                if (
                    profiled
                    and config.profile == "users-api"
                    and name == "service"
                    and round_number == 1
                ):
                    profiler = await profile_start(
                        config, pids["users-api"], config.read_seconds - 1
                    )
                before, started = cpu.take(), time.monotonic()
                result = await wrk.run(
                    url,
                    token=user.token,
                    connections=config.connections,
                    seconds=config.read_seconds,
                )
                usage = cpu.take().percent_since(before, time.monotonic() - started)
                if profiler is not None:
                    await asyncio.wait_for(profiler.wait(), timeout=60)
                    profile = profile_report(config, "read path, service round 1")
                runs[name].append(
                    {
                        "requests_per_second": result.requests_per_second,
                        "requests": result.requests,
                        "latency_ms": result.latency_ms,
                        "non_2xx": result.non_2xx,
                        "socket_errors": result.socket_errors,
                        "cpu_percent": {k: round(v, 1) for k, v in usage.items()},
                    }
                )
                latency, errors = result.latency_ms, result.non_2xx + result.socket_errors
                log(
                    f"read path: {name} round {round_number}/{config.rounds}: "
                    f"{result.requests_per_second:,.0f} req/s, p50 {latency['p50']:.2f} ms,"
                    f" p99 {latency['p99']:.2f} ms, errors {errors}"
                )
    finally:
        cpu.remove("baseline")
        await stop_process(baseline)
        with contextlib.suppress(OSError):
            (config.run_dir / "baseline.pid").unlink()

    def summary(name: str) -> dict[str, Any]:
        rounds = runs[name]
        # The server side of a request: the API process (or the baseline), Postgres, Redis.
        server = ("users-api" if name == "service" else "baseline", "postgres", "redis")
        cpu_ms = [
            10 * sum(r["cpu_percent"].get(p, 0.0) for p in server) * config.read_seconds
            for r in rounds
        ]
        return {
            "cpu_ms_per_request": sum(cpu_ms) / max(sum(r["requests"] for r in rounds), 1),
            "requests_per_second": sum(r["requests_per_second"] for r in rounds) / len(rounds),
            "p50_ms": sum(r["latency_ms"]["p50"] for r in rounds) / len(rounds),
            "p99_ms": max(r["latency_ms"]["p99"] for r in rounds),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in rounds),
            "rounds": rounds,
        }

    service, base = summary("service"), summary("baseline")
    return {
        "endpoint": "GET /users/{id} (own id, bearer token)",
        "load": f"wrk -t1 -c{config.connections} -d{config.read_seconds:g}s --latency, "
        f"{config.rounds} rounds alternated, after {config.warmup_seconds:g} s warm-up each",
        "service": service,
        "baseline": base,
        "ratio": service["requests_per_second"] / base["requests_per_second"],
        **({"profile": profile} if profile else {}),
    }
