"""Fault drills: each fault strikes while a burst of orders from several users is in flight.

Redis restarted empty, Postgres restarted, Postgres unreachable for a minute, and kill -9 of
each of the six processes. After each, ``harness.verify`` checks what a customer and an
operator would: every accepted order final, credit reserved equal to APPROVED totals, one
notification per outcome, no answer but 2xx/4xx/503, ``check-invariants`` clean (the full list
is in ``harness``'s docstring). Each drill's figures are printed at the end of the run and
written to ``.run/<stack>/drills.json``.

The Postgres and Redis drills need the stack's private servers (``make test`` starts them with
``scripts/infra.py``); the process drills need ``scripts/stack.sh`` control of the stack.
"""

import pytest

from .harness import (
    PROCESSES,
    Figures,
    infra_available,
    postgres_outage,
    postgres_restarted,
    process_killed,
    redis_restarted_empty,
    run_drill,
    stack_control_allowed,
)

needs_infra = pytest.mark.skipif(
    not infra_available(), reason="needs the stack's own Postgres and Redis (scripts/infra.py)"
)
needs_control = pytest.mark.skipif(
    not stack_control_allowed(), reason="STACK_CONTROL=0: this stack's processes are not ours"
)
OUTAGE_SECONDS = 60.0


def assert_clean(figures: Figures) -> None:
    if figures.violations:
        listed = "\n  ".join(figures.violations[:25])
        pytest.fail(f"{figures.summary()}\n  {listed}", pytrace=False)


@needs_infra
async def test_redis_restarted_empty_mid_burst():
    assert_clean(await run_drill("redis restarted empty", redis_restarted_empty()))


@needs_infra
async def test_postgres_restarted_mid_burst():
    assert_clean(await run_drill("postgres restarted", postgres_restarted()))


@needs_infra
async def test_postgres_unreachable_for_a_minute_mid_burst():
    figures = await run_drill(
        f"postgres down {OUTAGE_SECONDS:.0f}s",
        postgres_outage(OUTAGE_SECONDS),
        settle_timeout=120.0,
    )
    assert_clean(figures)


@needs_control
@pytest.mark.parametrize("process", PROCESSES)
async def test_process_killed_mid_burst(process: str):
    figures = await run_drill(
        f"kill -9 {process}", process_killed(process), shoppers=4, orders_each=10
    )
    assert_clean(figures)
