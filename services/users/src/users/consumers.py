"""Commands from the order saga, mapped to the credit rules (idempotent per order id), and
the confirmation that a new user's welcome notification is stored."""

from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Envelope, Handler
from common.contracts import Message, NotificationRecorded, ReleaseCredit, ReserveCredit
from users import credit, service


async def on_reserve_credit(session: AsyncSession, _: Envelope, command: ReserveCredit) -> None:
    await credit.reserve_credit(session, command)


async def on_release_credit(session: AsyncSession, _: Envelope, command: ReleaseCredit) -> None:
    await credit.release_credit(session, command)


async def on_notification_recorded(
    session: AsyncSession, _: Envelope, event: NotificationRecorded
) -> None:
    if event.kind == "welcome":  # the others close an order saga: the orders service's
        await service.welcome_recorded(session, event.user_id)


HANDLERS: dict[type[Message], Handler] = {
    ReserveCredit: on_reserve_credit,
    ReleaseCredit: on_release_credit,
    NotificationRecorded: on_notification_recorded,
}
