"""The target table: each target of docs/design.md section 8 with this run's figure and
PASS, MISS or NOT MEASURED (a part skipped or a stack that did not work)."""

from typing import Any

from bench import gateway
from bench.config import (
    TARGET_CPU_MS_PER_SAGA,
    TARGET_IDLE_PERCENT,
    TARGET_OVERLOAD_P99_MS,
    TARGET_READ_RATIO,
    TARGET_SAGAS_PER_SECOND,
)

Row = dict[str, Any]  # {"target": text, "value": text, "ok": True | False | None}


def row(target: str, value: str | None, ok: bool | None) -> Row:
    return {"target": target, "value": "-" if value is None else value, "ok": ok}


def targets(report: dict[str, Any]) -> list[Row]:
    saga = report.get("saga", {})
    steps = saga.get("steps", [])
    return [
        *(cpu_per_saga(steps, rate, limit) for rate, limit in TARGET_CPU_MS_PER_SAGA.items()),
        sustained(saga),
        overload(saga.get("overload")),
        read_path(report.get("read_path")),
        idle(report.get("idle")),
        gateway_cost(report.get("gateway")),
    ]


def cpu_per_saga(steps: list[dict[str, Any]], rate: float, limit: float) -> Row:
    target = f"CPU per saga <= {limit:g} ms at {rate:g}/s"
    step = next((s for s in steps if s["offered_per_second"] == rate), None)
    if step is None or step["cpu_ms_per_saga"] is None:
        return row(target, None, None)
    value = step["cpu_ms_per_saga"]
    return row(target, f"{value:.1f} ms", value <= limit)


def sustained(saga: dict[str, Any]) -> Row:
    target = f">= {TARGET_SAGAS_PER_SECOND} sagas/s sustained"
    if not saga.get("measured"):
        return row(target, None, None)
    best = saga["max_sustained_per_second"]
    return row(target, f"{best:g}/s", best >= TARGET_SAGAS_PER_SECOND)


def overload(result: dict[str, Any] | None) -> Row:
    target = f"at 2x sustained: accepted p99 < {TARGET_OVERLOAD_P99_MS / 1000:g} s, all settled"
    if result is None:
        return row(target, None, None)
    p99 = result["accepted_post_to_approved_ms"]["p99"]
    settled = result["all_accepted_settled"]
    value = f"{p99:.0f} ms, {result['refused_503']} refused" + ("" if settled else ", unsettled")
    return row(target, value, settled and p99 < TARGET_OVERLOAD_P99_MS)


def read_path(read: dict[str, Any] | None) -> Row:
    target = f"read path >= {TARGET_READ_RATIO:g}x baseline"
    if read is None:
        return row(target, None, None)
    return row(target, f"{read['ratio']:.2f}x", read["ratio"] >= TARGET_READ_RATIO)


def idle(result: dict[str, Any] | None) -> Row:
    target = f"idle stack < {TARGET_IDLE_PERCENT:g}% of a core"
    if result is None:
        return row(target, None, None)
    total = result["stack_total_percent_of_core"]
    return row(target, f"{total:.2f}%", total < TARGET_IDLE_PERCENT)


def gateway_cost(result: dict[str, Any] | None) -> Row:
    target = f"gateway <= {gateway.TARGET_CPU_MS_PER_REQUEST:g} ms CPU per request"
    if result is None or result["gateway_cpu_ms_per_request"] is None:
        return row(target, None, None)
    value = result["gateway_cpu_ms_per_request"]
    return row(target, f"{value:.2f} ms", value <= gateway.TARGET_CPU_MS_PER_REQUEST)
