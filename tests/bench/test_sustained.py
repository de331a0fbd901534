"""The bench's "highest rate sustained": the ladder up to its first miss, nothing above it."""

from typing import Any

from bench.saga import highest_sustained


def _steps(*verdicts: tuple[float, bool]) -> list[dict[str, Any]]:
    return [{"offered_per_second": rate, "sustained": ok} for rate, ok in verdicts]


def test_the_highest_step_of_an_unbroken_ladder() -> None:
    assert highest_sustained(_steps((20, True), (100, True), (150, True))) == 150


def test_a_step_passing_above_a_missed_one_does_not_count() -> None:
    ladder = _steps((20, True), (100, True), (150, False), (200, True), (300, False))
    assert highest_sustained(ladder) == 100


def test_nothing_sustained_when_the_first_step_misses() -> None:
    assert highest_sustained(_steps((20, False), (50, True))) == 0
