"""Prometheus histograms scraped before and after a load: deltas and quantiles.

Quantiles are bucket-interpolated exactly as PromQL's ``histogram_quantile`` does: find the
bucket holding the rank, interpolate linearly inside it (from 0 for the first bucket). So a
quantile is only as fine as the buckets: ``bus_handle_latency_seconds`` has bounds 1, 2.5, 5,
10, 25, 50, 100, 250 ms, ...
"""

import math

import httpx
from prometheus_client.parser import text_string_to_metric_families

# (label values that identify one series, e.g. ("orders", "users.CreditReserved")) -> le -> count
Series = dict[tuple[str, ...], dict[float, float]]


def parse_histogram(text: str, name: str, labels: tuple[str, ...]) -> Series:
    """The cumulative bucket counts of histogram ``name``, per combination of ``labels``."""
    series: Series = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            key = tuple(sample.labels.get(label, "") for label in labels)
            series.setdefault(key, {})[float(sample.labels["le"])] = float(sample.value)
    return series


def parse_counter(text: str, name: str, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """The values of counter ``name`` (``name_total`` in the text), per ``labels``."""
    values: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_total":
                values[tuple(sample.labels.get(label, "") for label in labels)] = sample.value
    return values


async def fetch(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url, timeout=5.0)
    response.raise_for_status()
    return response.text


def delta(before: Series, after: Series) -> Series:
    """What was observed between two scrapes (counters only grow while the process lives)."""
    return {
        key: {le: count - before.get(key, {}).get(le, 0.0) for le, count in buckets.items()}
        for key, buckets in after.items()
    }


def merge(*series: Series) -> dict[float, float]:
    """All series summed into one set of cumulative buckets."""
    merged: dict[float, float] = {}
    for one in series:
        for buckets in one.values():
            for le, count in buckets.items():
                merged[le] = merged.get(le, 0.0) + count
    return merged


def count(buckets: dict[float, float]) -> int:
    return round(buckets.get(math.inf, 0.0))


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of cumulative buckets (seconds), or None without observations.

    Above the highest finite bound the answer is that bound (a floor, as in PromQL).
    """
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        cumulative = buckets[bound]
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            if cumulative == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                cumulative - lower_count
            )
        lower_bound, lower_count = bound, cumulative
    return lower_bound
