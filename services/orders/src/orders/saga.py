"""The order saga as a pure state machine: (order status, saga state, event) -> decision.

No I/O here, so every transition is unit-tested directly. ``service.py`` loads the order and
its saga, asks :func:`decide` what to do, applies the decision (new status, step history,
deadline) and turns its actions into outbox messages, all in one transaction.

States of the order (what the customer sees): PENDING -> APPROVED | REJECTED;
APPROVED -> CANCELLING -> CANCELLED; PENDING -> CANCELLING too.
States of the saga (what it waits for): a reply to ReserveCredit, a reply to ReleaseCredit,
the notification of the outcome, or nothing (settled). Every waiting state has a deadline.
"""

from dataclasses import dataclass
from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class SagaState(StrEnum):
    AWAITING_CREDIT = "awaiting_credit"
    AWAITING_RELEASE = "awaiting_release"
    AWAITING_NOTIFICATION = "awaiting_notification"
    SETTLED = "settled"


class Action(StrEnum):
    """What the saga asks the world to do; the service maps each to an outbox message."""

    RESERVE_CREDIT = "reserve_credit"
    RELEASE_CREDIT = "release_credit"
    ANNOUNCE_OUTCOME = "announce_outcome"  # OrderApproved / OrderRejected / OrderCancelled


# The notification kind that closes each outcome.
NOTIFICATION_KIND = {
    OrderStatus.APPROVED: "order_approved",
    OrderStatus.REJECTED: "order_rejected",
    OrderStatus.CANCELLED: "order_cancelled",
}


@dataclass(frozen=True)
class CreditReserved:
    pass


@dataclass(frozen=True)
class CreditRejected:
    reason: str


@dataclass(frozen=True)
class CreditReleased:
    pass


@dataclass(frozen=True)
class NotificationRecorded:
    kind: str


@dataclass(frozen=True)
class DeadlinePassed:
    pass


@dataclass(frozen=True)
class CancelRequested:
    pass


@dataclass(frozen=True)
class RetryRequested:
    """An operator asks to send the current step's command again now (orders.admin_service)."""


@dataclass(frozen=True)
class CompensateRequested:
    """An operator gives up on a saga waiting for credit: reject it and release the credit."""

    reason: str = "operator"


Event = (
    CreditReserved
    | CreditRejected
    | CreditReleased
    | NotificationRecorded
    | DeadlinePassed
    | CancelRequested
    | RetryRequested
    | CompensateRequested
)


@dataclass(frozen=True)
class Step:
    """One line of the saga's history."""

    name: str
    status: str
    detail: str | None = None


@dataclass(frozen=True)
class Decision:
    state: SagaState
    order_status: OrderStatus
    rejection_reason: str | None = None
    steps: tuple[Step, ...] = ()
    actions: tuple[Action, ...] = ()
    # True when the saga now waits for something new, so the deadline restarts.
    restart_deadline: bool = False


class NotCancellable(Exception):
    """Only PENDING and APPROVED orders can be cancelled."""


class OperatorActionRefused(Exception):
    """An operator's retry or compensation makes no sense in the saga's state (a 409)."""


TIMEOUT_REASON = "timeout"


def start() -> Decision:
    """A new order: hold its credit."""
    return Decision(
        state=SagaState.AWAITING_CREDIT,
        order_status=OrderStatus.PENDING,
        steps=(Step("reserve_credit", "started"),),
        actions=(Action.RESERVE_CREDIT,),
        restart_deadline=True,
    )


def _announce(
    status: OrderStatus,
    step: Step,
    *,
    rejection_reason: str | None = None,
    compensate: bool = False,
) -> Decision:
    """Enter an outcome (approved, rejected, cancelled) and wait for the customer's notice."""
    actions = (Action.RELEASE_CREDIT,) if compensate else ()
    return Decision(
        state=SagaState.AWAITING_NOTIFICATION,
        order_status=status,
        rejection_reason=rejection_reason,
        steps=(step, Step("notify", "started", NOTIFICATION_KIND[status])),
        actions=(*actions, Action.ANNOUNCE_OUTCOME),
        restart_deadline=True,
    )


def _unchanged(state: SagaState, status: OrderStatus, reason: str | None, step: Step) -> Decision:
    return Decision(state=state, order_status=status, rejection_reason=reason, steps=(step,))


def _cancel(state: SagaState, status: OrderStatus) -> Decision:
    if status not in (OrderStatus.PENDING, OrderStatus.APPROVED):
        raise NotCancellable(f"An order that is {status} cannot be cancelled.")
    return Decision(
        state=SagaState.AWAITING_RELEASE,
        order_status=OrderStatus.CANCELLING,
        steps=(Step("cancel", "requested", f"was {status}"), Step("release_credit", "started")),
        actions=(Action.RELEASE_CREDIT,),
        restart_deadline=True,
    )


# What a re-send asks for in each waiting state: the step's name and the command to send again.
RETRIED_STEP = {
    SagaState.AWAITING_CREDIT: ("reserve_credit", Action.RESERVE_CREDIT),
    SagaState.AWAITING_RELEASE: ("release_credit", Action.RELEASE_CREDIT),
    SagaState.AWAITING_NOTIFICATION: ("notify", Action.ANNOUNCE_OUTCOME),
}


def _operator_retry(state: SagaState, status: OrderStatus, reason: str | None) -> Decision:
    """Send the current step's command again (every command is idempotent per order)."""
    if state not in RETRIED_STEP:
        raise OperatorActionRefused(f"The saga is {state}: there is no step to retry.")
    name, action = RETRIED_STEP[state]
    return Decision(
        state=state,
        order_status=status,
        rejection_reason=reason,
        steps=(Step(name, "retried", "operator"),),
        actions=(action,),
        restart_deadline=True,
    )


def _operator_compensate(state: SagaState, status: OrderStatus, why: str) -> Decision:
    """Reject an order still waiting for credit and release whatever may have been held."""
    if state is not SagaState.AWAITING_CREDIT or status is not OrderStatus.PENDING:
        raise OperatorActionRefused(
            f"Only a PENDING order awaiting credit can be compensated; this one is {status} "
            f"and its saga {state}."
        )
    return _announce(
        OrderStatus.REJECTED,
        Step("reserve_credit", "compensated", why),
        rejection_reason=why,
        compensate=True,
    )


def decide(state: SagaState, status: OrderStatus, reason: str | None, event: Event) -> Decision:
    """The transition table of the saga, flat on purpose: one place to read every rule.

    ``reason`` is the order's current rejection reason (kept when nothing changes).
    Anything not listed is recorded in the history and otherwise ignored.
    """
    match event:
        case RetryRequested():
            return _operator_retry(state, status, reason)
        case CompensateRequested(reason=why):
            return _operator_compensate(state, status, why)
        case CancelRequested():
            return _cancel(state, status)

        case CreditReserved() if state is SagaState.AWAITING_CREDIT:
            return _announce(OrderStatus.APPROVED, Step("reserve_credit", "succeeded"))
        case CreditReserved() if status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
            # A reply after compensation is answered with compensation, never applied.
            return Decision(
                state=state,
                order_status=status,
                rejection_reason=reason,
                steps=(Step("reserve_credit", "late_reply_compensated"),),
                actions=(Action.RELEASE_CREDIT,),
            )
        case CreditReserved():
            # APPROVED: a duplicate; CANCELLING: the release already in flight covers it.
            return _unchanged(state, status, reason, Step("reserve_credit", "reply_ignored"))

        case CreditRejected(reason=why) if state is SagaState.AWAITING_CREDIT:
            return _announce(
                OrderStatus.REJECTED, Step("reserve_credit", "failed", why), rejection_reason=why
            )
        case CreditRejected():
            return _unchanged(state, status, reason, Step("reserve_credit", "reply_ignored"))

        case CreditReleased() if state is SagaState.AWAITING_RELEASE:
            return _announce(OrderStatus.CANCELLED, Step("release_credit", "succeeded"))
        case CreditReleased():
            return _unchanged(state, status, reason, Step("release_credit", "reply_ignored"))

        case NotificationRecorded(kind=kind) if (
            state is SagaState.AWAITING_NOTIFICATION and NOTIFICATION_KIND.get(status) == kind
        ):
            return Decision(
                state=SagaState.SETTLED,
                order_status=status,
                rejection_reason=reason,
                steps=(Step("notify", "succeeded", kind),),
            )
        case NotificationRecorded(kind=kind):
            return _unchanged(state, status, reason, Step("notify", "reply_ignored", kind))

        case DeadlinePassed() if state is SagaState.AWAITING_CREDIT:
            # Compensate: the reservation may yet happen, so release it whatever comes.
            return _announce(
                OrderStatus.REJECTED,
                Step("reserve_credit", "timed_out"),
                rejection_reason=TIMEOUT_REASON,
                compensate=True,
            )
        case DeadlinePassed() if state is SagaState.AWAITING_RELEASE:
            # The order cannot go back; ask again (ReleaseCredit is idempotent).
            return Decision(
                state=state,
                order_status=status,
                rejection_reason=reason,
                steps=(Step("release_credit", "retried"),),
                actions=(Action.RELEASE_CREDIT,),
                restart_deadline=True,
            )
        case DeadlinePassed() if state is SagaState.AWAITING_NOTIFICATION:
            # Notifications are retried by the bus and never fail the order: settle anyway.
            return Decision(
                state=SagaState.SETTLED,
                order_status=status,
                rejection_reason=reason,
                steps=(Step("notify", "timed_out"),),
            )
        case DeadlinePassed():
            return _unchanged(state, status, reason, Step("deadline", "ignored"))
    raise AssertionError(f"unhandled saga event {event!r}")
