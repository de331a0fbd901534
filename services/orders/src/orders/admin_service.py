"""What operators may do (docs/design.md section 10): find sagas, read a timeline, retry or
compensate a saga, list, inspect and redrive dead letters; every action audited. Never commits.

Where the operator's code lives, and why: the orders service runs the saga, so it serves the
operator API, with the service's usual layering in files of their own, named ``admin_*`` so
that a reader (or a reviewer of who can see every user's orders) finds them at a glance:
``admin_router`` (JSON, ``/admin/...``) and ``admin_console`` (HTML pages) -> this module ->
``admin_repository`` (queries across all users) and ``common.bus.deadletters`` (Redis);
``admin_auth`` is the operator credential. Saga transitions stay in ``saga.decide``
(``RetryRequested``, ``CompensateRequested``) and are applied by ``service.retry_step`` and
``service.force_compensation``, the same path every saga event takes.

Audit: a saga action's audit row is written in the same transaction as its effect, refused
actions included (the refusal is returned as a value, not raised, so the unit of work commits
the row; the router answers 409 afterwards). A redrive's effect is in Redis, so its row
records what happened there, in the transaction the router commits right after.
"""

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from common.bus.deadletters import DeadLetter, get_dead_letter, replay, scan_dead_letters
from common.bus.held import HeldMessage, list_held
from common.contracts import SagaState, StepStatus
from common.db import UnitOfWork
from common.errors import Conflict, NotFound, Problem
from common.pagination import Page, build_page, decode_cursor
from common.partitions import TableStatus, database_status
from orders import admin_repository, repository, saga, service
from orders.admin_repository import SagaFilter
from orders.admin_schemas import (
    MAX_REDRIVE,
    STREAM_ID_PART_MAX,
    AuditOut,
    DeadLetterDetail,
    DeadLetterOut,
    Operator,
    RedriveFailure,
    RedriveFilter,
    Redriven,
    RedriveRequest,
    RedriveResult,
    SagaSummary,
    SagaTimeline,
    TimelineStep,
)
from orders.models import OperatorAudit, Order, Saga, SagaStep
from orders.settings import Settings

LATE_REPLY_STATUSES = frozenset({StepStatus.LATE_REPLY_COMPENSATED, StepStatus.REPLY_IGNORED})
RESEND_STATUSES = frozenset({StepStatus.RETRIED, StepStatus.RESENT})


# -- sagas ----------------------------------------------------------------------------------


def _summary(order: Order, instance: Saga, now: datetime) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "user_id": order.user_id,
        "order_status": order.status,
        "rejection_reason": order.rejection_reason,
        "state": instance.state,
        "version": instance.version,
        "definition_version": instance.definition_version,
        "total_cents": order.total_cents,
        "deadline_at": instance.deadline_at,
        "overdue": instance.deadline_at is not None and instance.deadline_at <= now,
        "created_at": instance.created_at,
        "updated_at": instance.updated_at,
    }


async def list_sagas(
    session: AsyncSession,
    *,
    state: str | None = None,
    order_status: str | None = None,
    reason: str | None = None,
    older_than_seconds: int | None = None,
    overdue: bool = False,
    limit: int = 20,
    cursor: str | None = None,
) -> Page[SagaSummary]:
    """Sagas of every user by state, order status, rejection reason and age; newest first."""
    now = datetime.now(UTC)
    where = SagaFilter(
        state=state,
        order_status=order_status,
        reason=reason,
        created_before=(
            now - timedelta(seconds=older_than_seconds) if older_than_seconds is not None else None
        ),
        overdue_at=now if overdue else None,
    )
    after = decode_cursor(cursor) if cursor else None
    rows = await admin_repository.list_sagas(session, where, limit=limit + 1, after=after)
    return build_page(
        rows,
        limit,
        item=lambda row: SagaSummary(**_summary(row[0], row[1], now)),
        key=lambda row: (row[1].created_at, row[1].order_id),
    )


def _kind(step: SagaStep) -> Literal["step", "resend", "late_reply", "operator"]:
    if step.status in LATE_REPLY_STATUSES:
        return "late_reply"
    if step.status in RESEND_STATUSES:
        return "resend"  # by the saga's timer, or by an operator (detail "operator")
    if step.detail == "operator":
        return "operator"
    return "step"


async def saga_timeline(session: AsyncSession, order_id: uuid.UUID) -> SagaTimeline:
    """One saga as an operator reads it: every step, with the messages it sent or answered."""
    found = await admin_repository.get_order_and_saga_fresh(session, order_id)
    if found is None:
        raise NotFound(f"No saga for order {order_id}.")
    order, instance = found
    steps = [
        TimelineStep(
            id=step.id,
            name=step.name,
            status=step.status,
            detail=step.detail,
            at=step.at,
            kind=_kind(step),
            message_id=step.message_id,
            message_type=step.message_type,
            cause_id=step.cause_id,
        )
        for step in await repository.list_steps(session, order_id, since=instance.created_at)
    ]
    definition = saga.definition(instance.definition_version)
    wait = definition.table.get(SagaState(instance.state))
    return SagaTimeline(
        **_summary(order, instance, datetime.now(UTC)),
        correlation_id=instance.correlation_id,
        waiting_for=wait.step if wait else None,
        compensable=saga.compensable(definition, SagaState(instance.state), order.status),
        resends=sum(step.kind == "resend" for step in steps),
        late_replies=sum(step.kind == "late_reply" for step in steps),
        steps=steps,
    )


@dataclass(frozen=True)
class SagaActionOutcome:
    """What a saga action did: the audit row, and the refusal when it was refused (a 409)."""

    audit_id: uuid.UUID
    refused: str | None = None


async def _audit(
    uow: UnitOfWork,
    operator: Operator,
    action: str,
    target: str,
    outcome: str,
    detail: dict[str, Any],
) -> uuid.UUID:
    entry = OperatorAudit(
        id=uuid.uuid4(),
        at=datetime.now(UTC),
        operator=operator.name,
        action=action,
        target=target,
        outcome=outcome,
        detail=detail,
    )
    await admin_repository.add_audit(uow.session, entry)
    return entry.id


async def _saga_action(
    uow: UnitOfWork,
    settings: Settings,
    operator: Operator,
    action: str,
    order_id: uuid.UUID,
) -> SagaActionOutcome:
    target = f"order:{order_id}"
    try:
        if action == "saga.retry":
            decision = await service.retry_step(uow, settings, order_id)
        else:
            decision = await service.force_compensation(uow, settings, order_id)
    except (Conflict, service.SagaBusy) as exc:
        audit_id = await _audit(uow, operator, action, target, "refused", {"detail": exc.detail})
        return SagaActionOutcome(audit_id=audit_id, refused=exc.detail)
    detail = {
        "state": decision.state.value,
        "order_status": decision.order_status.value,
        "steps": [f"{step.name}:{step.status}" for step in decision.steps],
        "sent": [action_.value for action_ in decision.actions],
    }
    return SagaActionOutcome(audit_id=await _audit(uow, operator, action, target, "ok", detail))


async def retry_saga(
    uow: UnitOfWork, settings: Settings, operator: Operator, order_id: uuid.UUID
) -> SagaActionOutcome:
    """Re-send the current step's command now and restart its deadline; audited."""
    return await _saga_action(uow, settings, operator, "saga.retry", order_id)


async def compensate_saga(
    uow: UnitOfWork, settings: Settings, operator: Operator, order_id: uuid.UUID
) -> SagaActionOutcome:
    """Reject an order still awaiting credit (reason ``operator``), release it; audited."""
    return await _saga_action(uow, settings, operator, "saga.compensate", order_id)


# -- dead letters ---------------------------------------------------------------------------


def _letter_out(letter: DeadLetter) -> dict[str, Any]:
    envelope = _parse_envelope(letter.envelope)
    return {
        "id": letter.id,
        "stream": letter.stream,
        "group": letter.group,
        "type": letter.type,
        "attempts": letter.attempts,
        "error": letter.error,
        "consumer": letter.consumer,
        "dead_lettered_at": letter.dead_lettered_at,
        "message_id": str(envelope.get("id")) if envelope and envelope.get("id") else None,
        "correlation_id": (
            str(envelope.get("correlation_id"))
            if envelope and envelope.get("correlation_id")
            else None
        ),
    }


def _parse_envelope(raw: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _matcher(where: RedriveFilter) -> Callable[[DeadLetter], bool]:
    def match(letter: DeadLetter) -> bool:
        return (
            (where.type is None or letter.type == where.type)
            and (where.stream is None or letter.stream == where.stream)
            and (where.group is None or letter.group == where.group)
        )

    return match


def is_entry_id(value: str) -> bool:
    """A Redis stream entry id Redis itself would take: ``<ms>-<seq>``, ASCII digits, each
    part at most 2^64-1 (``str.isdigit`` alone takes "²", and Redis refuses larger parts)."""
    ms, dash, seq = value.partition("-")
    return bool(dash) and all(
        part.isascii() and part.isdigit() and len(part) <= 20 and int(part) <= STREAM_ID_PART_MAX
        for part in (ms, seq)
    )


def _dead_letter_cursor(cursor: str | None) -> str | None:
    """A page cursor: an entry id after which (older) the page starts; ``0-0`` has nothing
    before it and cannot be an exclusive bound, so it is no cursor this API issued."""
    if cursor is None:
        return None
    if not is_entry_id(cursor) or set(cursor) <= {"0", "-"}:
        raise Problem(
            "The cursor is not one this API issued.",
            status=400,
            errors=[{"field": "cursor", "in": "query", "message": "invalid cursor"}],
        )
    return cursor


async def list_dead_letters(
    redis: Redis,
    settings: Settings,
    *,
    where: RedriveFilter,
    limit: int = 20,
    cursor: str | None = None,
) -> Page[DeadLetterOut]:
    """Dead letters of the whole bus, newest first; the cursor is the last one's id."""
    letters = await scan_dead_letters(
        redis,
        prefix=settings.bus.stream_prefix,
        limit=limit + 1,
        before=_dead_letter_cursor(cursor),
        match=_matcher(where),
    )
    page = letters[:limit]
    return Page[DeadLetterOut](
        items=[DeadLetterOut(**_letter_out(letter)) for letter in page],
        next_cursor=page[-1].id if len(letters) > limit and page else None,
    )


MAX_HELD_LISTED = 200


async def list_held_messages(redis: Redis, settings: Settings) -> list[HeldMessage]:
    """Messages held for a newer schema version than their consumers read (oldest first)."""
    return await list_held(redis, prefix=settings.bus.stream_prefix, limit=MAX_HELD_LISTED)


async def get_dead_letter_detail(
    redis: Redis, settings: Settings, dead_letter_id: str
) -> DeadLetterDetail:
    letter = (
        await get_dead_letter(redis, dead_letter_id, prefix=settings.bus.stream_prefix)
        if is_entry_id(dead_letter_id)
        else None
    )
    if letter is None:
        raise NotFound(f"No dead letter {dead_letter_id} (redriven already, or never was).")
    return DeadLetterDetail(
        **_letter_out(letter),
        entry_id=letter.entry_id,
        envelope=_parse_envelope(letter.envelope),
        raw_envelope=letter.envelope,
    )


async def _redrive_one(redis: Redis, prefix: str, letter_id: str) -> Redriven | RedriveFailure:
    letter = (
        await get_dead_letter(redis, letter_id, prefix=prefix) if is_entry_id(letter_id) else None
    )
    if letter is None:
        return RedriveFailure(id=letter_id, reason="not found (redriven already, or never was)")
    if not letter.envelope:
        return RedriveFailure(id=letter_id, reason="the entry had no envelope to send again")
    if not letter.stream.startswith(prefix):
        return RedriveFailure(id=letter_id, reason=f"stream {letter.stream!r} is not a bus stream")
    new_id = await replay(redis, letter_id, prefix=prefix)
    if new_id is None:
        return RedriveFailure(id=letter_id, reason="not found (redriven meanwhile)")
    return Redriven(id=letter_id, new_entry_id=new_id)


async def redrive(
    uow: UnitOfWork,
    redis: Redis,
    settings: Settings,
    operator: Operator,
    request: RedriveRequest,
) -> RedriveResult:
    """Put dead letters back on their streams, by ids or by filter; audited with the counts.

    A filter redrives at most ``MAX_REDRIVE`` letters per call (``more`` says when more
    matched). One letter failing does not stop the others; each failure comes with why.
    """
    prefix = settings.bus.stream_prefix
    if request.ids is not None:
        ids = list(dict.fromkeys(request.ids))
        more = False
        target = "dead-letters:" + ",".join(ids[:5]) + ("..." if len(ids) > 5 else "")
    else:
        assert request.filter is not None
        matched = await scan_dead_letters(
            redis, prefix=prefix, limit=MAX_REDRIVE + 1, match=_matcher(request.filter)
        )
        more = len(matched) > MAX_REDRIVE
        ids = [letter.id for letter in reversed(matched[:MAX_REDRIVE])]  # oldest first
        target = "dead-letters?" + json.dumps(request.filter.model_dump(exclude_none=True))
    redriven: list[Redriven] = []
    failed: list[RedriveFailure] = []
    for letter_id in ids:
        result = await _redrive_one(redis, prefix, letter_id)
        if isinstance(result, Redriven):
            redriven.append(result)
        else:
            failed.append(result)
    outcome = "ok" if not failed else ("failed" if not redriven else "partial")
    detail = {
        "matched": len(ids),
        "redriven": len(redriven),
        "failed": [failure.model_dump() for failure in failed[:50]],
        "more": more,
    }
    audit_id = await _audit(uow, operator, "dead_letters.redrive", target, outcome, detail)
    return RedriveResult(
        audit_id=audit_id,
        matched=len(ids),
        redriven=len(redriven),
        failed_count=len(failed),
        more=more,
        redriven_ids=redriven,
        failed=failed,
    )


# -- audit ----------------------------------------------------------------------------------


async def record_session(uow: UnitOfWork, operator: Operator, action: str) -> None:
    """Console sign-in and sign-out are operator actions too."""
    await _audit(uow, operator, action, "console", "ok", {})


UNKNOWN_OPERATOR = Operator(name="(unknown)", csrf_token="")


async def record_failed_sign_in(uow: UnitOfWork, reason: str) -> None:
    """A refused console sign-in, audited (never with the token that was presented)."""
    await _audit(uow, UNKNOWN_OPERATOR, "console.login", "console", "refused", {"reason": reason})


async def get_audit_entry(session: AsyncSession, audit_id: uuid.UUID) -> AuditOut | None:
    entry = await session.get(OperatorAudit, audit_id)
    return None if entry is None else AuditOut.model_validate(entry)


async def list_audit(
    session: AsyncSession,
    *,
    operator: str | None = None,
    action: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> Page[AuditOut]:
    after = decode_cursor(cursor) if cursor else None
    rows = await admin_repository.list_audit(
        session, operator=operator, action=action, limit=limit + 1, after=after
    )
    return build_page(rows, limit, item=AuditOut.model_validate, key=lambda e: (e.at, e.id))


async def partition_status(session: AsyncSession) -> list[TableStatus]:
    """Every partitioned table of the database (all schemas: pg_catalog is readable)."""
    connection = await session.connection()
    return await database_status(connection)
