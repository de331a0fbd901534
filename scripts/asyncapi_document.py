"""Generate the AsyncAPI 3.0 document of the bus (docs/asyncapi.yaml, `make events`).

The same sources as the event catalogue (scripts/event_catalogue.py): message types, streams,
producers and payload schemas from ``common.contracts``, consumers from the handler maps the
workers run, the envelope from ``common.bus.Envelope``. So the document cannot drift from
what runs; ``--check`` (in `make lint`) fails when the committed file is stale, and
`make asyncapi-check` validates it with the official parser (scripts/asyncapi/validate.mjs).

Shape: one server (Redis), one channel per stream (address ``bus:<stream>``), one message
per contract type whose payload is the envelope (docs/design.md section 3) with ``type`` fixed and
``payload`` the contract's JSON Schema, and per service one ``send`` operation for each type
it produces and one ``receive`` operation for each type it consumes, named
``<service>.<send|receive>.<Type>`` and tagged with the service.

Usage: python scripts/asyncapi_document.py [--check]
"""

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from event_catalogue import consumers_by_type
from generated import write_or_check

from common.bus import Envelope
from common.contracts import ALL_MESSAGES, Message

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
STREAM_PREFIX = "bus:"  # common.settings.BusSettings.stream_prefix's default
SERVICES = ("users", "orders", "notifications")
JSON_SCHEMA = "application/schema+json;version=draft-07"

Document = dict[str, Any]


def _message_name(message: type[Message]) -> str:
    return message.TYPE.rpartition(".")[2]


def _summary(message: type[Message]) -> str:
    return (message.__doc__ or "").strip().splitlines()[0]


def envelope_schema(message: type[Message]) -> Document:
    """The envelope's JSON Schema with this message's type, version and payload filled in."""
    schema = copy.deepcopy(Envelope.model_json_schema())
    payload = message.model_json_schema()
    defs = payload.pop("$defs", {})
    properties = schema["properties"]
    properties["type"] = {"const": message.TYPE, "type": "string", "title": "Type"}
    properties["schema_version"] = {
        "const": message.SCHEMA_VERSION,
        "type": "integer",
        "title": "Schema Version",
    }
    properties["payload"] = payload
    if defs:
        schema.setdefault("$defs", {}).update(defs)
    schema["title"] = f"Envelope of {message.TYPE}"
    schema["description"] = (
        "One bus message: the envelope (docs/design.md section 3) around the payload, stored as a"
        " JSON string in the stream entry's `envelope` field."
    )
    return schema


def _channel_id(stream: str) -> str:
    return stream.replace(".", "-")


def _operation(
    service: str, action: str, message: type[Message], summary: str
) -> tuple[str, Document]:
    channel = _channel_id(message.STREAM)
    name = _message_name(message)
    return f"{service}.{action}.{name}", {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
        "summary": summary,
        "tags": [{"name": service}],
    }


def render_document() -> Document:
    consumers = consumers_by_type()
    channels: Document = {}
    messages: Document = {}
    operations: Document = {}
    for message in ALL_MESSAGES:
        name = _message_name(message)
        channel = channels.setdefault(
            _channel_id(message.STREAM),
            {
                "address": f"{STREAM_PREFIX}{message.STREAM}",
                "title": message.STREAM,
                "description": (
                    f"Redis stream `{STREAM_PREFIX}{message.STREAM}`; every receiving service"
                    " reads it with its own consumer group."
                ),
                "servers": [{"$ref": "#/servers/redis"}],
                "messages": {},
            },
        )
        channel["messages"][name] = {"$ref": f"#/components/messages/{message.TYPE}"}
        kind = "command" if message.STREAM.endswith(".commands") else "event"
        messages[message.TYPE] = {
            "name": message.TYPE,
            "title": name,
            "summary": _summary(message),
            "contentType": "application/json",
            "correlationId": {
                "description": "The saga or request this message belongs to.",
                "location": "$message.payload#/correlation_id",
            },
            "tags": [{"name": kind}, {"name": f"producer:{message.PRODUCER}"}],
            "payload": {"schemaFormat": JSON_SCHEMA, "schema": envelope_schema(message)},
            "x-schema-version": message.SCHEMA_VERSION,
        }
        op_id, op = _operation(message.PRODUCER, "send", message, f"Publish {message.TYPE}.")
        operations[op_id] = op
        for consumer in consumers.get(message.TYPE, []):
            op_id, op = _operation(consumer, "receive", message, f"Handle {message.TYPE}.")
            operations[op_id] = op
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "shop-platform bus",
            "version": "1.0.0",
            "description": (
                "Saga commands, replies and events between the users, orders and notifications"
                " services, on Redis Streams (at-least-once, transactional outbox, inbox"
                " deduplication by envelope id). Generated by `make events` from"
                " `common.contracts`; do not edit by hand."
            ),
            "tags": [{"name": service} for service in SERVICES],
        },
        "defaultContentType": "application/json",
        "servers": {
            "redis": {
                "host": "127.0.0.1:6379",
                "protocol": "redis",
                "description": "Redis (Streams with consumer groups); the address is a setting.",
            }
        },
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {"messages": messages},
    }


def render() -> str:
    header = "# Generated by `make events` (scripts/asyncapi_document.py); do not edit by hand.\n"
    body = yaml.safe_dump(render_document(), sort_keys=False, allow_unicode=True, width=100)
    return header + body


def main() -> int:
    return write_or_check(DOCUMENT, render(), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
