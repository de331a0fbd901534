"""The order saga's replies as the bus delivers them, for tests that answer for a service.

The saga decides on the contracts themselves, so a test hands it real messages; only the
order id matters to the saga (the user and amounts are the replying service's business).
"""

import uuid

from common.contracts import (
    CreditRejected,
    CreditReleased,
    CreditReserved,
    NotificationKind,
    NotificationRecorded,
)
from common.contracts.inventory import StockChecked
from common.contracts.users import RejectionReason

SOME_AMOUNT_CENTS = 100


def credit_reserved(order_id: uuid.UUID) -> CreditReserved:
    return CreditReserved(order_id=order_id, user_id=uuid.uuid4(), amount_cents=SOME_AMOUNT_CENTS)


def credit_rejected(order_id: uuid.UUID, reason: RejectionReason) -> CreditRejected:
    return CreditRejected(order_id=order_id, user_id=uuid.uuid4(), reason=reason)


def credit_released(order_id: uuid.UUID) -> CreditReleased:
    return CreditReleased(order_id=order_id, user_id=uuid.uuid4(), amount_cents=SOME_AMOUNT_CENTS)


def notification_recorded(order_id: uuid.UUID, kind: NotificationKind) -> NotificationRecorded:
    return NotificationRecorded(
        notification_id=uuid.uuid4(), order_id=order_id, user_id=uuid.uuid4(), kind=kind
    )


def stock_checked(order_id: uuid.UUID, *, in_stock: bool) -> StockChecked:
    return StockChecked(order_id=order_id, in_stock=in_stock)
