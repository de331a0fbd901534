"""The operator API under ``/admin`` (docs/design.md section 10): HTTP only, rules in admin_service.

Every route needs an operator token (``Authorization: Bearer``; see ``admin_auth``): none is
a 401 problem, a customer's token a 403. The HTML console is ``admin_console``.
"""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from common.bus.held import HeldMessage
from common.errors import Conflict, NotFound
from common.http import DatabaseDep, RedisDep
from common.openapi import raises
from common.pagination import Cursor, Limit, Page
from common.ratelimit import READ_LIMIT, WRITE_LIMIT
from common.replica import LaggingSession
from orders import admin_service
from orders.admin_auth import ApiOperator
from orders.admin_schemas import (
    AuditOut,
    DeadLetterDetail,
    DeadLetterId,
    DeadLetterOut,
    MessageType,
    OrderStatusFilter,
    PartitionedTableOut,
    Reason,
    RedriveFilter,
    RedriveRequest,
    RedriveResult,
    SagaActionOut,
    SagaStateFilter,
    SagaSummary,
    SagaTimeline,
    StreamName,
)
from orders.context import OrdersContextDep

router = APIRouter(prefix="/admin", tags=["admin"])

OlderThan = Annotated[
    int | None, Query(ge=0, le=10 * 365 * 86400, description="Sagas started at least this long ago")
]


@router.get("/sagas", response_model=Page[SagaSummary], dependencies=[READ_LIMIT])
async def list_sagas(
    operator: ApiOperator,
    session: LaggingSession,
    state: Annotated[SagaStateFilter | None, Query()] = None,
    status: Annotated[OrderStatusFilter | None, Query()] = None,
    reason: Annotated[Reason | None, Query()] = None,
    older_than_seconds: OlderThan = None,
    overdue: Annotated[bool, Query(description="Only sagas past their deadline")] = False,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[SagaSummary]:
    """May lag (the read replica when there is one); a saga's timeline never does."""
    return await admin_service.list_sagas(
        session,
        state=state,
        order_status=status,
        reason=reason,
        older_than_seconds=older_than_seconds,
        overdue=overdue,
        limit=limit,
        cursor=cursor,
    )


@router.get("/sagas/{order_id}", response_model=SagaTimeline, dependencies=[READ_LIMIT])
@raises(NotFound)
async def get_saga(order_id: uuid.UUID, operator: ApiOperator, db: DatabaseDep) -> SagaTimeline:
    async with db.session() as session:
        return await admin_service.saga_timeline(session, order_id)


async def _saga_action(
    context: OrdersContextDep,
    db: DatabaseDep,
    operator: ApiOperator,
    order_id: uuid.UUID,
    action: str,
) -> SagaActionOut:
    async with db.transaction() as uow:
        if action == "retry":
            outcome = await admin_service.retry_saga(uow, context.settings, operator, order_id)
        else:
            outcome = await admin_service.compensate_saga(uow, context.settings, operator, order_id)
    if outcome.refused is not None:  # the refusal's audit row is committed; now say no
        raise Conflict(outcome.refused, audit_id=str(outcome.audit_id))
    async with db.session() as session:
        timeline = await admin_service.saga_timeline(session, order_id)
    return SagaActionOut(audit_id=outcome.audit_id, saga=timeline)


@router.post("/sagas/{order_id}/retry", response_model=SagaActionOut, dependencies=[WRITE_LIMIT])
@raises(NotFound, Conflict)
async def retry_saga(
    order_id: uuid.UUID, context: OrdersContextDep, operator: ApiOperator, db: DatabaseDep
) -> SagaActionOut:
    """Send the current step's command again now and restart its deadline (409 if settled)."""
    return await _saga_action(context, db, operator, order_id, "retry")


@router.post(
    "/sagas/{order_id}/compensate", response_model=SagaActionOut, dependencies=[WRITE_LIMIT]
)
@raises(NotFound, Conflict)
async def compensate_saga(
    order_id: uuid.UUID, context: OrdersContextDep, operator: ApiOperator, db: DatabaseDep
) -> SagaActionOut:
    """Reject a PENDING order awaiting credit (reason ``operator``) and release its credit."""
    return await _saga_action(context, db, operator, order_id, "compensate")


@router.get("/dead-letters", response_model=Page[DeadLetterOut], dependencies=[READ_LIMIT])
async def list_dead_letters(
    context: OrdersContextDep,
    operator: ApiOperator,
    redis: RedisDep,
    type: Annotated[MessageType | None, Query()] = None,
    stream: Annotated[StreamName | None, Query()] = None,
    group: Annotated[StreamName | None, Query()] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[DeadLetterOut]:
    where = RedriveFilter(type=type, stream=stream, group=group)
    return await admin_service.list_dead_letters(
        redis, context.settings, where=where, limit=limit, cursor=cursor
    )


@router.get("/held-messages", response_model=list[HeldMessage], dependencies=[READ_LIMIT])
async def list_held_messages(
    context: OrdersContextDep, operator: ApiOperator, redis: RedisDep
) -> list[HeldMessage]:
    """Messages of a newer schema version than their consumers read (a rolling upgrade under
    way): not lost, not dead-lettered; retried until a consumer of the newer release reads
    them. At most 200, oldest first."""
    return await admin_service.list_held_messages(redis, context.settings)


@router.get(
    "/dead-letters/{dead_letter_id}", response_model=DeadLetterDetail, dependencies=[READ_LIMIT]
)
@raises(NotFound)
async def get_dead_letter(
    dead_letter_id: DeadLetterId, context: OrdersContextDep, operator: ApiOperator, redis: RedisDep
) -> DeadLetterDetail:
    return await admin_service.get_dead_letter_detail(redis, context.settings, dead_letter_id)


@router.post("/dead-letters/redrive", response_model=RedriveResult, dependencies=[WRITE_LIMIT])
async def redrive_dead_letters(
    body: RedriveRequest,
    context: OrdersContextDep,
    operator: ApiOperator,
    db: DatabaseDep,
    redis: RedisDep,
) -> RedriveResult:
    """Put dead letters back on their streams: ``{"ids": [...]}`` or ``{"filter": {...}}``."""
    async with db.transaction() as uow:
        return await admin_service.redrive(uow, redis, context.settings, operator, body)


@router.get("/audit", response_model=Page[AuditOut], dependencies=[READ_LIMIT])
async def list_audit(
    operator: ApiOperator,
    db: DatabaseDep,
    by: Annotated[str | None, Query(alias="operator", pattern=r"^[A-Za-z0-9_.@-]{1,64}$")] = None,
    action: Annotated[str | None, Query(pattern=r"^[a-z_.]{1,32}$")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[AuditOut]:
    """Operator actions, newest first: who, when, what, on what, and how it went."""
    async with db.session() as session:
        return await admin_service.list_audit(
            session, operator=by, action=action, limit=limit, cursor=cursor
        )


@router.get("/database", response_model=list[PartitionedTableOut], dependencies=[READ_LIMIT])
async def database_status(operator: ApiOperator, db: DatabaseDep) -> list[PartitionedTableOut]:
    """Every partitioned table of the database: partitions, days ahead, rows in default."""
    async with db.session() as session:
        tables = await admin_service.partition_status(session)
    return [PartitionedTableOut.of(table) for table in tables]
