"""HTTP routes of the orders service: parse, call the service, shape the response."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status
from pydantic import StringConstraints

from common.auth import CurrentUser
from common.errors import Conflict, NotFound
from common.http import DatabaseDep
from common.openapi import raises, sends_location
from common.pagination import Cursor, Limit, Page
from common.ratelimit import READ_LIMIT, WRITE_LIMIT
from common.replica import LaggingSession
from common.types import Text
from orders import service
from orders.context import OrdersContextDep
from orders.schemas import OrderCreate, OrderOut, SagaOut

router = APIRouter(prefix="/orders", tags=["orders"])

StatusFilter = Literal["PENDING", "APPROVED", "REJECTED", "CANCELLING", "CANCELLED"]
IdempotencyKey = Annotated[
    Annotated[Text, StringConstraints(min_length=1, max_length=200)] | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe creation: the same key and body return the same order.",
    ),
]


async def _admit_order(context: OrdersContextDep) -> None:
    """Refuse at once while the saga backlog is over its bound (orders.admission)."""
    context.saga_backlog.admit()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OrderOut,
    dependencies=[WRITE_LIMIT, Depends(_admit_order)],
)
@raises(Conflict)  # the Idempotency-Key was used with another body
@sends_location
async def place_order(
    body: OrderCreate,
    context: OrdersContextDep,
    response: Response,
    caller: CurrentUser,
    db: DatabaseDep,
    idempotency_key: IdempotencyKey = None,
) -> OrderOut:
    async with db.single_statement() as uow:  # no BEGIN, no COMMIT: placing is one statement
        placed = await service.place_order(uow, context.settings, caller.id, body, idempotency_key)
    response.headers["Location"] = f"/orders/{placed.order.id}"
    return OrderOut.model_validate(placed.order)


@router.get("", response_model=Page[OrderOut], dependencies=[READ_LIMIT])
async def list_orders(
    caller: CurrentUser,
    session: LaggingSession,
    status: Annotated[StatusFilter | None, Query()] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[OrderOut]:
    """The caller's orders, newest first; from the read replica when there is one (the
    caller's own recent writes are read from the primary: common.replica)."""
    return await service.list_orders(session, caller.id, status=status, limit=limit, cursor=cursor)


@router.get("/{order_id}", response_model=OrderOut, dependencies=[READ_LIMIT])
@raises(NotFound)
async def get_order(order_id: uuid.UUID, caller: CurrentUser, db: DatabaseDep) -> OrderOut:
    async with db.session() as session:
        return OrderOut.model_validate(await service.get_order(session, caller.id, order_id))


@router.get("/{order_id}/saga", response_model=SagaOut, dependencies=[READ_LIMIT])
@raises(NotFound)
async def get_saga(order_id: uuid.UUID, caller: CurrentUser, db: DatabaseDep) -> SagaOut:
    """The saga's history, from the primary like the order itself: clients read the two
    together, and a lagging history next to a fresh order shows states that never coexisted
    (an order REJECTED while its saga still awaits credit). Lists go to the replica."""
    async with db.session() as session:
        return await service.get_saga(session, caller.id, order_id)


@router.post(
    "/{order_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OrderOut,
    dependencies=[WRITE_LIMIT],
)
@raises(NotFound, Conflict)  # Conflict: not cancellable (any more), or busy
async def cancel_order(
    order_id: uuid.UUID, context: OrdersContextDep, caller: CurrentUser, db: DatabaseDep
) -> OrderOut:
    async with db.transaction() as uow:
        cancelled = await service.cancel_order(uow, context.settings, caller.id, order_id)
    return OrderOut.model_validate(cancelled)
