"""The contract check of `make lint`: @asyncapi/diff between two documents, each breaking
change traced to its message, refused unless that message's schema version went up.

Runs the real diff (scripts/asyncapi/diff.mjs, the npm packages `make asyncapi-check`
installs) on copies of docs/asyncapi.yaml changed one way at a time.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from common.testing.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "docs" / "asyncapi.yaml"
DIFF_PACKAGE = REPO / "scripts" / "asyncapi" / "node_modules" / "@asyncapi" / "diff"
MESSAGE = "users.ReserveCredit"
Doc = dict[str, Any]

pytestmark = pytest.mark.skipif(
    not DIFF_PACKAGE.exists(), reason="@asyncapi/diff not installed: run `make asyncapi-check`"
)


def load_compat() -> ModuleType:
    return load_script(REPO / "scripts" / "asyncapi_compat.py", "shop_asyncapi_compat")


compat = load_compat()


@pytest.fixture(scope="module")
def released() -> Doc:
    document: Doc = yaml.safe_load(DOCUMENT.read_text())
    return document


def envelope(document: Doc, name: str = MESSAGE) -> Doc:
    schema: Doc = document["components"]["messages"][name]["payload"]["schema"]
    return schema


def payload(document: Doc, name: str = MESSAGE) -> Doc:
    schema: Doc = envelope(document, name)["properties"]["payload"]
    return schema


def bump(document: Doc, name: str = MESSAGE) -> None:
    message = document["components"]["messages"][name]
    message["x-schema-version"] += 1
    envelope(document, name)["properties"]["schema_version"]["const"] += 1


def refused(tmp_path: Path, old: Doc, new: Doc) -> list[Any]:
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new, sort_keys=False))
    found: list[Any] = compat.check(tmp_path / "old.yaml", tmp_path / "new.yaml")
    return found


def drop_amount(document: Doc) -> None:
    del payload(document)["properties"]["amount_cents"]
    payload(document)["required"].remove("amount_cents")


def test_the_same_document_is_compatible(tmp_path: Path, released: Doc):
    assert refused(tmp_path, released, copy.deepcopy(released)) == []


def test_a_removed_field_without_a_version_bump_is_refused_and_named(tmp_path: Path, released: Doc):
    changed = copy.deepcopy(released)
    drop_amount(changed)
    found = refused(tmp_path, released, changed)
    assert found
    assert {b.message for b in found} == {MESSAGE}
    assert "without a version bump" in found[0].explain()


def test_the_same_removal_with_the_version_bumped_passes(tmp_path: Path, released: Doc):
    changed = copy.deepcopy(released)
    drop_amount(changed)
    bump(changed)
    assert refused(tmp_path, released, changed) == []


def test_a_new_optional_field_passes_a_new_required_one_does_not(tmp_path: Path, released: Doc):
    optional = copy.deepcopy(released)
    payload(optional)["properties"]["note"] = {"type": "string", "default": ""}
    assert refused(tmp_path, released, optional) == []

    required = copy.deepcopy(optional)
    payload(required)["required"].append("note")
    assert {b.message for b in refused(tmp_path, released, required)} == {MESSAGE}


def test_reworded_descriptions_and_titles_pass(tmp_path: Path, released: Doc):
    changed = copy.deepcopy(released)
    payload(changed)["description"] = "Reworded for people."
    payload(changed)["properties"]["amount_cents"]["title"] = "Amount (cents)"
    assert refused(tmp_path, released, changed) == []


def test_a_changed_field_type_is_refused(tmp_path: Path, released: Doc):
    changed = copy.deepcopy(released)
    payload(changed)["properties"]["amount_cents"]["type"] = "string"
    assert {b.message for b in refused(tmp_path, released, changed)} == {MESSAGE}


def test_a_removed_message_type_is_refused(tmp_path: Path, released: Doc):
    changed = copy.deepcopy(released)
    del changed["components"]["messages"]["users.UserRegistered"]
    for channel in changed["channels"].values():
        channel["messages"].pop("UserRegistered", None)
    changed["operations"] = {
        name: op
        for name, op in changed["operations"].items()
        if "UserRegistered" not in str(op["messages"])
    }
    found = refused(tmp_path, released, changed)
    assert "users.UserRegistered" in {b.message for b in found}


def test_the_checked_in_document_is_compatible_with_the_last_release(capsys):
    assert compat.main([]) == 0
    assert "asyncapi-compat:" in capsys.readouterr().out


def test_a_release_commit_missing_from_the_clone_is_skipped_with_a_clear_message(capsys):
    assert compat.main(["--against", "f" * 40]) == 0
    out = capsys.readouterr().out
    assert "SKIPPED" in out
    assert "not in this clone" in out
