"""The gateway's cost: the read path through the gateway beside the direct one, same run.

``GET /users/{id}`` (own id, bearer token) with wrk, alternating direct (the users API's own
port) and through the gateway, equal rounds of each. Reported per side: requests/s, p50/p99;
and the gateway's own CPU per proxied request (its process's user+system time over the
through-gateway rounds, divided by their requests), and the p50 it adds.

    python -m bench.gateway --gateway-url http://127.0.0.1:28000 --users-url ... --gateway-pid N

``make bench`` calls :func:`compare` after its read path (bench/bench.py); run on its own, this
module signs up one user through the gateway first.
"""

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import httpx

from bench import procs, wrk

# DESIGN.md section 8 and issue 20: the gateway's own CPU per proxied request, and the p50 it
# may add at the read load.
TARGET_CPU_MS_PER_REQUEST = 0.4
TARGET_ADDED_P50_MS = 1.0


def _log(message: str) -> None:
    print(f"[bench gateway] {message}", flush=True)


async def compare(
    *,
    gateway_url: str,
    users_url: str,
    user_id: str,
    token: str,
    gateway_pid: int | None,
    connections: int,
    seconds: float,
    rounds: int,
    warmup_seconds: float,
) -> dict[str, Any]:
    """Direct and through-gateway rounds, alternated; the figures of each and the cost."""
    targets = {
        "direct": f"{users_url}/users/{user_id}",
        "gateway": f"{gateway_url}/users/{user_id}",
    }
    for name, url in targets.items():
        _log(f"warm-up {name} ({warmup_seconds:g} s)")
        await wrk.run(url, token=token, connections=connections, seconds=warmup_seconds)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for round_number in range(1, rounds + 1):
        for name, url in targets.items():
            cpu_before = procs.cpu_seconds(gateway_pid) if gateway_pid else None
            started = time.monotonic()
            result = await wrk.run(url, token=token, connections=connections, seconds=seconds)
            elapsed = time.monotonic() - started
            cpu_after = procs.cpu_seconds(gateway_pid) if gateway_pid else None
            gateway_cpu = (
                cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
            )
            runs[name].append(
                {
                    "requests_per_second": result.requests_per_second,
                    "requests": result.requests,
                    "latency_ms": result.latency_ms,
                    "errors": result.non_2xx + result.socket_errors,
                    "gateway_cpu_seconds": gateway_cpu,
                    "gateway_cpu_percent": 100 * gateway_cpu / elapsed if gateway_cpu else None,
                }
            )
            _log(
                f"{name} round {round_number}/{rounds}: {result.requests_per_second:,.0f} req/s,"
                f" p50 {result.latency_ms['p50']:.2f} ms, p99 {result.latency_ms['p99']:.2f} ms,"
                f" errors {result.non_2xx + result.socket_errors}"
            )
    return _summary(runs, connections, seconds, rounds)


def _summary(
    runs: dict[str, list[dict[str, Any]]], connections: int, seconds: float, rounds: int
) -> dict[str, Any]:
    def side(name: str) -> dict[str, Any]:
        done = runs[name]
        return {
            "requests_per_second": sum(r["requests_per_second"] for r in done) / len(done),
            "p50_ms": sum(r["latency_ms"]["p50"] for r in done) / len(done),
            "p99_ms": max(r["latency_ms"]["p99"] for r in done),
            "errors": sum(r["errors"] for r in done),
            "rounds": done,
        }

    direct, through = side("direct"), side("gateway")
    cpu_seconds = [r["gateway_cpu_seconds"] for r in runs["gateway"]]
    requests = sum(r["requests"] for r in runs["gateway"])
    cpu_ms = (
        1000 * sum(cpu_seconds) / max(requests, 1)
        if all(value is not None for value in cpu_seconds)
        else None
    )
    added_p50 = through["p50_ms"] - direct["p50_ms"]
    return {
        "endpoint": "GET /users/{id} (own id, bearer token), direct and through the gateway",
        "load": f"wrk -t1 -c{connections} -d{seconds:g}s --latency, {rounds} rounds alternated",
        "direct": direct,
        "gateway": through,
        "ratio": through["requests_per_second"] / direct["requests_per_second"],
        "gateway_cpu_ms_per_request": cpu_ms,
        "added_p50_ms": added_p50,
        "targets": {
            "gateway_cpu_ms_per_request": TARGET_CPU_MS_PER_REQUEST,
            "added_p50_ms": TARGET_ADDED_P50_MS,
        },
        "met": cpu_ms is not None
        and cpu_ms <= TARGET_CPU_MS_PER_REQUEST
        and added_p50 <= TARGET_ADDED_P50_MS,
    }


def gateway_url_beside(users_url: str) -> str:
    """Every stack puts the gateway on its port base, the users API on base + 1."""
    host, _, port = users_url.rpartition(":")
    return f"{host}:{int(port) - 1}"


async def _bench_user(gateway_url: str) -> tuple[str, str]:
    """A fresh user and a session, made through the gateway."""
    email = f"bench-gw-{uuid.uuid4().hex[:12]}@example.com"
    body = {"email": email, "password": "bench password 1", "name": "Bench"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        created = await client.post("/users", json={**body, "credit_limit_cents": 1000})
        created.raise_for_status()
        session = await client.post(
            "/users/sessions", json={"email": email, "password": body["password"]}
        )
        session.raise_for_status()
        return created.json()["id"], session.json()["token"]


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    user_id, token = await _bench_user(args.gateway_url)
    return await compare(
        gateway_url=args.gateway_url,
        users_url=args.users_url,
        user_id=user_id,
        token=token,
        gateway_pid=args.gateway_pid,
        connections=args.connections,
        seconds=args.seconds,
        rounds=args.rounds,
        warmup_seconds=args.warmup,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="The gateway's cost beside the direct read.")
    parser.add_argument("--gateway-url", default="http://127.0.0.1:28000")
    parser.add_argument("--users-url", default="http://127.0.0.1:28001")
    parser.add_argument("--gateway-pid", type=int, default=None)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=3.0)
    report = asyncio.run(_main(parser.parse_args()))
    for side in ("direct", "gateway"):
        for round_ in report[side].pop("rounds"):
            round_.pop("latency_ms", None)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
