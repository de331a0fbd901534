"""Periodic's cadence: the busy interval, or the idle one after a run that found nothing."""

import pytest

from common.bus.periodic import Idle, Periodic
from common.testing.polling import eventually


async def _nothing() -> None:
    return None


def test_a_busy_run_waits_the_interval() -> None:
    periodic = Periodic("t", 0.5, _nothing, idle_interval_seconds=15.0)
    assert periodic.wait_after(None) == 0.5
    assert periodic.wait_after(3) == 0.5  # whatever a run returns, only Idle changes it


def test_an_idle_run_waits_the_idle_interval_or_until_work_comes_due() -> None:
    periodic = Periodic("t", 0.5, _nothing, idle_interval_seconds=15.0)
    assert periodic.wait_after(Idle()) == 15.0
    assert periodic.wait_after(Idle(due_in_seconds=4.0)) == 4.0
    assert periodic.wait_after(Idle(due_in_seconds=0.0)) == 0.5  # never sooner than busy


def test_without_an_idle_interval_idle_changes_nothing() -> None:
    periodic = Periodic("t", 2.0, _nothing)
    assert periodic.wait_after(Idle()) == 2.0
    assert periodic.wait_after(Idle(due_in_seconds=60.0)) == 2.0


async def test_the_loop_waits_the_idle_interval_after_an_idle_run() -> None:
    outcomes: list[Idle | None] = [None, None, Idle()]

    async def run() -> Idle | None:
        return outcomes.pop(0) if outcomes else None

    periodic = Periodic("t", 0.01, run, idle_interval_seconds=3600.0)

    async def runs() -> int:
        return periodic.runs

    periodic.start()
    try:
        await eventually(runs, until=lambda n: n >= 3, what="three busy-cadence runs")
        # At the busy cadence there would be ~20 more runs within the deadline; idle, none.
        with pytest.raises(AssertionError):
            await eventually(runs, until=lambda n: n > 3, timeout=0.2, what="a fourth run")
    finally:
        await periodic.stop()
