"""The saga's definition table: a step is one row plus its cases, and versions stay apart."""

import ast
import uuid
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from common.contracts import SagaState, StepName, StepStatus
from common.contracts.inventory import StockChecked
from common.testing.replies import credit_released, credit_reserved, stock_checked
from orders import saga
from orders.consumers import handlers
from orders.models import SAGA_STATES
from orders.saga import (
    DEFINITIONS,
    OUT_OF_STOCK_REASON,
    TIMEOUT_REASON,
    V1,
    Action,
    CancelRequested,
    CompensateRequested,
    DeadlinePassed,
    Decision,
    Definition,
    Event,
    OrderStatus,
    RetryRequested,
    Step,
    TimeoutSetting,
    Wait,
    decide,
    start,
)
from orders.settings import SagaSettings, Settings

S = SagaState
O = OrderStatus  # noqa: E741
ORDER = uuid.uuid4()
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"

# The row docs/adding-a-saga-step.md adds: check the stock once the credit is held.
STOCK_ROW = Wait(
    StepName.CHECK_STOCK,
    Action.CHECK_STOCK,
    "stock_timeout_seconds",
    compensation=Action.RELEASE_CREDIT,
)


@pytest.fixture
def with_stock() -> Definition:
    """A saga built from the version 1 table with one extra row."""
    return V1.with_step(S.AWAITING_STOCK, STOCK_ROW, version=99)


def step(definition: Definition, decision: Decision, event: Event, **kw: int) -> Decision:
    return decide(
        decision.state,
        decision.order_status,
        decision.rejection_reason,
        event,
        definition=definition,
        **kw,
    )


def test_the_extra_row_runs_between_the_credit_and_the_approval(with_stock: Definition):
    begun = start(with_stock)
    assert begun.actions == (Action.RESERVE_CREDIT,)

    held = step(with_stock, begun, credit_reserved(ORDER))
    assert (held.state, held.order_status) == (S.AWAITING_STOCK, O.PENDING)
    assert held.actions == (Action.CHECK_STOCK,)
    assert held.steps == (
        Step(StepName.RESERVE_CREDIT, StepStatus.SUCCEEDED),
        Step(StepName.CHECK_STOCK, StepStatus.STARTED),
    )
    assert (held.restart_deadline, held.attempt) == (True, 0)

    approved = step(with_stock, held, stock_checked(ORDER, in_stock=True))
    assert (approved.state, approved.order_status) == (S.AWAITING_NOTIFICATION, O.APPROVED)
    assert approved.actions == (Action.ANNOUNCE_OUTCOME,)
    assert approved.steps[0] == Step(StepName.CHECK_STOCK, StepStatus.SUCCEEDED)


def test_the_same_reply_on_version_1_approves_at_once():
    """The table, not the reply, says what follows: version 1 has no stock row."""
    approved = step(V1, start(V1), credit_reserved(ORDER))
    assert (approved.state, approved.order_status) == (S.AWAITING_NOTIFICATION, O.APPROVED)


def test_out_of_stock_gives_the_credit_back_before_rejecting(with_stock: Definition):
    held = step(with_stock, start(with_stock), credit_reserved(ORDER))
    refused = step(with_stock, held, stock_checked(ORDER, in_stock=False))
    assert (refused.state, refused.order_status) == (S.COMPENSATING, O.REJECTED)
    assert refused.rejection_reason == OUT_OF_STOCK_REASON
    assert refused.actions == (Action.RELEASE_CREDIT,)

    released = step(with_stock, refused, credit_released(ORDER))
    assert (released.state, released.order_status) == (S.AWAITING_NOTIFICATION, O.REJECTED)
    assert released.rejection_reason == OUT_OF_STOCK_REASON


def test_the_row_s_deadline_resends_then_compensates(with_stock: Definition):
    held = step(with_stock, start(with_stock), credit_reserved(ORDER))
    again = step(with_stock, held, DeadlinePassed(), attempt=0, max_resends=1)
    assert again.actions == (Action.CHECK_STOCK,)
    assert again.steps == (Step(StepName.CHECK_STOCK, StepStatus.RESENT, "attempt 1"),)

    spent = step(with_stock, again, DeadlinePassed(), attempt=1, max_resends=1)
    assert (spent.state, spent.order_status, spent.rejection_reason) == (
        S.COMPENSATING,
        O.REJECTED,
        TIMEOUT_REASON,
    )
    assert spent.actions == (Action.RELEASE_CREDIT,)


def test_operators_and_cancels_read_the_same_row(with_stock: Definition):
    held = step(with_stock, start(with_stock), credit_reserved(ORDER))
    retried = step(with_stock, held, RetryRequested())
    assert retried.steps == (Step(StepName.CHECK_STOCK, StepStatus.RETRIED, "operator"),)
    assert retried.actions == (Action.CHECK_STOCK,)

    given_up = step(with_stock, held, CompensateRequested())
    assert (given_up.state, given_up.rejection_reason) == (S.COMPENSATING, "operator")
    assert saga.compensable(with_stock, S.AWAITING_STOCK, O.PENDING)
    assert not saga.compensable(V1, S.AWAITING_NOTIFICATION, O.APPROVED)

    cancelled = step(with_stock, held, CancelRequested())
    assert (cancelled.state, cancelled.actions) == (S.AWAITING_RELEASE, (Action.RELEASE_CREDIT,))


def test_a_late_stock_answer_changes_nothing(with_stock: Definition):
    held = step(with_stock, start(with_stock), credit_reserved(ORDER))
    cancelled = step(with_stock, held, CancelRequested())
    late = step(with_stock, cancelled, stock_checked(ORDER, in_stock=True))
    assert (late.state, late.order_status, late.actions) == (cancelled.state, O.CANCELLING, ())
    assert late.steps == (Step(StepName.CHECK_STOCK, StepStatus.REPLY_IGNORED),)


def test_released_definitions_are_registered_by_version():
    assert sorted(DEFINITIONS) == [1, 2]
    assert all(definition.version == version for version, definition in DEFINITIONS.items())
    assert DEFINITIONS[2].forward == (S.AWAITING_CREDIT, S.AWAITING_STOCK)
    with pytest.raises(saga.UnknownDefinition):
        saga.definition(3)


def test_every_timeout_setting_is_a_setting():
    fields = SagaSettings.model_fields
    for name in get_args(TimeoutSetting):
        assert fields[name].annotation is float, name
    used = {wait.timeout for d in DEFINITIONS.values() for wait in d.table.values()}
    assert used == set(get_args(TimeoutSetting))


def test_the_current_definition_is_a_setting_that_must_exist():
    assert Settings().saga.definition_version == 1  # the default saga stays as it was
    assert Settings(saga={"definition_version": 2}).saga.definition_version == 2
    with pytest.raises(ValidationError, match="no saga definition version 7"):
        Settings(saga={"definition_version": 7})


def test_the_stock_reply_is_read_only_while_version_2_is_current():
    assert StockChecked not in handlers(Settings())
    assert StockChecked in handlers(Settings(saga={"definition_version": 2}))


def test_the_check_constraint_and_the_head_migration_list_the_enum():
    assert set(SAGA_STATES) == {state.value for state in SagaState}
    source = (MIGRATIONS / "0004_saga_definition_version.py").read_text()
    assigned = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert set(ast.literal_eval(assigned["NEW_STATES"])) == set(SAGA_STATES)
