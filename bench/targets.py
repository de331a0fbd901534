"""The target table: each target of docs/design.md section 8 with this run's figure and
PASS, MISS or NOT MEASURED (a part skipped or a stack that did not work)."""

from typing import Any

from bench import gateway
from bench.config import (
    TARGET_CPU_MS_PER_SAGA,
    TARGET_IDLE_PERCENT,
    TARGET_LIST_P99_MS,
    TARGET_OVERLOAD_P99_MS,
    TARGET_PRELOADED_RATIO,
    TARGET_READ_RATIO,
    TARGET_RETENTION_DROP_S,
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
        *database(report.get("comparison", []), preloaded="preloaded" in report),
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


def database(rows: list[dict[str, Any]], *, preloaded: bool) -> list[Row]:
    """Issue 21: the preloaded database against the empty one (NOT MEASURED without a
    preload), the lists' p99 and a retention drop (on the preloaded database if any)."""
    column = "preloaded" if preloaded else "empty"
    where = "preloaded" if preloaded else "empty db"

    def worst(prefix: str, key: str) -> tuple[str, float] | None:
        found = [(r["figure"], r[key]) for r in rows if r["figure"].startswith(prefix)]
        measured = [(figure, value) for figure, value in found if value is not None]
        return max(measured, key=lambda item: item[1]) if measured else None

    cpu_ratio = worst("CPU per saga", "ratio") if preloaded else None
    list_ratio = worst("p99 ", "ratio") if preloaded else None
    list_p99 = worst("p99 ", column)
    drop = {r["figure"]: r[column] for r in rows if r["figure"].startswith("retention drop")}
    drop_ms, waiting = (
        drop.get("retention drop: time"),
        drop.get("retention drop: backends waiting"),
    )
    drop_failed = drop.get("retention drop: failed (every try)")
    ratio = TARGET_PRELOADED_RATIO
    return [
        row(
            f"preloaded: CPU per saga <= {ratio:g}x empty",
            cpu_ratio and f"{cpu_ratio[1]:.2f}x ({cpu_ratio[0].removeprefix('CPU per saga ')})",
            cpu_ratio and cpu_ratio[1] <= ratio,
        ),
        row(
            f"preloaded: list p99 <= {ratio:g}x empty",
            list_ratio and f"{list_ratio[1]:.2f}x",
            list_ratio and list_ratio[1] <= ratio,
        ),
        row(
            f"list p99 < {TARGET_LIST_P99_MS:g} ms ({where})",
            list_p99 and f"{list_p99[1]:.1f} ms",
            list_p99 and list_p99[1] < TARGET_LIST_P99_MS,
        ),
        row(
            f"retention drop < {TARGET_RETENTION_DROP_S:g} s, no saga waiting ({where})",
            None
            if drop_ms is None
            else f"{drop_ms:.0f} ms, {waiting} waiting" + (", FAILED" if drop_failed else ""),
            None
            if drop_ms is None
            else drop_ms < 1000 * TARGET_RETENTION_DROP_S and waiting == 0 and not drop_failed,
        ),
    ]
