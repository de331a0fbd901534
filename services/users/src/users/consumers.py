"""Commands from the order saga, mapped to the credit rules. Idempotent per order id."""

from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Envelope, Handler
from common.contracts import Message, ReleaseCredit, ReserveCredit
from users import credit


async def on_reserve_credit(session: AsyncSession, _: Envelope, command: ReserveCredit) -> None:
    await credit.reserve_credit(session, command)


async def on_release_credit(session: AsyncSession, _: Envelope, command: ReleaseCredit) -> None:
    await credit.release_credit(session, command)


HANDLERS: dict[type[Message], Handler] = {
    ReserveCredit: on_reserve_credit,
    ReleaseCredit: on_release_credit,
}
