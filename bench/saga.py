"""Saga load: the open-loop ladder of ``POST /orders`` steps, waiting for each step's
sagas to settle and reading their timestamps from Postgres."""

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from bench import procs
from bench.config import (
    KEEP_UP_SHARE,
    OVERLOAD_SETTLE_SECONDS,
    ROOT,
    STACK_CPU,
    SUSTAIN_P99_MS,
    TARGET_AT_RATE,
    BenchUser,
    Config,
    log,
)
from bench.counters import backend_counters, bus_summary, scrape_bus
from bench.loadgen import quantiles_ms
from bench.profiling import profile_report, profile_start


@dataclass(frozen=True)
class Rig:
    """What every saga step needs: the settings, the users placing orders, the clients of
    the stack and its stores, and the CPU tracker of its processes."""

    config: Config
    users: list[BenchUser]
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    redis: Redis
    cpu: procs.CpuTracker
    pids: dict[str, int]


async def run_loadgen(
    config: Config, rate: float, users: list[BenchUser], seconds: float
) -> dict[str, Any]:
    spec = {
        "url": config.orders_url,
        "rate": rate,
        "duration": seconds,
        "tokens": [user.token for user in users],
        "max_inflight": 1024,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(
        process.communicate(json.dumps(spec).encode()), timeout=seconds + 60
    )
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{stderr.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(stdout)
    return result


async def wait_settled(
    pool: asyncpg.Pool, order_ids: list[uuid.UUID], seconds: float
) -> tuple[int, int]:
    """Wait (bounded) until no order is PENDING and then no saga still waits; what is left."""
    deadline = time.monotonic() + seconds
    pending = waiting = len(order_ids)
    while time.monotonic() < deadline:
        pending = await pool.fetchval(
            "SELECT count(*) FROM orders.orders WHERE id = ANY($1::uuid[]) AND status = 'PENDING'",
            order_ids,
        )
        if pending == 0:
            break
        await asyncio.sleep(0.25)
    while time.monotonic() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM orders.sagas WHERE order_id = ANY($1::uuid[])"
            " AND state <> 'settled'",
            order_ids,
        )
        if waiting == 0:
            break
        await asyncio.sleep(0.25)
    return int(pending), int(waiting)


async def wait_all_settled(pool: asyncpg.Pool, seconds: float) -> int:
    """Before the invariants are checked: wait (bounded) until every saga has settled, so a
    load that fell behind is not mistaken for a broken invariant. What is left unsettled."""
    deadline = time.monotonic() + seconds
    waiting = await pool.fetchval("SELECT count(*) FROM orders.sagas WHERE state <> 'settled'")
    if waiting:
        log(f"waiting (at most {seconds:g} s) for {waiting} sagas to settle")
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        waiting = await pool.fetchval("SELECT count(*) FROM orders.sagas WHERE state <> 'settled'")
    if waiting:
        log(f"WARNING: {waiting} sagas still unsettled; the invariants may report them")
    return int(waiting)


async def probe_saga(client: httpx.AsyncClient, config: Config, user: BenchUser) -> str | None:
    """One order end to end before any load; the reason when the saga does not work."""
    headers = {"authorization": f"Bearer {user.token}"}
    response = await client.post(
        f"{config.orders_url}/orders",
        json={"items": [{"sku": "bench-probe", "quantity": 1, "unit_price_cents": 100}]},
        headers=headers,
    )
    if response.status_code != 202:
        return f"POST /orders answered {response.status_code}: {response.text[:200]}"
    order_id = response.json()["id"]
    deadline = time.monotonic() + 10
    status = "PENDING"
    while time.monotonic() < deadline:
        order = await client.get(f"{config.orders_url}/orders/{order_id}", headers=headers)
        status = order.json()["status"]
        if status != "PENDING":
            break
        await asyncio.sleep(0.2)
    if status != "APPROVED":
        return (
            f"a probe order stayed {status} for 10 s (are orders-worker and users-worker running"
            " and consuming? see .run/bench/logs)"
            if status == "PENDING"
            else f"a probe order ended {status}, not APPROVED"
        )
    return None


async def saga_step(
    rig: Rig, rate: float, *, settle_seconds: float | None = None, profile: bool = True
) -> dict[str, Any]:
    """One open-loop step at `rate` for the step's seconds; its figures once its sagas settled
    (waiting at most `settle_seconds`, the configured settle time by default)."""
    config, client, pool, redis, cpu = rig.config, rig.client, rig.pool, rig.redis, rig.cpu
    seconds = config.step_seconds
    bus_before = await scrape_bus(client, config)
    counters_before = await backend_counters(pool, redis)
    profiler = None
    if profile and config.profile and rate == config.profile_rate:
        profiler = await profile_start(config, rig.pids[config.profile], seconds)
    cpu_before, started = cpu.take(), time.monotonic()
    load = await run_loadgen(config, rate, rig.users, seconds)
    during_load = cpu.take()
    usage = during_load.percent_since(cpu_before, time.monotonic() - started)
    if profiler is not None:
        await asyncio.wait_for(profiler.wait(), timeout=60)
    orders = {uuid.UUID(order_id): (sent, latency) for order_id, sent, latency in load["orders"]}
    ids = list(orders)
    pending, waiting = await wait_settled(pool, ids, settle_seconds or config.settle_seconds)
    # CPU per saga: everything the stack spent from the first POST until the sagas settled
    # (the drain included), over the sagas approved. It travels between machines far better
    # than a rate does.
    settle_elapsed = time.monotonic() - started
    until_settled = cpu.take().percent_since(cpu_before, settle_elapsed)
    cpu_ms = {name: 10 * until_settled.get(name, 0.0) * settle_elapsed for name in STACK_CPU}
    bus = bus_summary(bus_before, await scrape_bus(client, config))
    counters_after = await backend_counters(pool, redis)
    per_order = {
        name: (counters_after[name] - counters_before[name]) / max(len(orders), 1)
        for name in counters_after
    }
    rows = await pool.fetch(
        "SELECT id, status, extract(epoch FROM created_at)::float8 AS created,"
        " extract(epoch FROM updated_at)::float8 AS updated"
        " FROM orders.orders WHERE id = ANY($1::uuid[])",
        ids,
    )
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    approved = [row for row in rows if row["status"] == "APPROVED"]
    window_start = min((sent for sent, _ in orders.values()), default=0.0)
    window_end = window_start + config.step_seconds
    in_window = sum(1 for row in approved if row["updated"] <= window_end)
    latency = quantiles_ms([row["updated"] - row["created"] for row in approved])
    end_to_end = quantiles_ms([row["updated"] - orders[row["id"]][0] for row in approved])
    errors = {status: n for status, n in load["statuses"].items() if status != "202"}
    completed_per_second = in_window / config.step_seconds
    problems = []
    if errors or load["skipped_inflight_cap"]:
        problems.append(f"{sum(errors.values()) + load['skipped_inflight_cap']} failed")
    if pending:
        problems.append(f"{pending} still PENDING")
    if len(approved) < len(rows):
        problems.append(f"{len(rows) - len(approved)} not APPROVED")
    if completed_per_second < KEEP_UP_SHARE * rate:
        problems.append(f"fell behind ({completed_per_second / rate:.1%})")
    if not approved or latency["p99"] >= SUSTAIN_P99_MS:
        problems.append(f"p99 >= {SUSTAIN_P99_MS:g} ms")
    step: dict[str, Any] = {
        "offered_per_second": rate,
        "planned": load["planned"],
        "skipped_inflight_cap": load["skipped_inflight_cap"],
        "sent": load["sent"],
        "send_rate_per_second": load["sent"] / max(load["send_window_seconds"], 1e-9),
        "accepted": len(orders),
        "http_errors": errors,
        "statuses": statuses,
        "still_pending_after_settle": pending,
        "sagas_unsettled_after_settle": waiting,
        "completed_per_second": completed_per_second,
        "drain_seconds": (max(row["updated"] for row in approved) - window_end)
        if approved
        else None,
        "post_to_approved_ms": latency,
        "scheduled_send_to_approved_ms": end_to_end,
        "post_response_ms": load["response_ms"],
        "bus": bus,
        # Approximate: Postgres backends publish their counters at most once a second.
        "per_order": {name: round(value, 2) for name, value in per_order.items()},
        "pg_sessions_opened": counters_after["pg_sessions"] - counters_before["pg_sessions"],
        "generator": {
            "schedule_lag_ms": load["lag_ms"],
            "cpu_percent_of_core": 100 * load["cpu_seconds"] / max(load["wall_seconds"], 1e-9),
        },
        "cpu_percent": {name: round(value, 1) for name, value in usage.items()},
        "cpu_ms_per_saga": round(sum(cpu_ms.values()) / len(approved), 2) if approved else None,
        "cpu_ms_per_saga_by_process": {
            name: round(value / len(approved), 2) for name, value in cpu_ms.items()
        }
        if approved
        else {},
        "sustained": not problems,
        "problems": problems,
    }
    if profiler is not None:
        step["profile"] = profile_report(config, f"saga at {rate:g} orders/s")
    return step


async def saga(
    rig: Rig, rates: tuple[float, ...], *, overload: bool, profile: bool = True
) -> dict[str, Any]:
    """The ladder at ``rates`` (stopping once the stack falls behind), then, with
    ``overload``, one step at twice the highest sustained rate. With ``profile``, the step at
    the profiled rate is profiled (BENCH_PROFILE)."""
    config, client = rig.config, rig.client
    broken = await probe_saga(client, config, rig.users[0])
    if broken is not None:
        log(f"saga: NOT MEASURED: {broken}")
        return {"measured": False, "reason": broken, "steps": []}
    bus_start = await scrape_bus(client, config)
    steps = await ladder(rig, rates, profile=profile)
    max_sustained = highest_sustained(steps)
    report: dict[str, Any] = {
        "measured": True,
        "load": f"open loop, {config.step_seconds:g} s a step, {len(rig.users)} users"
        " round-robin, one item of 100 cents an order",
        "steps": steps,
        "max_sustained_per_second": max_sustained,
        "bus": bus_summary(bus_start, await scrape_bus(client, config)),
    }
    if overload and steps:
        report["overload"] = await overload_step(rig, max_sustained, rates)
    return report


def highest_sustained(steps: list[dict[str, Any]]) -> float:
    """The highest rate of the ladder's sustained steps up to its first miss (0 if its first
    step missed). A step that passes above a missed one is the machine's noise at its edge,
    not a rate it sustains: 150/s missing and 200/s passing is 100/s sustained."""
    highest = 0.0
    for step in sorted(steps, key=lambda step: step["offered_per_second"]):
        if not step["sustained"]:
            break
        highest = step["offered_per_second"]
    return highest


async def ladder(rig: Rig, rates: tuple[float, ...], *, profile: bool) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for rate in rates:
        log(f"saga: {rate:g} orders/s offered for {rig.config.step_seconds:g} s ...")
        step = await saga_step(rig, rate, profile=profile)
        steps.append(step)
        lag = step["generator"]["schedule_lag_ms"]
        log(
            f"saga: {rate:g}/s -> {step['completed_per_second']:.1f} APPROVED/s, "
            f"p50 {step['post_to_approved_ms']['p50']:.1f} ms, "
            f"p99 {step['post_to_approved_ms']['p99']:.1f} ms; generator lag p99 "
            f"{lag['p99']:.2f} ms, CPU {step['generator']['cpu_percent_of_core']:.0f}%"
            + (f"; {', '.join(step['problems'])}" if step["problems"] else "")
        )
        behind = step["still_pending_after_settle"] or step["completed_per_second"] < 0.8 * rate
        stuck = step["still_pending_after_settle"] > step["accepted"] / 2
        # The target rate is always measured (its latency is a target), unless nothing moves.
        if stuck or (behind and rate >= TARGET_AT_RATE):
            log("saga: the stack did not keep up; higher rates skipped")
            break
    return steps


async def overload_step(
    rig: Rig, sustained_rate: float, rates: tuple[float, ...]
) -> dict[str, Any]:
    """Twice the highest sustained rate: admission (orders/admission.py) should refuse what
    the stack cannot take (503) and keep the accepted orders fast and every one settled.

    With no sustained rate (a busy machine), twice the lowest rate offered, said so."""
    base = sustained_rate or min(rates)
    rate = 2 * base
    log(f"saga: overload, {rate:g} orders/s (2x {base:g}/s) for {rig.config.step_seconds:g} s")
    step = await saga_step(rig, rate, settle_seconds=OVERLOAD_SETTLE_SECONDS, profile=False)
    statuses = {status: count for status, count in step["http_errors"].items()}
    refused = statuses.pop("503", 0)
    unsettled = step["still_pending_after_settle"] + step["sagas_unsettled_after_settle"]
    overload = {
        "base_rate_per_second": base,
        "base_is_sustained": bool(sustained_rate),
        "offered_per_second": rate,
        "offered": step["planned"],
        "accepted": step["accepted"],
        "refused_503": refused,
        "other_failures": sum(statuses.values()) + step["skipped_inflight_cap"],
        "accepted_post_to_approved_ms": step["post_to_approved_ms"],
        "accepted_scheduled_send_to_approved_ms": step["scheduled_send_to_approved_ms"],
        "order_statuses": step["statuses"],
        "all_accepted_settled": unsettled == 0,
        "step": step,
    }
    log(
        f"saga: overload: {overload['offered']} offered, {overload['accepted']} accepted,"
        f" {refused} refused (503), accepted p99 {step['post_to_approved_ms']['p99']:.0f} ms,"
        f" {'all settled' if unsettled == 0 else f'{unsettled} NOT settled'}"
    )
    return overload
