"""The operator credential and the timeline picture, without I/O."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from common.auth import hash_token
from common.errors import Problem
from orders.admin_auth import find_operator, safe_next
from orders.admin_console import timeline_picture
from orders.admin_schemas import RedriveRequest, SagaTimeline, TimelineStep
from orders.admin_service import _dead_letter_cursor

HASHES = {"alice": hash_token("alice-token"), "bob": hash_token("bob-token")}


def test_an_operator_is_found_by_the_hash_of_their_token_only():
    alice = find_operator("alice-token", HASHES)
    bob = find_operator("bob-token", HASHES)
    assert alice is not None
    assert bob is not None
    assert (alice.name, bob.name) == ("alice", "bob")
    assert find_operator("alice-token ", HASHES) is None
    assert find_operator(HASHES["alice"], HASHES) is None  # the hash itself is no token
    assert find_operator("alice-token", {}) is None


def test_each_operator_token_has_its_own_stable_csrf_token():
    first = find_operator("alice-token", HASHES)
    again = find_operator("alice-token", HASHES)
    other = find_operator("bob-token", HASHES)
    assert first is not None
    assert again is not None
    assert other is not None
    assert first.csrf_token == again.csrf_token
    assert first.csrf_token != other.csrf_token
    assert "alice-token" not in first.csrf_token


def test_after_login_only_a_path_of_the_console_is_followed():
    assert safe_next("/admin/ui/audit?cursor=x") == "/admin/ui/audit?cursor=x"
    for elsewhere in ("https://evil.example/", "//evil.example", "/orders", "/admin\\@x", None):
        assert safe_next(elsewhere) == "/admin/"


def _step(n: int, name: str, status: str, at: datetime, kind: str = "step") -> TimelineStep:
    return TimelineStep(
        id=n,
        name=name,
        status=status,
        detail=None,
        at=at,
        kind=kind,
        message_id=None,
        message_type=None,
        cause_id=None,
    )


def test_the_picture_puts_steps_in_lanes_left_to_right_in_time_up_to_the_deadline():
    began = datetime(2026, 1, 1, tzinfo=UTC)
    steps = [
        _step(1, "reserve_credit", "started", began),
        _step(2, "reserve_credit", "timed_out", began + timedelta(seconds=30)),
        _step(3, "notify", "started", began + timedelta(seconds=30)),
        _step(
            4,
            "reserve_credit",
            "late_reply_compensated",
            began + timedelta(seconds=40),
            "late_reply",
        ),
    ]
    saga = SagaTimeline(
        order_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        order_status="REJECTED",
        rejection_reason="timeout",
        state="awaiting_notification",
        version=3,
        definition_version=1,
        total_cents=100,
        deadline_at=began + timedelta(seconds=90),
        overdue=False,
        created_at=began,
        updated_at=began,
        correlation_id="c",
        resends=0,
        late_replies=1,
        waiting_for="notify",
        compensable=False,
        steps=steps,
    )
    picture = timeline_picture(saga, now=began + timedelta(seconds=60))

    assert [name for name, _ in picture.lanes] == ["reserve_credit", "notify"]
    xs = [point.x for point in picture.points]
    assert xs[0] == picture.left
    assert xs[0] < xs[1] == xs[2] < xs[3]
    assert picture.deadline_x == picture.right  # the latest moment drawn
    assert picture.now_x is not None
    assert xs[3] < picture.now_x < picture.deadline_x
    assert [p.kind for p in picture.points] == ["step", "failed", "step", "late_reply"]
    assert picture.points[1].y == picture.points[0].y != picture.points[2].y
    assert "1 late replies" in picture.description


def test_a_dead_letter_id_past_64_bits_is_a_422_not_a_redis_error():
    """Found by the property test: twenty digits match the pattern yet Redis refuses them."""
    assert RedriveRequest(ids=["18446744073709551615-0"]).ids == ["18446744073709551615-0"]
    with pytest.raises(ValidationError, match="2\\*\\*64"):
        RedriveRequest(ids=["0-20000000000000000000"])


def test_a_dead_letter_cursor_past_64_bits_is_a_400():
    assert _dead_letter_cursor("1-18446744073709551615") == "1-18446744073709551615"
    for cursor in ("1-18446744073709551616", "²-1", "1-"):
        with pytest.raises(Problem) as refused:
            _dead_letter_cursor(cursor)
        assert refused.value.status == 400
