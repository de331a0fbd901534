"""The ``users-worker`` entry point: credit commands from the order saga, and the timer that
announces registrations again until their welcome notification is confirmed."""

from common.bus import Handlers
from common.contracts import NotificationRecorded
from common.worker import Timer, WorkerContext, WorkerSpec, run_worker
from users import service
from users.cache import UserCache
from users.consumers import handlers
from users.models import inbox, outbox
from users.settings import Settings


def spec(settings: Settings) -> WorkerSpec:
    """The users worker, declared once: ``run()`` and the tests start this."""

    def consumer_handlers(context: WorkerContext) -> Handlers:
        return handlers(UserCache(context.redis, settings.user_cache_ttl_seconds))

    async def announce_unwelcomed_again(context: WorkerContext) -> None:
        async with context.database.transaction() as uow:
            await service.announce_unwelcomed_again(uow, settings.welcome.timeout_seconds)

    return WorkerSpec(
        group="users",
        handlers=consumer_handlers,
        inbox_table=inbox,
        outbox_table=outbox,
        timers=[
            Timer(
                "welcome-again", settings.welcome.timer_interval_seconds, announce_unwelcomed_again
            )
        ],
        # The welcome's confirmation can wait for the next credit command (or bus.block_ms):
        # its stream, mostly the saga's confirmations, never wakes this worker on its own.
        unhurried=[NotificationRecorded],
    )


def run() -> None:
    settings = Settings()
    run_worker(settings, spec(settings))
