"""The order saga as a pure state machine: (definition, order status, saga state, event) ->
decision.

No I/O here, so every transition is unit-tested directly. ``service.py`` loads the order and
its saga, asks :func:`decide` what to do, applies the decision (new status, step history,
deadline) and turns its actions into outbox messages, all in one transaction.

States of the order (what the customer sees): PENDING -> APPROVED | REJECTED;
APPROVED -> CANCELLING -> CANCELLED; PENDING -> CANCELLING too.
States of the saga (what it waits for) are rows of a :class:`Definition`'s table: each names
the step it waits on, the command it sends (on entering, again at each deadline, and when an
operator retries), the setting that holds its deadline, and its compensation. Nothing is
fire-and-forget:

* waiting on a forward step (credit; the stock check of version 2), a deadline first re-sends
  the command (idempotent per order), up to ``max_resends`` times: a command lost with Redis's
  data is no reason to reject a good order. Only then is the order REJECTED (``timeout``) and
  the row's compensation (ReleaseCredit) sent;
* a row without compensation (waiting for a release, for the notification) never gives up:
  each deadline re-sends its command until the reply comes, so a lost release cannot hold the
  customer's credit for ever and every outcome gets its one notification.

``attempt`` counts the re-sends of the current wait (the service stretches each deadline
with it, so re-sends back off); it restarts at 0 whenever the saga waits for something new.

Versions: a saga records the version of the definition it started on and is decided by that
definition until it settles, so a release that adds a step (version 2 adds the stock check)
lets sagas already waiting finish on the definition they began with.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from common.contracts import (
    CreditRejected,
    CreditReleased,
    CreditReserved,
    NotificationKind,
    NotificationRecorded,
    SagaState,
    StepName,
    StepStatus,
)
from common.contracts.inventory import StockChecked


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class Action(StrEnum):
    """What the saga asks the world to do; the service maps each to an outbox message."""

    RESERVE_CREDIT = "reserve_credit"
    CHECK_STOCK = "check_stock"
    RELEASE_CREDIT = "release_credit"
    ANNOUNCE_OUTCOME = "announce_outcome"  # OrderApproved / OrderRejected / OrderCancelled


# The notification kind that closes each outcome.
NOTIFICATION_KIND = {
    OrderStatus.APPROVED: NotificationKind.ORDER_APPROVED,
    OrderStatus.REJECTED: NotificationKind.ORDER_REJECTED,
    OrderStatus.CANCELLED: NotificationKind.ORDER_CANCELLED,
}

# The settings (orders.settings.SagaSettings: settings.saga) holding a state's deadline (s).
TimeoutSetting = Literal[
    "credit_timeout_seconds",
    "stock_timeout_seconds",
    "release_timeout_seconds",
    "notification_timeout_seconds",
]


@dataclass(frozen=True)
class Wait:
    """One row of a definition's table: what the saga does while in one state."""

    step: StepName  # the step it waits on; its history lines carry this name
    command: Action  # sent on entering, again at each deadline and on an operator's retry
    timeout: TimeoutSetting  # the setting with the state's deadline (stretched per re-send)
    # When re-sends are spent (or an operator gives up): the order is REJECTED and this command
    # undoes what may be held. None: the saga never gives up here, it re-sends until answered.
    compensation: Action | None = None


@dataclass(frozen=True)
class Definition:
    """A version of the saga: its table, and the forward steps that lead to approval.

    ``forward`` lists the states before the pivot in order: a success in one moves the saga to
    the next, a success in the last approves the order. Released definitions never change;
    a change is a new version (``DEFINITIONS``), and sagas keep the version they started on.
    """

    version: int
    forward: tuple[SagaState, ...]
    table: Mapping[SagaState, Wait] = field(hash=False)

    def with_step(self, state: SagaState, wait: Wait, *, version: int) -> "Definition":
        """This definition with one more forward step, last before the pivot: a new version."""
        return Definition(
            version=version, forward=(*self.forward, state), table={**self.table, state: wait}
        )

    def next_forward(self, state: SagaState) -> SagaState | None:
        """The forward step after ``state``; None when ``state`` is the last (approve)."""
        index = self.forward.index(state) + 1
        return self.forward[index] if index < len(self.forward) else None

    def step_of(self, command: Action) -> StepName:
        """The step a command belongs to on the timeline (the row that sends it)."""
        for wait in self.table.values():
            if wait.command is command:
                return wait.step
        raise LookupError(f"no row of definition {self.version} sends {command}")


_RELEASE = Wait(StepName.RELEASE_CREDIT, Action.RELEASE_CREDIT, "release_timeout_seconds")

V1 = Definition(
    version=1,
    forward=(SagaState.AWAITING_CREDIT,),
    table={
        SagaState.AWAITING_CREDIT: Wait(
            StepName.RESERVE_CREDIT,
            Action.RESERVE_CREDIT,
            "credit_timeout_seconds",
            compensation=Action.RELEASE_CREDIT,
        ),
        SagaState.AWAITING_RELEASE: _RELEASE,  # a cancel
        SagaState.COMPENSATING: _RELEASE,  # a forward step given up on
        SagaState.AWAITING_NOTIFICATION: Wait(
            StepName.NOTIFY, Action.ANNOUNCE_OUTCOME, "notification_timeout_seconds"
        ),
    },
)

# Version 2 checks the items are in stock once the credit is held. The check holds nothing,
# so giving up on it only gives the credit back. Not the default (one more command and reply
# per order): ``ORDERS_SAGA_DEFINITION_VERSION=2`` starts new sagas on it.
V2 = V1.with_step(
    SagaState.AWAITING_STOCK,
    Wait(
        StepName.CHECK_STOCK,
        Action.CHECK_STOCK,
        "stock_timeout_seconds",
        compensation=Action.RELEASE_CREDIT,
    ),
    version=2,
)

DEFINITIONS: dict[int, Definition] = {1: V1, 2: V2}


class UnknownDefinition(LookupError):
    """A saga recorded a definition version this release does not have."""


def definition(version: int) -> Definition:
    """The registered definition of ``version``: the one a saga started on decides it."""
    try:
        return DEFINITIONS[version]
    except KeyError:
        raise UnknownDefinition(f"no saga definition version {version}") from None


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
    """An operator gives up on a forward step: reject the order and release the credit."""

    reason: str = "operator"


# The replies are the bus's own contracts (one type per message, no saga-side copies); the
# rest are what the service, the timer and operators ask of the saga.
Reply = CreditReserved | CreditRejected | CreditReleased | NotificationRecorded | StockChecked
Event = Reply | DeadlinePassed | CancelRequested | RetryRequested | CompensateRequested


@dataclass(frozen=True)
class Step:
    """One line of the saga's history."""

    name: StepName
    status: StepStatus
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
OUT_OF_STOCK_REASON = "out_of_stock"


def _enter(definition: Definition, state: SagaState, step: Step | None = None) -> Decision:
    """Start waiting on a forward step: its command goes out, its deadline starts."""
    wait = definition.table[state]
    return Decision(
        state=state,
        order_status=OrderStatus.PENDING,
        steps=(*((step,) if step else ()), Step(wait.step, StepStatus.STARTED)),
        actions=(wait.command,),
        restart_deadline=True,
    )


def start(definition: Definition = V1) -> Decision:
    """A new order: its definition's first step (holding its credit)."""
    return _enter(definition, definition.forward[0])


def _announce(status: OrderStatus, step: Step, *, rejection_reason: str | None = None) -> Decision:
    """Enter an outcome (approved, rejected, cancelled) and wait for the customer's notice."""
    return Decision(
        state=SagaState.AWAITING_NOTIFICATION,
        order_status=status,
        rejection_reason=rejection_reason,
        steps=(step, Step(StepName.NOTIFY, StepStatus.STARTED, NOTIFICATION_KIND[status])),
        actions=(Action.ANNOUNCE_OUTCOME,),
        restart_deadline=True,
    )


def _succeeded(definition: Definition, state: SagaState) -> Decision:
    """A forward step is done: on to the next one, or, after the last, approve."""
    done = Step(definition.table[state].step, StepStatus.SUCCEEDED)
    following = definition.next_forward(state)
    if following is None:
        return _announce(OrderStatus.APPROVED, done)
    return _enter(definition, following, done)


def _unchanged(state: SagaState, status: OrderStatus, reason: str | None, step: Step) -> Decision:
    return Decision(state=state, order_status=status, rejection_reason=reason, steps=(step,))


def _compensate(definition: Definition, state: SagaState, step: Step, reason: str) -> Decision:
    """Reject a pending order. What the step may hold can yet be taken, so undo it whatever
    comes (the row's compensation), and wait until that is confirmed before announcing."""
    compensation = definition.table[state].compensation
    assert compensation is not None, f"{state} has no compensation"
    return Decision(
        state=SagaState.COMPENSATING,
        order_status=OrderStatus.REJECTED,
        rejection_reason=reason,
        steps=(step, Step(definition.step_of(compensation), StepStatus.STARTED)),
        actions=(compensation,),
        restart_deadline=True,
    )


def _resend(
    wait: Wait, state: SagaState, status: OrderStatus, reason: str | None, attempt: int
) -> Decision:
    """Same wait, its command (or announcement) sent again, a longer deadline."""
    return Decision(
        state=state,
        order_status=status,
        rejection_reason=reason,
        steps=(Step(wait.step, StepStatus.RESENT, f"attempt {attempt + 1}"),),
        actions=(wait.command,),
        restart_deadline=True,
        attempt=attempt + 1,
    )


def _deadline(
    definition: Definition,
    state: SagaState,
    status: OrderStatus,
    reason: str | None,
    *,
    attempt: int,
    max_resends: int,
) -> Decision:
    """Re-send the state's command; a forward step whose re-sends are spent is compensated."""
    wait = definition.table.get(state)
    if wait is None:
        return _unchanged(state, status, reason, Step(StepName.DEADLINE, StepStatus.IGNORED))
    if wait.compensation is not None and attempt >= max_resends:
        return _compensate(definition, state, Step(wait.step, StepStatus.TIMED_OUT), TIMEOUT_REASON)
    return _resend(wait, state, status, reason, attempt)


def _cancel(state: SagaState, status: OrderStatus) -> Decision:
    if status not in (OrderStatus.PENDING, OrderStatus.APPROVED):
        raise NotCancellable(f"An order that is {status} cannot be cancelled.")
    return Decision(
        state=SagaState.AWAITING_RELEASE,
        order_status=OrderStatus.CANCELLING,
        steps=(
            Step(StepName.CANCEL, StepStatus.REQUESTED, f"was {status}"),
            Step(StepName.RELEASE_CREDIT, StepStatus.STARTED),
        ),
        actions=(Action.RELEASE_CREDIT,),
        restart_deadline=True,
    )


def _operator_retry(
    definition: Definition, state: SagaState, status: OrderStatus, reason: str | None
) -> Decision:
    """Send the current step's command again (every command is idempotent per order)."""
    wait = definition.table.get(state)
    if wait is None:
        raise OperatorActionRefused(f"The saga is {state}: there is no step to retry.")
    return Decision(
        state=state,
        order_status=status,
        rejection_reason=reason,
        steps=(Step(wait.step, StepStatus.RETRIED, "operator"),),
        actions=(wait.command,),
        restart_deadline=True,
    )


def compensable(definition: Definition, state: SagaState, status: str) -> bool:
    """May an operator give up on this saga? Only a PENDING order on a forward step."""
    wait = definition.table.get(state)
    return (
        state in definition.forward
        and wait is not None
        and wait.compensation is not None
        and status == OrderStatus.PENDING
    )


def _operator_compensate(
    definition: Definition, state: SagaState, status: OrderStatus, why: str
) -> Decision:
    """Reject an order still on a forward step and undo whatever may have been held."""
    wait = definition.table[state] if compensable(definition, state, status) else None
    if wait is None:
        raise OperatorActionRefused(
            f"Only a PENDING order on a forward step (awaiting credit) can be compensated; this "
            f"one is {status} and its saga {state}."
        )
    return _compensate(definition, state, Step(wait.step, StepStatus.COMPENSATED, why), why)


def decide(
    state: SagaState,
    status: OrderStatus,
    reason: str | None,
    event: Event,
    *,
    attempt: int = 0,
    max_resends: int = 0,
    definition: Definition = V1,
) -> Decision:
    """The transition rules of the saga, flat on purpose: one place to read every rule.

    ``definition`` is the version the saga started on (its table: which states wait on what,
    which forward step follows which); ``reason`` the order's current rejection reason (kept
    when nothing changes); ``attempt`` the re-sends of the current wait so far, ``max_resends``
    how many a forward step gets before the order is compensated. Anything not listed is
    recorded in the history and otherwise ignored.
    """
    match event:
        case RetryRequested():
            return _operator_retry(definition, state, status, reason)
        case CompensateRequested(reason=why):
            return _operator_compensate(definition, state, status, why)
        case CancelRequested():
            return _cancel(state, status)

        case CreditReserved() if state is SagaState.AWAITING_CREDIT:
            return _succeeded(definition, state)
        case CreditReserved() if status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
            # A reply after compensation is answered with compensation, never applied.
            return Decision(
                state=state,
                order_status=status,
                rejection_reason=reason,
                steps=(Step(StepName.RESERVE_CREDIT, StepStatus.LATE_REPLY_COMPENSATED),),
                actions=(Action.RELEASE_CREDIT,),
            )
        case CreditReserved():
            # APPROVED: a duplicate; CANCELLING: the release already in flight covers it.
            return _unchanged(
                state, status, reason, Step(StepName.RESERVE_CREDIT, StepStatus.REPLY_IGNORED)
            )

        case CreditRejected(reason=why) if state is SagaState.AWAITING_CREDIT:
            return _announce(
                OrderStatus.REJECTED,
                Step(StepName.RESERVE_CREDIT, StepStatus.FAILED, why),
                rejection_reason=why,
            )
        case CreditRejected():
            return _unchanged(
                state, status, reason, Step(StepName.RESERVE_CREDIT, StepStatus.REPLY_IGNORED)
            )

        case StockChecked(in_stock=True) if state is SagaState.AWAITING_STOCK:
            return _succeeded(definition, state)
        case StockChecked() if state is SagaState.AWAITING_STOCK:
            # The credit is held by now: give it back before announcing the rejection.
            failed = Step(StepName.CHECK_STOCK, StepStatus.FAILED, OUT_OF_STOCK_REASON)
            return _compensate(definition, state, failed, OUT_OF_STOCK_REASON)
        case StockChecked():
            # A check holds nothing: a late or duplicate answer needs no compensation.
            return _unchanged(
                state, status, reason, Step(StepName.CHECK_STOCK, StepStatus.REPLY_IGNORED)
            )

        case CreditReleased() if state is SagaState.AWAITING_RELEASE:
            return _announce(
                OrderStatus.CANCELLED, Step(StepName.RELEASE_CREDIT, StepStatus.SUCCEEDED)
            )
        case CreditReleased() if state is SagaState.COMPENSATING:
            return _announce(
                status,
                Step(StepName.RELEASE_CREDIT, StepStatus.SUCCEEDED),
                rejection_reason=reason,
            )
        case CreditReleased():
            return _unchanged(
                state, status, reason, Step(StepName.RELEASE_CREDIT, StepStatus.REPLY_IGNORED)
            )

        case NotificationRecorded(kind=kind) if (
            state is SagaState.AWAITING_NOTIFICATION and NOTIFICATION_KIND.get(status) == kind
        ):
            return Decision(
                state=SagaState.SETTLED,
                order_status=status,
                rejection_reason=reason,
                steps=(Step(StepName.NOTIFY, StepStatus.SUCCEEDED, kind),),
            )
        case NotificationRecorded(kind=kind):
            return _unchanged(
                state, status, reason, Step(StepName.NOTIFY, StepStatus.REPLY_IGNORED, kind)
            )

        case DeadlinePassed():
            return _deadline(
                definition, state, status, reason, attempt=attempt, max_resends=max_resends
            )
    raise AssertionError(f"unhandled saga event {event!r}")
