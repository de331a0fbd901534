"""HTTP routes of the notifications service: parse, call the service, shape the response."""

from fastapi import APIRouter

from common.auth import CurrentUser
from common.http import DatabaseDep
from common.pagination import Cursor, Limit, Page
from common.ratelimit import READ_LIMIT
from notifications import service
from notifications.schemas import NotificationOut

router = APIRouter(prefix="/notifications", tags=["notifications"])


@router.get("", response_model=Page[NotificationOut], dependencies=[READ_LIMIT])
async def list_notifications(
    caller: CurrentUser, db: DatabaseDep, limit: Limit = 20, cursor: Cursor = None
) -> Page[NotificationOut]:
    async with db.session() as session:
        return await service.list_notifications(session, caller.id, limit=limit, cursor=cursor)
