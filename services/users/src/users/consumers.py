"""Commands from the order saga, mapped to the credit rules (idempotent per order id), and
the confirmation that a new user's welcome notification is stored."""

from common.bus import Envelope, Handlers, Only
from common.contracts import NotificationKind, NotificationRecorded, ReleaseCredit, ReserveCredit
from common.db import UnitOfWork
from users import credit, service
from users.cache import UserCache


def handlers(cache: UserCache) -> Handlers:
    """Message type -> handler, for the users worker's consumer. Credit changes invalidate
    the API's cached user views (``cache``) once they commit."""

    async def on_reserve_credit(uow: UnitOfWork, _: Envelope, command: ReserveCredit) -> None:
        await credit.reserve_credit(uow, cache, command)

    async def on_release_credit(uow: UnitOfWork, _: Envelope, command: ReleaseCredit) -> None:
        await credit.release_credit(uow, cache, command)

    async def on_welcome_recorded(
        uow: UnitOfWork, _: Envelope, event: NotificationRecorded
    ) -> None:
        await service.welcome_recorded(uow, event.user_id)

    return {
        ReserveCredit: on_reserve_credit,
        ReleaseCredit: on_release_credit,
        # Only the welcome's: the others close an order saga, the orders service's business.
        NotificationRecorded: Only(
            lambda event: event.kind == NotificationKind.WELCOME, on_welcome_recorded
        ),
    }
