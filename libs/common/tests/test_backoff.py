"""``common.backoff``: the exponential delay, its two jitters and the retry loop, the one
backoff of the bus consumer, the saga's re-sends, webhook deliveries, migrations and partition
DDL."""

import pytest

from common.backoff import equal_jitter, exponential, full_jitter, retrying


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (60, 10.0), (5000, 10.0)],
)
def test_exponential_doubles_from_base_up_to_the_cap(attempt: int, expected: float):
    assert exponential(attempt, base=0.5, cap=10.0) == expected


def test_another_factor_stretches_by_it():
    assert [exponential(n, base=30.0, cap=600.0, factor=1.5) for n in range(3)] == [
        30.0,
        45.0,
        67.5,
    ]
    assert exponential(100, base=30.0, cap=600.0, factor=1.5) == 600.0


def test_a_factor_of_one_never_grows():
    assert exponential(7, base=3.0, cap=600.0, factor=1.0) == 3.0


def test_a_negative_attempt_is_the_first():
    assert exponential(-1, base=0.5, cap=10.0) == 0.5


def test_the_cap_bounds_even_the_first_delay():
    assert exponential(0, base=5.0, cap=1.0) == 1.0


def test_full_jitter_spreads_over_the_whole_delay():
    delays = [full_jitter(4.0) for _ in range(500)]
    assert all(0.0 <= delay <= 4.0 for delay in delays)
    assert min(delays) < 1.0
    assert max(delays) > 3.0


def test_equal_jitter_stays_in_the_upper_half():
    delays = [equal_jitter(4.0) for _ in range(500)]
    assert all(2.0 <= delay <= 4.0 for delay in delays)
    assert min(delays) < 2.5
    assert max(delays) > 3.5


class Conflict(Exception):
    pass


async def test_retrying_runs_again_after_a_retryable_failure_and_says_so():
    outcomes: list[Exception | str] = [Conflict("a"), Conflict("b"), "done"]
    heard: list[tuple[str, int]] = []

    async def work() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = await retrying(
        work,
        attempts=5,
        retryable=lambda error: isinstance(error, Conflict),
        base=0.001,
        cap=0.01,
        before_retry=lambda error, attempt, _: heard.append((str(error), attempt)),
    )
    assert result == "done"
    assert heard == [("a", 1), ("b", 2)]


async def test_retrying_raises_at_once_what_is_not_retryable_and_the_last_failure():
    calls = 0

    async def fails(error: Exception) -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(ValueError, match="not a conflict"):
        await retrying(
            lambda: fails(ValueError("not a conflict")),
            attempts=5,
            retryable=lambda error: isinstance(error, Conflict),
            base=0.001,
            cap=0.01,
        )
    assert calls == 1
    calls = 0
    with pytest.raises(Conflict):
        await retrying(
            lambda: fails(Conflict()),
            attempts=3,
            retryable=lambda error: isinstance(error, Conflict),
            base=0.001,
            cap=0.01,
        )
    assert calls == 3
