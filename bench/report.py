"""The report: the target table and the text tables printed at the end of a run."""

import math
from typing import Any

from bench.config import (
    KEEP_UP_SHARE,
    PHASES,
    PROCESSES,
    STACK_CPU,
    SUSTAIN_P99_MS,
    TARGET_IDLE_PERCENT,
    TARGET_OVERLOAD_P99_MS,
)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "NOT MEASURED" if ok is None else "PASS" if ok else "MISS"


def render(report: dict[str, Any]) -> str:
    """The whole text report: each section in the order a reader wants it."""
    saga_report = report.get("saga", {})
    lines = header_section(report["meta"])
    if report.get("read_path"):
        lines += read_section(report["read_path"])
    lines += saga_section(saga_report)
    if saga_report.get("overload"):
        lines += overload_section(saga_report["overload"])
    if saga_report.get("measured"):
        lines += bus_section(saga_report["bus"])
    if report.get("comparison"):
        lines += database_section(report["comparison"], report.get("preloaded"))
    if report.get("idle"):
        lines += idle_section(report["idle"])
    lines += profile_section(report)
    lines += memory_section(report)
    lines += errors_section(report.get("stack_errors", {}))
    lines += targets_section(report["targets"])
    return "\n".join(lines)


def header_section(meta: dict[str, Any]) -> list[str]:
    return [
        "",
        f"== make bench  {meta['timestamp']}  commit {meta['commit']}"
        f"{' (dirty)' if meta['dirty'] else ''}"
        f"  {meta['cpus']} cores  (machine {meta['machine']['cpu_busy_percent_before']:.0f}% busy"
        f" before start, load {meta['machine']['loadavg_1m_before']:.2f}) ==",
    ]


def read_section(read: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Read path: {read['endpoint']}   [{read['load']}]",
        f"  {'':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'server CPU%':>12}"
        f" {'CPU ms/req':>11}",
    ]
    for name, process in (("service", "users-api"), ("baseline", "baseline")):
        entry = read[name]
        cpu = sum(r["cpu_percent"].get(process, 0.0) for r in entry["rounds"]) / len(
            entry["rounds"]
        )
        lines.append(
            f"  {name:10} {entry['requests_per_second']:9,.0f} {fmt(entry['p50_ms'], 2):>8}"
            f" {fmt(entry['p99_ms'], 2):>8} {entry['errors']:7d} {cpu:12.0f}"
            f" {entry['cpu_ms_per_request']:11.3f}"
        )
    cpu_ratio = read["baseline"]["cpu_ms_per_request"] / max(
        read["service"]["cpu_ms_per_request"], 1e-9
    )
    lines.append(
        f"  ratio service/baseline: {read['ratio']:.2f}x by req/s, {cpu_ratio:.2f}x by CPU per"
        " request (server: API process + Postgres + Redis)"
    )
    return lines


def saga_section(saga_report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Order saga: POST /orders -> APPROVED (p50/p99 from the orders' created_at/updated_at)",
    ]
    if not saga_report.get("measured"):
        lines.append(f"  NOT MEASURED: {saga_report.get('reason', 'skipped')}")
        return lines
    lines.append(f"  [{saga_report['load']}]")
    lines.append(
        f"  {'offered/s':>9} {'sent/s':>7} {'APPROVED/s':>10} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'e2e p99':>8} {'POST p99':>8} {'bus p50/p99 ms':>14} {'gen lag p99':>11}"
        f" {'gen CPU':>7}  verdict"
    )
    for step in saga_report["steps"]:
        latency, bus = step["post_to_approved_ms"], step["bus"]
        generator = step["generator"]
        lines.append(
            f"  {step['offered_per_second']:9g} {step['send_rate_per_second']:7.1f}"
            f" {step['completed_per_second']:10.1f} {fmt(latency['p50']):>7}"
            f" {fmt(latency['p99']):>7} {fmt(step['scheduled_send_to_approved_ms']['p99']):>8}"
            f" {fmt(step['post_response_ms']['p99']):>8}"
            f" {fmt(bus['p50_ms']):>6}/{fmt(bus['p99_ms']):<7}"
            f" {fmt(generator['schedule_lag_ms']['p99'], 2):>8} ms"
            f" {generator['cpu_percent_of_core']:6.0f}%  "
            + ("ok" if step["sustained"] else ", ".join(step["problems"]))
        )
    lines.append(
        f"  highest rate sustained (all APPROVED, >= {KEEP_UP_SHARE:.0%} of offered completed,"
        f" p99 < {SUSTAIN_P99_MS:g} ms): {saga_report['max_sustained_per_second']:g}/s"
    )
    lines.append(
        "  e2e p99 = scheduled send -> APPROVED (includes API queueing); POST p99 = HTTP"
        " response time seen by the generator"
    )
    lines.append(
        "  Work per order (approximate: pg_stat_database of app_bench, Redis INFO of the whole"
        " server):"
    )
    for step in saga_report["steps"]:
        work = step["per_order"]
        lines.append(
            f"    {step['offered_per_second']:9g}/s: {work['pg_commits']:.1f} Postgres commits,"
            f" {work['pg_rollbacks']:.2f} rollbacks, {work['redis_commands']:.1f} Redis"
            f" commands; {step['pg_sessions_opened']:.0f} Postgres sessions opened"
        )
    lines.append(
        "  CPU ms per APPROVED saga (from the first POST until settled; six processes,"
        " Postgres, Redis, irq):"
    )
    short_names = {
        name: name.replace("notifications", "notif").replace("worker", "wkr") for name in STACK_CPU
    }
    lines.append(
        "    "
        + f"{'offered/s':>9} {'total':>7} "
        + " ".join(f"{short_names[n]:>10}" for n in STACK_CPU)
    )
    for step in saga_report["steps"]:
        by_process = step["cpu_ms_per_saga_by_process"]
        lines.append(
            "    "
            + f"{step['offered_per_second']:9g} {fmt(step['cpu_ms_per_saga'], 2):>7} "
            + " ".join(f"{by_process.get(n, 0.0):10.2f}" for n in STACK_CPU)
        )
    lines.append("  CPU % of one core during each step:")
    names = [*PROCESSES, "postgres", "redis", "bench", "irq", "other", "machine"]
    short = {
        name: name.replace("notifications", "notif").replace("worker", "wkr") for name in names
    }
    lines.append("    " + f"{'offered/s':>9} " + " ".join(f"{short[n]:>10}" for n in names))
    for step in saga_report["steps"]:
        lines.append(
            "    "
            + f"{step['offered_per_second']:9g} "
            + " ".join(f"{step['cpu_percent'].get(name, 0.0):10.0f}" for name in names)
        )
    lines.append(
        "    (postgres: every backend on the machine; bench: this benchmark and its load"
        " generator; irq: kernel interrupt time, mostly loopback TCP; other: anything else;"
        " machine: % of all cores)"
    )
    return lines


def bus_section(bus: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Bus publish->handle, whole saga load, {bus['count']} messages"
        f" (bucket-interpolated from bus_handle_latency_seconds):"
        f" p50 {fmt(bus['p50_ms'])} ms, p99 {fmt(bus['p99_ms'])} ms",
    ]
    for key, entry in bus["by_type"].items():
        lines.append(
            f"  {key:45} n={entry['count']:6d}  p50 {fmt(entry['p50_ms']):>6} ms"
            f"  p99 {fmt(entry['p99_ms']):>6} ms"
        )
    for label, counts in (
        ("handler failures (retried)", bus["handler_failures"]),
        ("dead-lettered", bus["dead_lettered"]),
    ):
        if counts:
            lines.append(f"  {label}: " + ", ".join(f"{key} {n}" for key, n in counts.items()))
    return lines


def profile_section(report: dict[str, Any]) -> list[str]:
    read = report.get("read_path")
    lines: list[str] = []
    profiles = [read["profile"]] if read and "profile" in read else []
    steps = report.get("saga", {}).get("steps", [])
    profiles += [step["profile"] for step in steps if "profile" in step]
    for profile in profiles:
        lines += ["", f"py-spy of {profile['process']}, {profile['during']}:"]
        if "error" in profile:
            lines.append(f"  {profile['error']}")
            continue
        lines += [
            f"  {profile['busy_samples']} samples holding the GIL ({profile['file']}); by module: "
            + ", ".join(f"{module} {share:.0f}%" for module, share in profile["by_module"]),
            "  top own time:",
        ]
        lines += [f"  {share:5.1f}%  {frame}" for frame, share in profile["self"]]
        lines.append("  the project's functions, inclusive:")
        lines += [f"  {share:5.1f}%  {frame}" for frame, share in profile["project"]]
    return lines


def memory_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Peak memory, MiB (VmHWM: the process's lifetime peak; then the highest VmRSS sampled"
        f" every 0.5 s in each phase; {report['rss_samples']} samples):",
        f"  {'process':22} {'VmHWM':>7} " + " ".join(f"{phase:>8}" for phase in PHASES),
    ]
    for name, entry in report["rss"].items():
        if entry.get("not_running"):
            lines.append(f"  {name:22} not running")
            continue
        by_phase = entry["max_rss_mib_by_phase"]
        lines.append(
            f"  {name:22} {entry['peak_hwm_mib']:7.1f} "
            + " ".join(f"{fmt(by_phase.get(phase)):>8}" for phase in PHASES)
        )
    return lines


def errors_section(errors: dict[str, Any]) -> list[str]:
    if not errors:
        return []
    lines = ["", "WARNING: the stack logged errors during the run (figures may mislead):"]
    for name, entry in errors.items():
        lines.append(f"  {name}: {entry['count']} error lines, commonest:")
        lines += [f"    {n:6d}  {message[:150]}" for message, n in entry["top"]]
    return lines


def targets_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "Targets (docs/design.md section 8): this run's figure, PASS or MISS"]
    for row in rows:
        lines.append(f"  {row['target']:56} {row['value']:>24}  {verdict(row['ok'])}")
    return lines


def idle_section(idle: dict[str, Any]) -> list[str]:
    """Each process's CPU with no load, and the stack's total against its target."""
    usage = idle["cpu_percent_of_core"]
    lines = [
        "",
        f"Idle CPU, % of one core, over {idle['seconds']:g} s with no load (from"
        f" {idle.get('settle_seconds', 0):g} s after the saga load settled):",
    ]
    for name, value in usage.items():
        note = IDLE_NOTES.get(name, "")
        lines.append(f"  {name:22} {value:7.2f}{'  (' + note + ')' if note else ''}")
    lines.append(
        f"  {'stack total':22} {idle['stack_total_percent_of_core']:7.2f}"
        f"  (the processes, the bench database's backends and Redis;"
        f" target < {TARGET_IDLE_PERCENT:g})"
    )
    return lines


IDLE_NOTES = {
    "postgres-bench-db": "the backends connected to the bench database",
    "redis": "the whole server: other users of it count too",
    "postgres-server": "not in the total: every Postgres process of the machine",
    "irq": "not in the total: interrupts",
    "other": "not in the total: the rest of the machine",
    "machine": "not in the total: % of all cores",
}


def overload_section(overload: dict[str, Any]) -> list[str]:
    """What admission did with twice the sustainable load, and what the accepted orders saw."""
    base = f"{overload['base_rate_per_second']:g}/s " + (
        "sustained" if overload["base_is_sustained"] else "(no rate sustained: the lowest offered)"
    )
    latency = overload["accepted_post_to_approved_ms"]
    end_to_end = overload["accepted_scheduled_send_to_approved_ms"]
    return [
        "",
        f"Overload: {overload['offered_per_second']:g} orders/s offered (2x {base}) for one step",
        f"  offered {overload['offered']}, accepted (202) {overload['accepted']}, refused (503)"
        f" {overload['refused_503']}, other failures {overload['other_failures']}",
        f"  accepted orders POST->APPROVED p50 {fmt(latency['p50'])} ms, p99 {fmt(latency['p99'])}"
        f" ms (scheduled send -> APPROVED p99 {fmt(end_to_end['p99'])} ms);"
        f" target p99 < {TARGET_OVERLOAD_P99_MS:g} ms",
        f"  accepted orders' final statuses: {overload['order_statuses']};"
        + (" all settled" if overload["all_accepted_settled"] else " NOT all settled"),
    ]


def database_section(rows: list[dict[str, Any]], preloaded: dict[str, Any] | None) -> list[str]:
    """The figures issue 21 compares: on the empty database and, with --preload-orders N,
    after the preload, with the ratio and a verdict where a figure has a limit."""
    title = (
        f"Empty database vs preloaded with {preloaded['orders']:,} orders"
        f" ({sum(preloaded['preload']['rows'].values()):,} rows COPYed in"
        f" {preloaded['preload']['seconds']:.0f} s,"
        f" VACUUM (ANALYZE) {preloaded['preload'].get('vacuum_seconds', 0):.0f} s)"
        if preloaded
        else "Database figures, empty database (--preload-orders N adds a preloaded column)"
    )
    lines = [
        "",
        title + "; lists: their SQL straight to Postgres, random users (bench/scale_probe.py):",
        f"  {'figure':52} {'empty':>10} {'preloaded':>10} {'ratio':>7}  limits",
    ]
    for row in rows:
        if row["empty"] is None and row["preloaded"] is None:
            continue
        digits = 2 if row["unit"] in ("ms", "x") else 0 if row["unit"] in ("", "/s") else 1
        figure = f"{row['figure']}" + (f" ({row['unit']})" if row["unit"] else "")
        lines.append(
            f"  {figure:52} {fmt(row['empty'], digits):>10} {fmt(row['preloaded'], digits):>10}"
            f" {fmt(row['ratio'], 2):>7}  {limits_verdict(row, preloaded is not None)}"
        )
    return lines


def limits_verdict(row: dict[str, Any], preloaded: bool) -> str:
    """``<= 1.2x empty, < 20: PASS``; empty when the figure has no limit."""
    value = row["preloaded"] if preloaded else row["empty"]
    texts, checks = [], []
    if row["ratio_limit"] is not None and preloaded:
        texts.append(f"<= {row['ratio_limit']:g}x empty")
        if row["ratio"] is not None:
            checks.append(row["ratio"] <= row["ratio_limit"])
    if row["limit"] is not None:
        texts.append(f"< {row['limit']:g}" if row["limit"] else "0")
        if value is not None:
            checks.append(value < row["limit"] if row["limit"] else value == 0)
    if not texts:
        return ""
    return ", ".join(texts) + (f": {verdict(all(checks))}" if checks else "")
