"""HTTP routes of the orders service: parse, call the service, shape the response."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from common.auth import CurrentUser
from common.http import DatabaseDep
from common.pagination import Cursor, Limit, Page
from orders import service
from orders.schemas import OrderOut

router = APIRouter(prefix="/orders", tags=["orders"])

StatusFilter = Literal["PENDING", "APPROVED", "REJECTED", "CANCELLING", "CANCELLED"]


@router.get("", response_model=Page[OrderOut])
async def list_orders(
    caller: CurrentUser,
    db: DatabaseDep,
    status: Annotated[StatusFilter | None, Query()] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[OrderOut]:
    async with db.session() as session:
        return await service.list_orders(
            session, caller.id, status=status, limit=limit, cursor=cursor
        )
