"""The order saga as a pure state machine: (order status, saga state, event) -> decision.

No I/O here, so every transition is unit-tested directly. ``service.py`` loads the order and
its saga, asks :func:`decide` what to do, applies the decision (new status, step history,
deadline) and turns its actions into outbox messages, all in one transaction.

States of the order (what the customer sees): PENDING -> APPROVED | REJECTED;
APPROVED -> CANCELLING -> CANCELLED; PENDING -> CANCELLING too.
States of the saga (what it waits for): a reply to ReserveCredit, a reply to ReleaseCredit
(after a cancel, or compensating a timeout), the notification of the outcome, or nothing
(settled). Every waiting state has a deadline, and nothing is fire-and-forget:

* waiting for credit, a deadline first re-sends ReserveCredit (idempotent per order), up to
  ``max_resends`` times: a command lost with Redis's data is no reason to reject a good
  order. Only then is the order REJECTED (``timeout``) and its credit released;
* waiting for a release, each deadline re-sends ReleaseCredit until CreditReleased comes: a
  lost release would otherwise hold the customer's credit for ever;
* waiting for the notification, each deadline re-announces the outcome until
  NotificationRecorded comes: every outcome gets its one notification.

``attempt`` counts the re-sends of the current wait (the service stretches each deadline
with it, so re-sends back off); it restarts at 0 whenever the saga waits for something new.
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
    AWAITING_RELEASE = "awaiting_release"  # cancelling: the order is CANCELLING
    COMPENSATING = "compensating"  # timed out: the order is REJECTED, its credit on its way back
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
    # True when the saga (re)starts a wait, so the deadline restarts.
    restart_deadline: bool = False
    # Re-sends of the current wait: 0 for a new wait, one more for each re-send.
    attempt: int = 0


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


def _announce(status: OrderStatus, step: Step, *, rejection_reason: str | None = None) -> Decision:
    """Enter an outcome (approved, rejected, cancelled) and wait for the customer's notice."""
    return Decision(
        state=SagaState.AWAITING_NOTIFICATION,
        order_status=status,
        rejection_reason=rejection_reason,
        steps=(step, Step("notify", "started", NOTIFICATION_KIND[status])),
        actions=(Action.ANNOUNCE_OUTCOME,),
        restart_deadline=True,
    )


def _unchanged(state: SagaState, status: OrderStatus, reason: str | None, step: Step) -> Decision:
    return Decision(state=state, order_status=status, rejection_reason=reason, steps=(step,))


def _compensate(step: Step, reason: str) -> Decision:
    """Reject a pending order. The reservation may yet happen, so release it whatever comes,
    and wait until the release is confirmed before announcing the rejection."""
    return Decision(
        state=SagaState.COMPENSATING,
        order_status=OrderStatus.REJECTED,
        rejection_reason=reason,
        steps=(step, Step("release_credit", "started")),
        actions=(Action.RELEASE_CREDIT,),
        restart_deadline=True,
    )


def _resend(
    state: SagaState,
    status: OrderStatus,
    reason: str | None,
    attempt: int,
    step: str,
    action: Action,
) -> Decision:
    """Same wait, its command (or announcement) sent again, a longer deadline."""
    return Decision(
        state=state,
        order_status=status,
        rejection_reason=reason,
        steps=(Step(step, "resent", f"attempt {attempt + 1}"),),
        actions=(action,),
        restart_deadline=True,
        attempt=attempt + 1,
    )


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
    SagaState.COMPENSATING: ("release_credit", Action.RELEASE_CREDIT),
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
    return _compensate(Step("reserve_credit", "compensated", why), why)


def decide(
    state: SagaState,
    status: OrderStatus,
    reason: str | None,
    event: Event,
    *,
    attempt: int = 0,
    max_resends: int = 0,
) -> Decision:
    """The transition table of the saga, flat on purpose: one place to read every rule.

    ``reason`` is the order's current rejection reason (kept when nothing changes);
    ``attempt`` the re-sends of the current wait so far, ``max_resends`` how many a credit
    request gets before the order is compensated. Anything not listed is recorded in the
    history and otherwise ignored.
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
        case CreditReleased() if state is SagaState.COMPENSATING:
            return _announce(status, Step("release_credit", "succeeded"), rejection_reason=reason)
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

        case DeadlinePassed() if state is SagaState.AWAITING_CREDIT and attempt < max_resends:
            return _resend(state, status, reason, attempt, "reserve_credit", Action.RESERVE_CREDIT)
        case DeadlinePassed() if state is SagaState.AWAITING_CREDIT:
            # Re-sends spent: compensate.
            return _compensate(Step("reserve_credit", "timed_out"), TIMEOUT_REASON)
        case DeadlinePassed() if state in (SagaState.AWAITING_RELEASE, SagaState.COMPENSATING):
            # The order cannot go back; ask again (ReleaseCredit is idempotent) until it is done.
            return _resend(state, status, reason, attempt, "release_credit", Action.RELEASE_CREDIT)
        case DeadlinePassed() if state is SagaState.AWAITING_NOTIFICATION:
            # The notification never fails the order, but it must arrive: announce again.
            return _resend(state, status, reason, attempt, "notify", Action.ANNOUNCE_OUTCOME)
        case DeadlinePassed():
            return _unchanged(state, status, reason, Step("deadline", "ignored"))
    raise AssertionError(f"unhandled saga event {event!r}")
