"""The envelope: what travels on the bus around every message payload.

The payload is a :class:`common.contracts.Message`; the envelope adds what the bus and the
people reading logs need: a unique id (the inbox deduplicates on it), where and when the
message was made, and the ids that tie a saga together (``correlation_id``: the request or
saga; ``causation_id``: the message whose handling produced this one). It is serialized as
one JSON string in one stream field, so a stream entry is self-describing and can be copied
verbatim to the dead-letter stream and back.
"""

import builtins
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from common.contracts import MESSAGE_TYPES, Message
from common.tracing import current_context_carrier

ENVELOPE_FIELD = "envelope"

M = TypeVar("M", bound=Message)


class UnknownMessageType(LookupError):
    """The envelope's ``type`` is not in the contract catalogue."""


class WrongMessageType(TypeError):
    """The envelope was parsed as a message type other than its own."""


class Envelope(BaseModel):
    """One message on the bus: metadata plus the payload as plain JSON data."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: uuid.UUID
    type: str = Field(min_length=1)
    source: str
    occurred_at: AwareDatetime
    correlation_id: str
    causation_id: str | None = None
    schema_version: int = 1
    payload: dict[str, Any]
    trace: dict[str, str] = Field(default_factory=dict)  # W3C traceparent (common.tracing)

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @classmethod
    def wrap(
        cls,
        message: Message,
        *,
        source: str,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> "Envelope":
        """A new envelope (new id, now) around ``message``.

        Without a correlation id the message starts a new conversation: its own id is used.
        """
        message_id = uuid.uuid4()
        return cls(
            id=message_id,
            type=message.TYPE,
            source=source,
            occurred_at=datetime.now(UTC),
            correlation_id=correlation_id or str(message_id),
            causation_id=causation_id,
            schema_version=message.SCHEMA_VERSION,
            payload=message.model_dump(mode="json"),
            trace=current_context_carrier(),
        )

    def parse(self, cls: builtins.type[M]) -> M:
        """The payload as ``cls``; raises if the envelope carries another type."""
        if self.type != cls.TYPE:
            raise WrongMessageType(f"envelope of type {self.type!r} parsed as {cls.TYPE!r}")
        return cls.model_validate(self.payload)

    def decode(self) -> Message:
        """The payload as the model the contract catalogue names for ``type``."""
        cls = MESSAGE_TYPES.get(self.type)
        if cls is None:
            raise UnknownMessageType(self.type)
        return self.parse(cls)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Envelope":
        return cls.model_validate_json(raw)

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields: the whole envelope in one field."""
        return {ENVELOPE_FIELD: self.to_json()}

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> "Envelope":
        """Read an envelope back from a stream entry's fields (str or bytes keys)."""
        raw = fields.get(ENVELOPE_FIELD)
        if raw is None:
            raw = fields.get(ENVELOPE_FIELD.encode())
        if raw is None:
            raise ValueError(f"stream entry has no {ENVELOPE_FIELD!r} field")
        return cls.from_json(raw)
