"""The notifications worker handles exactly what the contracts say its group consumes."""

from redis.asyncio import Redis

from common.testing.contracts import assert_handles_what_contracts_name
from notifications.consumers import handlers
from notifications.live import LivePublisher
from notifications.service import Fanout


def test_the_worker_handles_what_the_contracts_name() -> None:
    fanout = Fanout(LivePublisher(Redis()), wake_dispatcher=lambda: None)  # never connects
    assert_handles_what_contracts_name("notifications", handlers(fanout))
