"""Commands from the order saga, mapped to the credit rules (idempotent per order id), and
the confirmation that a new user's welcome notification is stored."""

from common.bus import Envelope, Handlers, Locks, Only
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

    # Each handler locks its user's row (credit is decided, and the welcome marked, with it
    # locked): a batch runs them in user order, so concurrent batches never deadlock.
    return {
        ReserveCredit: Locks(_user_id, on_reserve_credit),
        ReleaseCredit: Locks(_user_id, on_release_credit),
        # Only the welcome's: the others close an order saga, the orders service's business.
        NotificationRecorded: Locks(
            _user_id,
            Only(lambda event: event.kind == NotificationKind.WELCOME, on_welcome_recorded),
        ),
    }


def _user_id(message: ReserveCredit | ReleaseCredit | NotificationRecorded) -> object:
    return message.user_id
