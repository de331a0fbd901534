"""The ``notifications-worker`` entry point.

* bus consumer: order outcomes and sign-ups become notifications (``consumers.py``); once a
  unit of work commits, its new notifications are PUBLISHed to the live streams and the
  webhook dispatcher is woken (``service.Fanout``);
* the webhook dispatcher (``deliveries.Dispatcher``) POSTs queued deliveries, with retries
  and a circuit breaker per endpoint. It runs for the worker's whole life (the worker's
  health check covers it); on SIGTERM it finishes the attempts in flight while the
  consumer finishes its messages.
"""

import asyncio

from common.bus import Handlers
from common.contracts import UserRegistered
from common.worker import WorkerContext, WorkerSpec, run_worker
from notifications.consumers import handlers
from notifications.deliveries import Dispatcher
from notifications.live import LivePublisher
from notifications.models import PARTITIONED, inbox, outbox
from notifications.service import Fanout
from notifications.settings import Settings


def spec(settings: Settings) -> WorkerSpec:
    """The notifications worker, declared once: ``run()`` and the tests start this."""
    dispatcher_wake = asyncio.Event()

    def consumer_handlers(context: WorkerContext) -> Handlers:
        return handlers(Fanout(LivePublisher(context.redis), dispatcher_wake.set))

    async def deliver_webhooks(context: WorkerContext, stop: asyncio.Event) -> None:
        dispatcher = Dispatcher(context.database, context.redis, settings, wake=dispatcher_wake)
        await dispatcher.run(stop)

    return WorkerSpec(
        group="notifications",
        handlers=consumer_handlers,
        inbox_table=inbox,
        outbox_table=outbox,
        long_running=[deliver_webhooks],
        partitioned=PARTITIONED,
        # A welcome can wait for the next order outcome (or bus.block_ms): the sign-ups'
        # stream, mostly the credit replies, never wakes this worker on its own.
        unhurried=[UserRegistered],
    )


def run() -> None:
    settings = Settings()
    run_worker(settings, spec(settings))
