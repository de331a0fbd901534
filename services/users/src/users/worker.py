"""The ``users-worker`` entry point: credit commands from the order saga."""

from common.bus import Consumer
from common.worker import WorkerContext, bus_consumer, run_worker
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

    run_worker(settings, consumers=consumers, outbox_table=outbox)
