"""The ``users-worker`` entry point: credit commands from the order saga, and the timer that
announces registrations again until their welcome notification is confirmed."""

from common.bus import Consumer
from common.worker import Timer, WorkerContext, bus_consumer, run_worker
from users import service
from users.cache import UserCache
from users.consumers import HANDLERS
from users.models import inbox, outbox
from users.settings import Settings


def run() -> None:
    settings = Settings()

    def consumers(context: WorkerContext) -> list[Consumer]:
        # Credit changes here must invalidate the API's cached user views.
        cache = UserCache(context.redis, settings.user_cache_ttl_seconds)
        context.database.add_commit_listener(cache.on_commit)
        return [bus_consumer(context, group="users", handlers=HANDLERS, inbox_table=inbox)]

    async def announce_unwelcomed_again(context: WorkerContext) -> None:
        async with context.database.transaction() as session:
            await service.announce_unwelcomed_again(session, settings.welcome_timeout_seconds)

    run_worker(
        settings,
        consumers=consumers,
        outbox_table=outbox,
        timers=[
            Timer(
                "welcome-again", settings.welcome_timer_interval_seconds, announce_unwelcomed_again
            )
        ],
    )
