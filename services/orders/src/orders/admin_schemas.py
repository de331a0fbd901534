"""Request and response bodies of the operator API (``/admin``, docs/design.md section 10)."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from common.contracts import SagaState, StepName
from common.partitions import TableStatus
from orders.saga import OrderStatus


@dataclass(frozen=True, slots=True)
class Operator:
    """Who acts through the operator API or console (found by orders.admin_auth): the one
    admin value the admin services take, and write to the audit log."""

    name: str
    csrf_token: str  # what the console's forms must send back


# Filters are matched exactly, so they only need the characters real values use; anything
# else (control characters included) is a 422 naming the field.
Reason = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
MessageType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]
StreamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")]
STREAM_ID_PART_MAX = 2**64 - 1  # a Redis stream id is two unsigned 64-bit numbers


def _fits_a_stream_id(value: str) -> str:
    """Twenty digits can exceed 64 bits; Redis would refuse such an id (a 500, not a 422)."""
    if any(int(part) > STREAM_ID_PART_MAX for part in value.split("-")):
        raise ValueError("not a stream id: each part is at most 2**64 - 1")
    return value


DeadLetterId = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$"),
    AfterValidator(_fits_a_stream_id),
]
SagaStateFilter = SagaState  # the same enum as the saga and its check constraint
OrderStatusFilter = OrderStatus
MAX_REDRIVE = 1000


class SagaSummary(BaseModel):
    order_id: uuid.UUID
    user_id: uuid.UUID
    order_status: str
    rejection_reason: str | None
    state: str
    version: int  # the optimistic lock's: one more per transition
    definition_version: int  # the saga definition it started on, and finishes on
    total_cents: int
    deadline_at: datetime | None
    overdue: bool
    created_at: datetime
    updated_at: datetime


class TimelineStep(BaseModel):
    """One line of the history; ``kind`` says what an operator looks for in it."""

    id: int
    name: str
    status: str
    detail: str | None
    at: datetime
    kind: Literal["step", "resend", "late_reply", "operator"]
    message_id: uuid.UUID | None  # the message this step sent
    message_type: str | None
    cause_id: str | None  # the reply whose handling made this step


class SagaTimeline(SagaSummary):
    correlation_id: str
    # From its definition's table: the step its state waits on (None when settled), and
    # whether an operator may give up on it (a PENDING order on a forward step).
    waiting_for: StepName | None
    compensable: bool
    resends: int
    late_replies: int
    steps: list[TimelineStep]


class SagaActionOut(BaseModel):
    audit_id: uuid.UUID
    saga: SagaTimeline


class DeadLetterOut(BaseModel):
    id: str
    stream: str
    group: str
    type: str
    attempts: int
    error: str
    consumer: str
    dead_lettered_at: str
    message_id: str | None
    correlation_id: str | None


class DeadLetterDetail(DeadLetterOut):
    entry_id: str
    envelope: dict[str, Any] | None  # None when the entry's envelope is not JSON
    raw_envelope: str


class RedriveFilter(BaseModel):
    """Which dead letters to redrive; every field given must match (none: all of them)."""

    model_config = ConfigDict(extra="forbid")

    type: MessageType | None = None
    stream: StreamName | None = None
    group: StreamName | None = None


class RedriveRequest(BaseModel):
    """Exactly one of ``ids`` or ``filter``."""

    model_config = ConfigDict(extra="forbid")

    ids: list[DeadLetterId] | None = Field(default=None, min_length=1, max_length=MAX_REDRIVE)
    filter: RedriveFilter | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "RedriveRequest":
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of ids or filter")
        return self


class Redriven(BaseModel):
    id: str
    new_entry_id: str


class RedriveFailure(BaseModel):
    id: str
    reason: str


class RedriveResult(BaseModel):
    audit_id: uuid.UUID
    matched: int
    redriven: int
    failed_count: int
    more: bool  # a filter matched more than one request redrives; send it again
    redriven_ids: list[Redriven]
    failed: list[RedriveFailure]


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    at: datetime
    operator: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]


class PartitionedTableOut(BaseModel):
    """A partitioned table as the console shows it (common.partitions.TableStatus)."""

    table: str
    partitions: int
    oldest: datetime | None
    ahead_seconds: float
    default_rows: int  # > 0: writes found no partition (an alert)

    @classmethod
    def of(cls, status: TableStatus) -> "PartitionedTableOut":
        return cls(
            table=status.table,
            partitions=len(status.partitions),
            oldest=status.oldest,
            ahead_seconds=round(status.ahead_seconds, 1),
            default_rows=status.default_rows,
        )
