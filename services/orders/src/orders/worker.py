"""The ``orders-worker`` entry point: saga replies, and the timer that enforces deadlines.

Deadlines live in Postgres, not in memory, so after a restart of any orders worker every
saga in flight continues: replies waiting in the streams are read, and overdue sagas are
found by the timer on its first run.
"""

import logging

from common.bus import Consumer
from common.worker import Timer, WorkerContext, bus_consumer, run_worker
from orders import saga, service
from orders.consumers import handlers
from orders.models import inbox, outbox
from orders.settings import Settings

logger = logging.getLogger(__name__)


def run() -> None:
    settings = Settings()

    def consumers(context: WorkerContext) -> list[Consumer]:
        return [
            bus_consumer(context, group="orders", handlers=handlers(settings), inbox_table=inbox)
        ]

    async def expire_overdue_sagas(context: WorkerContext) -> None:
        """Time out every saga past its deadline, each in its own unit of work."""
        async with context.database.session() as session:
            overdue = await service.overdue_saga_ids(session)
        for order_id in overdue:
            async with context.database.transaction() as session:
                await service.handle_event(session, settings, order_id, saga.DeadlinePassed())

    run_worker(
        settings,
        consumers=consumers,
        outbox_table=outbox,
        timers=[
            Timer("saga-deadlines", settings.saga_timer_interval_seconds, expire_overdue_sagas)
        ],
    )
