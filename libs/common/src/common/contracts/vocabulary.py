"""The saga's vocabulary, typed: its states, the names of its steps and
what happened to them, the notification kinds.

These strings are stored (``orders.sagas.state``, ``orders.saga_steps.name``,
``notifications.notifications.kind``), shown to operators and carried in messages, so each
is spelt once, here, as a ``StrEnum``: a misspelt member is a mypy error, and a member
compares equal to its string, so rows written by an older release read back unchanged.
"""

from enum import StrEnum


class SagaState(StrEnum):
    """What an order's saga waits for (``orders.saga`` holds the table of each state)."""

    AWAITING_CREDIT = "awaiting_credit"
    AWAITING_STOCK = "awaiting_stock"  # definition version 2 only (orders.saga)
    AWAITING_RELEASE = "awaiting_release"  # cancelling: the order is CANCELLING
    COMPENSATING = "compensating"  # gave up: the order is REJECTED, its credit on its way back
    AWAITING_NOTIFICATION = "awaiting_notification"
    SETTLED = "settled"


class StepName(StrEnum):
    """A line of a saga's history is one of these steps (with a status and a detail)."""

    RESERVE_CREDIT = "reserve_credit"
    CHECK_STOCK = "check_stock"  # definition version 2 only
    RELEASE_CREDIT = "release_credit"
    NOTIFY = "notify"
    CANCEL = "cancel"
    DEADLINE = "deadline"


class StepStatus(StrEnum):
    """What happened to a step, on one line of the history."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RESENT = "resent"  # by the saga's timer, a deadline having passed
    RETRIED = "retried"  # by an operator
    TIMED_OUT = "timed_out"
    COMPENSATED = "compensated"  # an operator gave up on it
    REQUESTED = "requested"
    LATE_REPLY_COMPENSATED = "late_reply_compensated"
    REPLY_IGNORED = "reply_ignored"
    IGNORED = "ignored"


class NotificationKind(StrEnum):
    """What a user is told; an outcome's kind closes its saga (``NotificationRecorded``)."""

    ORDER_APPROVED = "order_approved"
    ORDER_REJECTED = "order_rejected"
    ORDER_CANCELLED = "order_cancelled"
    WELCOME = "welcome"
