"""The saga timer's idle bound: no saga comes due sooner than the shortest deadline."""

from orders.service import shortest_deadline_seconds
from orders.settings import Settings


def test_the_shortest_deadline_is_the_smallest_timeout_setting() -> None:
    settings = Settings(
        saga={
            "credit_timeout_seconds": 30,
            "stock_timeout_seconds": 20,
            "release_timeout_seconds": 7,
            "notification_timeout_seconds": 60,
        }
    )
    assert shortest_deadline_seconds(settings) == 7


def test_the_cap_on_stretched_deadlines_bounds_it_too() -> None:
    settings = Settings(saga={"release_timeout_seconds": 7, "max_timeout_seconds": 3})
    assert shortest_deadline_seconds(settings) == 3
