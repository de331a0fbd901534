"""Every transition of the order saga, including timeouts, late replies and cancel races."""

import uuid

import pytest

from common.contracts import (
    CreditRejected,
    CreditReleased,
    CreditReserved,
    NotificationRecorded,
    SagaState,
    StepName,
    StepStatus,
)
from common.contracts.users import RejectionReason
from orders.saga import (
    TIMEOUT_REASON,
    Action,
    CancelRequested,
    CompensateRequested,
    DeadlinePassed,
    NotCancellable,
    OperatorActionRefused,
    OrderStatus,
    RetryRequested,
    Step,
    decide,
    start,
)

ORDER = uuid.uuid4()
USER = uuid.uuid4()


# The replies as the bus delivers them (the saga decides on the contracts themselves).
def reserved() -> CreditReserved:
    return CreditReserved(order_id=ORDER, user_id=USER, amount_cents=500)


def rejected(reason: RejectionReason) -> CreditRejected:
    return CreditRejected(order_id=ORDER, user_id=USER, reason=reason)


def released() -> CreditReleased:
    return CreditReleased(order_id=ORDER, user_id=USER, amount_cents=500)


def recorded(kind: str) -> NotificationRecorded:
    return NotificationRecorded(
        notification_id=uuid.uuid4(), order_id=ORDER, user_id=USER, kind=kind
    )


# Short aliases keep the transition tables readable.
S = SagaState
O = OrderStatus  # noqa: E741
N = StepName
T = StepStatus


def test_a_new_order_is_pending_and_asks_for_credit():
    decision = start()
    assert (decision.state, decision.order_status) == (S.AWAITING_CREDIT, O.PENDING)
    assert decision.actions == (Action.RESERVE_CREDIT,)
    assert decision.restart_deadline


def test_credit_reserved_approves_and_announces():
    decision = decide(S.AWAITING_CREDIT, O.PENDING, None, reserved())
    assert (decision.state, decision.order_status) == (S.AWAITING_NOTIFICATION, O.APPROVED)
    assert decision.actions == (Action.ANNOUNCE_OUTCOME,)
    assert decision.steps == (
        Step(N.RESERVE_CREDIT, T.SUCCEEDED),
        Step(N.NOTIFY, T.STARTED, "order_approved"),
    )
    assert decision.restart_deadline


@pytest.mark.parametrize("reason", ["insufficient_credit", "user_not_found", "user_inactive"])
def test_credit_rejected_rejects_with_the_reason(reason: RejectionReason):
    decision = decide(S.AWAITING_CREDIT, O.PENDING, None, rejected(reason))
    assert (decision.order_status, decision.rejection_reason) == (O.REJECTED, reason)
    assert decision.actions == (Action.ANNOUNCE_OUTCOME,)  # nothing was reserved: no release


@pytest.mark.parametrize("attempt", [0, 1, 2])
def test_a_credit_deadline_first_sends_the_request_again(attempt: int):
    """A ReserveCredit lost with Redis's data is no reason to reject a good order."""
    decision = decide(
        S.AWAITING_CREDIT, O.PENDING, None, DeadlinePassed(), attempt=attempt, max_resends=3
    )
    assert (decision.state, decision.order_status) == (S.AWAITING_CREDIT, O.PENDING)
    assert decision.actions == (Action.RESERVE_CREDIT,)
    assert decision.steps == (Step(N.RESERVE_CREDIT, T.RESENT, f"attempt {attempt + 1}"),)
    assert (decision.attempt, decision.restart_deadline) == (attempt + 1, True)


def test_credit_timeout_after_the_last_resend_rejects_and_compensates():
    decision = decide(
        S.AWAITING_CREDIT, O.PENDING, None, DeadlinePassed(), attempt=3, max_resends=3
    )
    assert (decision.order_status, decision.rejection_reason) == (O.REJECTED, TIMEOUT_REASON)
    assert decision.state is S.COMPENSATING  # waits for the release to be confirmed
    assert decision.actions == (Action.RELEASE_CREDIT,)
    assert decision.steps[0] == Step(N.RESERVE_CREDIT, T.TIMED_OUT)
    assert (decision.attempt, decision.restart_deadline) == (0, True)


def test_a_compensation_is_sent_again_at_every_deadline_until_confirmed():
    decision = decide(S.COMPENSATING, O.REJECTED, TIMEOUT_REASON, DeadlinePassed(), attempt=7)
    assert (decision.state, decision.order_status) == (S.COMPENSATING, O.REJECTED)
    assert decision.rejection_reason == TIMEOUT_REASON
    assert decision.actions == (Action.RELEASE_CREDIT,)
    assert decision.attempt == 8


def test_a_confirmed_compensation_announces_the_rejection():
    decision = decide(S.COMPENSATING, O.REJECTED, TIMEOUT_REASON, released())
    assert (decision.state, decision.order_status) == (S.AWAITING_NOTIFICATION, O.REJECTED)
    assert decision.rejection_reason == TIMEOUT_REASON
    assert decision.actions == (Action.ANNOUNCE_OUTCOME,)
    assert decision.steps[-1] == Step(N.NOTIFY, T.STARTED, "order_rejected")


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (S.COMPENSATING, O.REJECTED),  # timed out, release in flight
        (S.AWAITING_NOTIFICATION, O.REJECTED),  # timed out, notice pending
        (S.SETTLED, O.REJECTED),
        (S.AWAITING_NOTIFICATION, O.CANCELLED),
        (S.SETTLED, O.CANCELLED),
    ],
)
def test_a_late_credit_reserved_is_answered_with_compensation(state: S, status: O):
    decision = decide(state, status, TIMEOUT_REASON, reserved())
    assert (decision.state, decision.order_status) == (state, status)  # never applied
    assert decision.rejection_reason == TIMEOUT_REASON
    assert decision.actions == (Action.RELEASE_CREDIT,)
    assert not decision.restart_deadline


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (S.AWAITING_NOTIFICATION, O.APPROVED),  # a redelivered reply
        (S.SETTLED, O.APPROVED),
        (S.AWAITING_RELEASE, O.CANCELLING),  # cancelled while pending: the release covers it
    ],
)
def test_a_duplicate_or_covered_credit_reserved_changes_nothing(state: S, status: O):
    decision = decide(state, status, None, reserved())
    assert (decision.state, decision.order_status, decision.actions) == (state, status, ())


def test_a_late_credit_rejected_changes_nothing():
    decision = decide(
        S.AWAITING_NOTIFICATION, O.REJECTED, TIMEOUT_REASON, rejected("user_inactive")
    )
    assert (decision.order_status, decision.rejection_reason) == (O.REJECTED, TIMEOUT_REASON)
    assert decision.actions == ()


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (S.AWAITING_CREDIT, O.PENDING),
        (S.AWAITING_NOTIFICATION, O.APPROVED),
        (S.SETTLED, O.APPROVED),
    ],
)
def test_pending_and_approved_orders_can_be_cancelled(state: S, status: O):
    decision = decide(state, status, None, CancelRequested())
    assert (decision.state, decision.order_status) == (S.AWAITING_RELEASE, O.CANCELLING)
    assert decision.actions == (Action.RELEASE_CREDIT,)
    assert decision.restart_deadline


@pytest.mark.parametrize("status", [O.REJECTED, O.CANCELLING, O.CANCELLED])
def test_other_orders_cannot_be_cancelled(status: O):
    with pytest.raises(NotCancellable):
        decide(S.SETTLED, status, None, CancelRequested())


def test_credit_released_completes_the_cancel():
    decision = decide(S.AWAITING_RELEASE, O.CANCELLING, None, released())
    assert (decision.state, decision.order_status) == (S.AWAITING_NOTIFICATION, O.CANCELLED)
    assert decision.actions == (Action.ANNOUNCE_OUTCOME,)


def test_release_timeout_asks_again_and_never_goes_back():
    decision = decide(S.AWAITING_RELEASE, O.CANCELLING, None, DeadlinePassed())
    assert (decision.state, decision.order_status) == (S.AWAITING_RELEASE, O.CANCELLING)
    assert decision.actions == (Action.RELEASE_CREDIT,)
    assert (decision.attempt, decision.restart_deadline) == (1, True)


def test_credit_released_after_a_timeout_compensation_is_ignored():
    decision = decide(S.AWAITING_NOTIFICATION, O.REJECTED, TIMEOUT_REASON, released())
    assert (decision.state, decision.order_status, decision.actions) == (
        S.AWAITING_NOTIFICATION,
        O.REJECTED,
        (),
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (O.APPROVED, "order_approved"),
        (O.REJECTED, "order_rejected"),
        (O.CANCELLED, "order_cancelled"),
    ],
)
def test_the_matching_notification_settles_the_saga(status: O, kind: str):
    decision = decide(S.AWAITING_NOTIFICATION, status, None, recorded(kind))
    assert (decision.state, decision.order_status) == (S.SETTLED, status)


def test_a_stale_notification_does_not_settle_a_cancel_in_flight():
    # Approved, then cancelled before the approval's notice was recorded.
    decision = decide(S.AWAITING_RELEASE, O.CANCELLING, None, recorded("order_approved"))
    assert decision.state is S.AWAITING_RELEASE


def test_a_notification_deadline_announces_the_outcome_again():
    """The outcome is re-announced until NotificationRecorded: every outcome gets its notice."""
    decision = decide(S.AWAITING_NOTIFICATION, O.APPROVED, None, DeadlinePassed(), attempt=2)
    assert (decision.state, decision.order_status) == (S.AWAITING_NOTIFICATION, O.APPROVED)
    assert decision.actions == (Action.ANNOUNCE_OUTCOME,)
    assert decision.steps == (Step(N.NOTIFY, T.RESENT, "attempt 3"),)
    assert decision.attempt == 3


def test_a_deadline_on_a_settled_saga_is_ignored():
    decision = decide(S.SETTLED, O.APPROVED, None, DeadlinePassed())
    assert (decision.state, decision.order_status, decision.actions) == (S.SETTLED, O.APPROVED, ())


def test_cancel_racing_a_late_reservation_releases_exactly_once_per_cause():
    """Cancel while pending, then the reservation lands: the in-flight release covers it."""
    cancelling = decide(S.AWAITING_CREDIT, O.PENDING, None, CancelRequested())
    late = decide(cancelling.state, cancelling.order_status, None, reserved())
    confirmed = decide(late.state, late.order_status, None, released())
    assert cancelling.actions == (Action.RELEASE_CREDIT,)
    assert late.actions == ()
    assert confirmed.order_status is O.CANCELLED


# -- operator actions (orders.admin_service) -------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status", "step", "action"),
    [
        (S.AWAITING_CREDIT, O.PENDING, "reserve_credit", Action.RESERVE_CREDIT),
        (S.AWAITING_RELEASE, O.CANCELLING, "release_credit", Action.RELEASE_CREDIT),
        (S.AWAITING_NOTIFICATION, O.APPROVED, "notify", Action.ANNOUNCE_OUTCOME),
        (S.AWAITING_NOTIFICATION, O.REJECTED, "notify", Action.ANNOUNCE_OUTCOME),
    ],
)
def test_an_operator_retry_resends_the_current_step_and_restarts_its_deadline(
    state: S, status: O, step: StepName, action: Action
):
    decision = decide(state, status, "why", RetryRequested())
    assert (decision.state, decision.order_status, decision.rejection_reason) == (
        state,
        status,
        "why",
    )
    assert decision.actions == (action,)
    assert decision.steps == (Step(step, T.RETRIED, "operator"),)
    assert decision.restart_deadline


@pytest.mark.parametrize("status", [O.APPROVED, O.REJECTED, O.CANCELLED])
def test_a_settled_saga_has_nothing_to_retry(status: O):
    with pytest.raises(OperatorActionRefused):
        decide(S.SETTLED, status, None, RetryRequested())


def test_an_operator_compensation_rejects_and_releases_the_credit():
    decision = decide(S.AWAITING_CREDIT, O.PENDING, None, CompensateRequested())
    assert (decision.state, decision.order_status, decision.rejection_reason) == (
        S.COMPENSATING,
        O.REJECTED,
        "operator",
    )
    assert decision.actions == (Action.RELEASE_CREDIT,)
    assert decision.steps == (
        Step(N.RESERVE_CREDIT, T.COMPENSATED, "operator"),
        Step(N.RELEASE_CREDIT, T.STARTED),
    )
    assert decision.restart_deadline


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (S.AWAITING_NOTIFICATION, O.APPROVED),
        (S.AWAITING_NOTIFICATION, O.REJECTED),
        (S.AWAITING_RELEASE, O.CANCELLING),
        (S.SETTLED, O.APPROVED),
        (S.SETTLED, O.CANCELLED),
    ],
)
def test_compensation_is_refused_once_credit_is_no_longer_awaited(state: S, status: O):
    with pytest.raises(OperatorActionRefused):
        decide(state, status, None, CompensateRequested())
