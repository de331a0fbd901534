"""docs/asyncapi.yaml: the official parser accepts it, and rejects it broken on purpose.

The validator is scripts/asyncapi/validate.mjs on the machine's Node.js, with @asyncapi/parser
installed by `make asyncapi-check` from the committed lock. Each broken copy breaks one rule
a reader of the document relies on; the validator must exit 1 on every one of them, or it
would also wave through a broken document of ours.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.contracts import ALL_MESSAGES

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "docs" / "asyncapi.yaml"
VALIDATOR = REPO / "scripts" / "asyncapi" / "validate.mjs"
PARSER = REPO / "scripts" / "asyncapi" / "node_modules" / "@asyncapi" / "parser"
NODE = shutil.which("node") or "/usr/bin/node"
Doc = dict[str, Any]


@pytest.fixture(scope="module", autouse=True)
def _parser_installed() -> None:
    assert PARSER.is_dir(), "run `make asyncapi-check` (it installs @asyncapi/parser first)"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed program, our own files
        [NODE, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def load() -> Doc:
    document: Doc = yaml.safe_load(DOCUMENT.read_text())
    return document


def test_the_committed_document_is_valid():
    result = validate(DOCUMENT)

    assert result.returncode == 0, result.stdout + result.stderr
    channels = len({message.STREAM for message in ALL_MESSAGES})
    # One send by the producer, one receive by each consumer, per message.
    operations = sum(1 + len(message.CONSUMERS) for message in ALL_MESSAGES)
    expected = f"valid AsyncAPI 3.0.0 ({channels} channels, {operations} operations"
    assert f"{expected}, {len(ALL_MESSAGES)} messages" in result.stdout


def test_every_message_is_sent_by_its_producer_only():
    document = load()
    for message in ALL_MESSAGES:
        name = message.TYPE.rpartition(".")[2]
        senders = [
            op["tags"][0]["name"]
            for op in document["operations"].values()
            if op["action"] == "send" and op["messages"][0]["$ref"].endswith(f"/messages/{name}")
        ]
        assert senders == [message.PRODUCER], message.TYPE


def _first_operation(document: Doc) -> Doc:
    operation: Doc = next(iter(document["operations"].values()))
    return operation


def _publish_instead_of_send(document: Doc) -> None:
    _first_operation(document)["action"] = "publish"  # AsyncAPI 2's word


def _channel_that_does_not_exist(document: Doc) -> None:
    _first_operation(document)["channel"] = {"$ref": "#/channels/no-such-stream"}


def _message_of_another_channel(document: Doc) -> None:
    operation = _first_operation(document)
    other = next(
        key for key in document["channels"] if operation["channel"]["$ref"] != f"#/channels/{key}"
    )
    message = next(iter(document["channels"][other]["messages"]))
    operation["messages"] = [{"$ref": f"#/channels/{other}/messages/{message}"}]


def _no_info(document: Doc) -> None:
    del document["info"]


def _payload_schema_not_a_schema(document: Doc) -> None:
    message = next(iter(document["components"]["messages"].values()))
    message["payload"]["schema"]["properties"]["payload"]["type"] = 5


BREAKAGES: dict[str, Callable[[Doc], None]] = {
    "publish instead of send": _publish_instead_of_send,
    "channel that does not exist": _channel_that_does_not_exist,
    "message of another channel": _message_of_another_channel,
    "no info": _no_info,
    "payload schema not a schema": _payload_schema_not_a_schema,
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=list(BREAKAGES))
def test_a_broken_copy_is_rejected(tmp_path: Path, breakage: str):
    document = copy.deepcopy(load())
    BREAKAGES[breakage](document)
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False))

    result = validate(broken)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "INVALID" in result.stdout
    assert " error " in result.stdout


def test_text_that_is_not_yaml_is_rejected(tmp_path: Path):
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(DOCUMENT.read_text()[:200] + "\n  info: [\n")

    result = validate(broken)

    assert result.returncode == 1, result.stdout + result.stderr
