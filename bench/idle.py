"""Idle CPU (issue 19): what the whole stack costs when nobody uses it.

With the stack up and no load (after the saga load has settled), each process's CPU time
is read from /proc over a quiet window, as percent of one core: the six processes, the
gateway, the Postgres backends of the bench database, and Redis. Their sum is the figure
with a target (< 3% of a core): polling loops, timers and health checks that tick while
nothing happens cost every deployment all day. Postgres as a whole server (its background
processes and every other database) is shown beside it, for a machine shared with others.
"""

import asyncio
from typing import Any

from bench import procs
from bench.config import log

# Shown, but not the stack's own: the whole Postgres server, interrupts, everything else.
NOT_IN_TOTAL = ("postgres-server", "irq", "other", "machine")


async def measure_idle(
    groups: procs.PidGroups, database: str, *, seconds: float, settle_seconds: float
) -> dict[str, Any]:
    """CPU % of one core of each process over ``seconds`` of no load, and the stack's total.

    The window starts ``settle_seconds`` after the load: the loops that speed up while work
    is pending (reclaim, sweepers, the webhook dispatcher) are back at their idle cadence by
    then, and idle cost is that steady state, not the tail of the load."""
    idle_groups: procs.PidGroups = {
        **groups,
        "postgres-bench-db": procs.postgres_backends_of(database),
        "postgres-server": procs.named("postgres"),
        "redis": procs.named("redis-server"),
    }
    log(f"idle: {settle_seconds:g} s quiet, then the stack's CPU with no load for {seconds:g} s")
    await asyncio.sleep(settle_seconds)
    before = procs.CpuSnapshot.take(idle_groups)
    started = asyncio.get_running_loop().time()
    await asyncio.sleep(seconds)
    elapsed = asyncio.get_running_loop().time() - started
    usage = procs.CpuSnapshot.take(idle_groups).percent_since(before, elapsed)
    total = sum(value for name, value in usage.items() if name not in NOT_IN_TOTAL)
    log(f"idle: the stack used {total:.2f}% of a core")
    return {
        "seconds": round(elapsed, 1),
        "settle_seconds": settle_seconds,
        "cpu_percent_of_core": {name: round(value, 2) for name, value in usage.items()},
        "stack_total_percent_of_core": round(total, 2),
    }
