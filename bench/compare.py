"""Empty against preloaded (issue 21): the same figures, side by side, with their ratio.

Each row: a figure, its value on the empty database, after the preload, the ratio
preloaded/empty, and the limits it has (``ratio_limit``: preloaded within that many times
empty; ``limit``: an absolute bound on the preloaded value).
"""

from typing import Any

from bench.config import TARGET_LIST_P99_MS, TARGET_PRELOADED_RATIO, TARGET_RETENTION_DROP_S

Row = dict[str, Any]
Figures = dict[str, Any]  # one pass: "read_path", "saga", "database"
MIB = 2**20


def comparison(empty: Figures, preloaded: Figures, rates: tuple[float, ...]) -> list[Row]:
    return [
        *saga_rows(empty, preloaded, rates),
        *read_rows(empty, preloaded),
        *list_rows(empty, preloaded),
        *size_rows(empty, preloaded),
        *drop_rows(empty, preloaded),
    ]


def dig(figures: Any, *path: str | float) -> Any:
    """``figures[path[0]][path[1]]...``, None where a part is missing (not measured)."""
    for key in path:
        if not isinstance(figures, dict) or key not in figures:
            return None
        figures = figures[key]
    return figures


def row(
    figure: str,
    pair: tuple[float | None, float | None],
    unit: str,
    *,
    ratio_limit: float | None = None,
    limit: float | None = None,
) -> Row:
    empty, preloaded = pair
    ratio = preloaded / empty if empty and preloaded is not None else None
    return {
        "figure": figure,
        "unit": unit,
        "empty": empty,
        "preloaded": preloaded,
        "ratio": ratio,
        "ratio_limit": ratio_limit,
        "limit": limit,
    }


def both(empty: Figures, preloaded: Figures, *path: str | float) -> tuple[Any, Any]:
    return dig(empty, *path), dig(preloaded, *path)


def scaled(pair: tuple[Any, Any], factor: float) -> tuple[float | None, float | None]:
    first, second = pair
    return (
        None if first is None else first * factor,
        None if second is None else second * factor,
    )


def failed(
    partitions: tuple[Any, Any], errors: tuple[Any, Any]
) -> tuple[float | None, float | None]:
    """1 where the drop failed, 0 where it worked, None where it was not measured."""
    first, second = (
        None if partition is None else float(error is not None)
        for partition, error in zip(partitions, errors, strict=True)
    )
    return first, second


def steps_by_rate(figures: Figures) -> dict[str, Any]:
    steps = dig(figures, "saga", "steps") or []
    return {"steps": {step["offered_per_second"]: step for step in steps}}


def saga_rows(empty: Figures, preloaded: Figures, rates: tuple[float, ...]) -> list[Row]:
    before, after = steps_by_rate(empty), steps_by_rate(preloaded)
    rows = []
    for rate in rates:
        rows.append(
            row(
                f"CPU per saga at {rate:g}/s",
                both(before, after, "steps", rate, "cpu_ms_per_saga"),
                "ms",
                ratio_limit=TARGET_PRELOADED_RATIO,
            )
        )
        for quantile in ("p50", "p99"):
            rows.append(
                row(
                    f"POST->APPROVED {quantile} at {rate:g}/s",
                    both(before, after, "steps", rate, "post_to_approved_ms", quantile),
                    "ms",
                )
            )
    return rows


def read_rows(empty: Figures, preloaded: Figures) -> list[Row]:
    return [
        row(
            "read path req/s",
            both(empty, preloaded, "read_path", "service", "requests_per_second"),
            "/s",
        ),
        row("read path / baseline", both(empty, preloaded, "read_path", "ratio"), "x"),
    ]


def list_rows(empty: Figures, preloaded: Figures) -> list[Row]:
    names = dig(preloaded, "database", "lists_ms") or dig(empty, "database", "lists_ms") or {}
    return [
        row(
            f"p99 {name}",
            both(empty, preloaded, "database", "lists_ms", name, "p99"),
            "ms",
            ratio_limit=TARGET_PRELOADED_RATIO,
            limit=TARGET_LIST_P99_MS,
        )
        for name in names
    ]


def size_rows(empty: Figures, preloaded: Figures) -> list[Row]:
    names = dig(preloaded, "database", "sizes") or dig(empty, "database", "sizes") or {}
    rows = []
    for name in names:
        for part in ("table", "index"):
            pair = both(empty, preloaded, "database", "sizes", name, f"{part}_bytes")
            mib = scaled(pair, 1 / MIB)
            rows.append(row(f"size {name} ({part}{'es' if part == 'index' else ''})", mib, "MiB"))
    return rows


def drop_rows(empty: Figures, preloaded: Figures) -> list[Row]:
    def drop(*path: str) -> tuple[Any, Any]:
        return both(empty, preloaded, "database", "retention_drop", *path)

    milliseconds = scaled(drop("seconds"), 1000)
    return [
        row("retention drop: partition rows", drop("rows"), ""),
        row(
            "retention drop: time",
            milliseconds,
            "ms",
            limit=1000 * TARGET_RETENTION_DROP_S,
        ),
        row("retention drop: backends waiting", drop("most_backends_waiting"), "", limit=0),
        row(
            "retention drop: failed (every try)",
            failed(drop("partition"), drop("error")),
            "",
            limit=0,
        ),
        row("retention drop: saga p99 meanwhile", drop("saga_post_to_approved_ms", "p99"), "ms"),
    ]
