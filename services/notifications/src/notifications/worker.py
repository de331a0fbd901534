"""The ``notifications-worker`` entry point: order outcomes and sign-ups become notifications."""

from common.bus import Consumer
from common.worker import WorkerContext, run_worker
from notifications.consumers import HANDLERS
from notifications.models import inbox, outbox
from notifications.settings import Settings


def run() -> None:
    settings = Settings()

    def consumers(context: WorkerContext) -> list[Consumer]:
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

    run_worker(settings, consumers=consumers, outbox_table=outbox)
