"""Commands from the order saga, mapped to the credit rules (idempotent per order id), and
the confirmation that a new user's welcome notification is stored."""

from common.bus import Envelope, Handler
from common.contracts import Message, NotificationRecorded, ReleaseCredit, ReserveCredit
from common.db import UnitOfWork
from users import credit, service
from users.cache import UserCache


def handlers(cache: UserCache) -> dict[type[Message], Handler]:
    """Message type -> handler, for the users worker's consumer. Credit changes invalidate
    the API's cached user views (``cache``) once they commit."""

    async def on_reserve_credit(uow: UnitOfWork, _: Envelope, command: ReserveCredit) -> None:
        await credit.reserve_credit(uow, cache, command)

    async def on_release_credit(uow: UnitOfWork, _: Envelope, command: ReleaseCredit) -> None:
        await credit.release_credit(uow, cache, command)

    async def on_notification_recorded(
        uow: UnitOfWork, _: Envelope, event: NotificationRecorded
    ) -> None:
        if event.kind == "welcome":  # the others close an order saga: the orders service's
            await service.welcome_recorded(uow, event.user_id)

    return {
        ReserveCredit: on_reserve_credit,
        ReleaseCredit: on_release_credit,
        NotificationRecorded: on_notification_recorded,
    }
