"""The ``notifications-worker`` entry point.

* bus consumers: order outcomes and sign-ups become notifications (``consumers.py``);
* after each commit, the new notifications are PUBLISHed to the live streams
  (``live.LivePublisher``) and the webhook dispatcher is woken;
* the webhook dispatcher (``deliveries.Dispatcher``) POSTs queued deliveries, with retries
  and a circuit breaker per endpoint. It runs for the worker's whole life (the worker's
  health check covers it); on SIGTERM it finishes the attempts in flight while the
  consumers finish their messages.
"""

import asyncio
from collections.abc import Callable

from common.bus import Consumer
from common.worker import LongRunning, WorkerContext, bus_consumer, run_worker, serve_worker
from notifications.consumers import HANDLERS
from notifications.deliveries import Dispatcher
from notifications.live import LivePublisher
from notifications.models import inbox, outbox
from notifications.settings import Settings


def _consumers(settings: Settings) -> Callable[[WorkerContext], list[Consumer]]:
    def consumers(context: WorkerContext) -> list[Consumer]:
        # Registered before any consumer starts: nothing recorded goes unpublished.
        publisher = LivePublisher(context.redis)
        context.database.add_commit_listener(publisher.on_commit)
        return [bus_consumer(context, group="notifications", handlers=HANDLERS, inbox_table=inbox)]

    return consumers


def _webhook_dispatcher(settings: Settings) -> LongRunning:
    async def deliver_webhooks(context: WorkerContext, stop: asyncio.Event) -> None:
        await Dispatcher(context.database, context.redis, settings).run(stop)

    return deliver_webhooks


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """The worker until ``stop`` is set (tests call this directly)."""
    await serve_worker(
        settings,
        consumers=_consumers(settings),
        stop=stop,
        outbox_table=outbox,
        long_running=[_webhook_dispatcher(settings)],
    )


def run() -> None:
    settings = Settings()
    run_worker(
        settings,
        consumers=_consumers(settings),
        outbox_table=outbox,
        long_running=[_webhook_dispatcher(settings)],
    )
