"""The base of every message contract."""

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """A message payload. Subclasses set ``TYPE``, ``STREAM``, ``PRODUCER``, ``CONSUMERS``
    and a one-line docstring; the event catalogue (``make events``) is generated from them.

    ``CONSUMERS`` names the consumer group of every service that handles the message. The
    bus creates all of them on the stream before it ever trims it, so a service that is
    down (or not back yet after a Redis restart) finds every message waiting for it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    TYPE: ClassVar[str]
    STREAM: ClassVar[str]
    PRODUCER: ClassVar[str]
    CONSUMERS: ClassVar[tuple[str, ...]] = ()
    SCHEMA_VERSION: ClassVar[int] = 1


def command_stream(service: str) -> str:
    """The stream a service reads its commands from."""
    return f"{service}.commands"


def event_stream(service: str) -> str:
    """The stream a service publishes its events to."""
    return f"{service}.events"
