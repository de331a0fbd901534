"""The ``orders-worker`` entry point: saga replies, and the timer that enforces deadlines.

Deadlines live in Postgres, not in memory, so after a restart of any orders worker every
saga in flight continues: replies waiting in the streams are read, and overdue sagas are
found by the timer on its first run.

Idle, the timer does not look every ``saga.timer_interval_seconds``: with nothing overdue it
sleeps until the earliest deadline ahead, and at most half the shortest deadline a saga can
be given, since a saga started or moved on meanwhile (by another process) comes due no
sooner than that. So no deadline is acted on later than at the busy cadence.
"""

from common.bus.periodic import Idle
from common.contracts import NotificationRecorded
from common.worker import Timer, WorkerContext, WorkerSpec, run_worker
from orders import saga, service
from orders.consumers import handlers
from orders.models import PARTITIONED, inbox, outbox
from orders.settings import Settings


def spec(settings: Settings) -> WorkerSpec:
    """The orders worker, declared once: ``run()`` and the tests start this."""

    async def expire_overdue_sagas(context: WorkerContext) -> Idle | None:
        """Act on every saga past its deadline, each in its own unit of work; :class:`Idle`
        (with the time to the next deadline) when none was."""
        async with context.database.session() as session:
            overdue = await service.overdue_saga_ids(session)
            if not overdue:
                return Idle(await service.seconds_until_next_deadline(session))
        for order_id in overdue:
            async with context.database.transaction() as uow:
                await service.handle_event(uow, settings, order_id, saga.DeadlinePassed())
        return None

    return WorkerSpec(
        group="orders",
        handlers=lambda _: handlers(settings),
        inbox_table=inbox,
        outbox_table=outbox,
        timers=[
            Timer(
                "saga-deadlines",
                settings.saga.timer_interval_seconds,
                expire_overdue_sagas,
                idle_interval_seconds=service.shortest_deadline_seconds(settings) / 2,
            )
        ],
        partitioned=PARTITIONED,
        # An outcome's notification closes its saga after the customer has the answer, with
        # saga.notification_timeout_seconds to come: it can wait for the next credit reply
        # (or bus.block_ms), and its stream never wakes this worker on its own.
        unhurried=[NotificationRecorded],
    )


def run() -> None:
    settings = Settings()
    run_worker(settings, spec(settings))
