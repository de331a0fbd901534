"""The orders worker handles exactly what the contracts say the orders group consumes."""

from common.testing.contracts import assert_handles_what_contracts_name
from orders.consumers import handlers
from orders.settings import Settings


def test_the_worker_handles_what_the_contracts_name() -> None:
    assert_handles_what_contracts_name("orders", handlers(Settings()))
