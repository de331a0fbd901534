"""``common.backoff``: the exponential delay and its two jitters, the one backoff of the bus
consumer, the saga's re-sends and webhook deliveries."""

import pytest

from common.backoff import equal_jitter, exponential, full_jitter


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
