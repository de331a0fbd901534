"""Replies to the saga. The saga decides on the contracts themselves (no saga-side copies of
them); idempotent: the bus's inbox drops duplicates, and the saga itself ignores replies that
no longer apply."""

from common.bus import Envelope, Handlers, OneStatement, Only
from common.contracts import (
    CreditRejected,
    CreditReleased,
    CreditReserved,
    NotificationRecorded,
    SagaState,
)
from common.contracts.base import Message
from common.contracts.inventory import StockChecked
from common.db import UnitOfWork
from orders import saga, service
from orders.settings import Settings


def handlers(settings: Settings) -> Handlers:
    """Message type -> handler, for the orders worker's consumer."""

    async def on_reply(uow: UnitOfWork, _: Envelope, msg: saga.Reply) -> None:
        assert msg.order_id is not None  # a welcome's NotificationRecorded: see Only below
        await service.handle_event(uow, settings, msg.order_id, msg)

    # A reply's effect is one statement (the saga moved on under its optimistic lock, with
    # its steps, its messages' outbox rows and the reply's inbox row): no transaction.
    reply = OneStatement(on_reply)
    replies: dict[type[Message], OneStatement | Only] = {
        CreditReserved: reply,
        CreditRejected: reply,
        CreditReleased: reply,
        # An outcome's notification closes its saga; a welcome belongs to no saga.
        NotificationRecorded: Only(lambda msg: msg.order_id is not None, reply),
    }
    current = saga.definition(settings.saga.definition_version)
    if SagaState.AWAITING_STOCK in current.table:
        # Version 2's stock check: read only while it is current (no inventory service
        # answers otherwise), see common.contracts.inventory.
        replies[StockChecked] = reply
    return replies
