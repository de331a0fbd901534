"""The ``notifications-worker`` entry point.

* bus consumers: order outcomes and sign-ups become notifications (``consumers.py``);
* after each commit, the new notifications are PUBLISHed to the live streams
  (``live.LivePublisher``) and the webhook dispatcher is woken;
* the webhook dispatcher (``deliveries.Dispatcher``) POSTs queued deliveries, with retries
  and a circuit breaker per endpoint. It runs as a worker timer whose run lasts until
  shutdown, so the worker's health check covers it; on SIGTERM it finishes the attempts in
  flight while the consumers finish their messages.
"""

import asyncio
import signal

from common.bus import Consumer
from common.logging import configure_logging
from common.worker import Timer, WorkerContext, serve_worker
from notifications.consumers import HANDLERS
from notifications.deliveries import Dispatcher
from notifications.live import LivePublisher
from notifications.models import inbox, outbox
from notifications.settings import Settings


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """The worker until ``stop`` is set (``run`` sets it on SIGTERM/SIGINT; tests directly)."""

    def consumers(context: WorkerContext) -> list[Consumer]:
        # Registered before any consumer starts: nothing recorded goes unpublished.
        publisher = LivePublisher(context.redis)
        context.database.add_commit_listener(publisher.on_commit)
        return [
            Consumer(
                context.database,
                context.redis,
                group="notifications",
                handlers=HANDLERS,
                inbox_table=inbox,
                settings=settings,
            )
        ]

    async def deliver_webhooks(context: WorkerContext) -> None:
        await Dispatcher(context.database, context.redis, settings).run(stop)

    await serve_worker(
        settings,
        consumers=consumers,
        stop=stop,
        outbox_table=outbox,
        timers=[
            Timer("webhook-deliveries", settings.webhook_poll_interval_seconds, deliver_webhooks)
        ],
    )


def run() -> None:
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
