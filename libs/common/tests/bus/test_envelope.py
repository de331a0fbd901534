"""Unit tests: the envelope's wire form and the ids a new message inherits from its context."""

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from common.bus import Envelope, UnknownMessageType, WrongMessageType, envelope_for
from common.contracts import ReleaseCredit, ReserveCredit
from common.logging import correlation_id_var, event_id_var

RESERVE = ReserveCredit(order_id=uuid.uuid4(), user_id=uuid.uuid4(), amount_cents=1250)


def test_envelope_round_trips_through_one_stream_field() -> None:
    envelope = Envelope.wrap(RESERVE, source="orders", correlation_id="corr-1")

    fields = envelope.to_fields()

    assert list(fields) == ["envelope"]
    back = Envelope.from_fields(fields)
    assert back == envelope
    assert back.parse(ReserveCredit) == RESERVE
    assert back.decode() == RESERVE
    assert Envelope.from_fields({b"envelope": fields["envelope"].encode()}) == envelope


def test_wrap_fills_the_metadata() -> None:
    envelope = Envelope.wrap(RESERVE, source="orders", causation_id="cause-1")

    assert envelope.type == "users.ReserveCredit"
    assert envelope.source == "orders"
    assert envelope.schema_version == ReserveCredit.SCHEMA_VERSION
    assert envelope.correlation_id == str(envelope.id)  # a new conversation
    assert envelope.causation_id == "cause-1"
    assert envelope.trace == {}
    assert envelope.occurred_at.tzinfo is not None
    assert abs(datetime.now(UTC) - envelope.occurred_at) < timedelta(seconds=5)
    assert json.loads(envelope.to_json())["payload"]["amount_cents"] == 1250


def test_occurred_at_is_normalised_to_utc() -> None:
    data = json.loads(Envelope.wrap(RESERVE, source="orders").to_json())
    data["occurred_at"] = "2030-01-01T12:00:00+02:00"

    envelope = Envelope.model_validate(data)

    assert envelope.occurred_at == datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    assert envelope.occurred_at.utcoffset() == UTC.utcoffset(None)


def test_parsing_as_the_wrong_type_or_an_unknown_type_fails() -> None:
    envelope = Envelope.wrap(RESERVE, source="orders")

    with pytest.raises(WrongMessageType):
        envelope.parse(ReleaseCredit)
    with pytest.raises(UnknownMessageType):
        envelope.model_copy(update={"type": "nobody.Nothing"}).decode()
    with pytest.raises(ValueError, match="no 'envelope' field"):
        Envelope.from_fields({"other": "x"})
    with pytest.raises(ValueError, match="validation error"):
        Envelope.from_fields({"envelope": "{not json"})


@pytest.fixture
def context_ids() -> Iterator[None]:
    correlation = correlation_id_var.set("saga-42")
    event = event_id_var.set("incoming-7")
    yield
    correlation_id_var.reset(correlation)
    event_id_var.reset(event)


@pytest.mark.usefixtures("context_ids")
def test_new_messages_inherit_correlation_and_causation_from_the_context() -> None:
    inherited = envelope_for(RESERVE, source="users")
    explicit = envelope_for(RESERVE, source="users", correlation_id="c", causation_id="e")

    assert (inherited.correlation_id, inherited.causation_id) == ("saga-42", "incoming-7")
    assert (explicit.correlation_id, explicit.causation_id) == ("c", "e")


def test_without_context_a_message_starts_its_own_conversation() -> None:
    assert correlation_id_var.get() is None
    assert event_id_var.get() is None

    envelope = envelope_for(RESERVE, source="users")

    assert envelope.correlation_id == str(envelope.id)
    assert envelope.causation_id is None
