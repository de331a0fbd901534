"""``make lint``: docs/asyncapi.yaml compared with the last release's; a breaking change to a
message must bump that message's schema version.

The last release is the newest in CHANGELOG.md, by the commit it names (no git tag needed);
its document is read with ``git show <commit>:docs/asyncapi.yaml``. The comparison is the
AsyncAPI project's own (``@asyncapi/diff``, run by scripts/asyncapi/diff.mjs on documents
the official parser dereferenced), with our tolerant reader's rules for payload schemas: a
field removed or changed, or a new required field, is breaking; a new optional field is not.

Each breaking change is traced to the message it belongs to (the nearest object carrying
``x-schema-version``). It passes only if that message's version went up; a breaking change
that belongs to no message (a channel removed, say) always fails. When the release's commit
is not in this clone (a shallow CI checkout), the check says so and is skipped, not failed.

    python scripts/asyncapi_compat.py [--against COMMIT] [--document docs/asyncapi.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import release

REPO = Path(__file__).resolve().parents[1]
DOCUMENT = "docs/asyncapi.yaml"
DIFF_SCRIPT = REPO / "scripts" / "asyncapi" / "diff.mjs"
VERSION_KEY = "x-schema-version"
NODE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Breaking:
    """One breaking change, and the message (if any) it belongs to."""

    action: str
    path: str
    message: str | None
    old_version: int | None
    new_version: int | None

    @property
    def allowed(self) -> bool:
        """A change to a message whose version went up is that version's to make."""
        return (
            self.message is not None
            and self.old_version is not None
            and self.new_version is not None
            and self.new_version > self.old_version
        )

    def explain(self) -> str:
        where = f"{self.action} {self.path}"
        if self.message is None:
            return f"{where}: breaking, and not part of any message"
        if self.new_version is None:
            return f"{where}: message {self.message} removed (a breaking change)"
        return (
            f"{where}: breaking change to {self.message} without a version bump "
            f"(v{self.old_version} -> v{self.new_version}; bump SCHEMA_VERSION)"
        )


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _message_at(document: Any, path: str) -> tuple[str, int] | None:
    """The innermost message object along ``path`` in ``document``: its name and version."""
    found: tuple[str, int] | None = None
    node = document
    for part in _pointer(path):
        if isinstance(node, dict) and VERSION_KEY in node:
            found = (str(node.get("name", "")), int(node[VERSION_KEY]))
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            break
    else:
        if isinstance(node, dict) and VERSION_KEY in node:
            found = (str(node.get("name", "")), int(node[VERSION_KEY]))
    return found


def _version_of(document: Any, name: str) -> int | None:
    message = document.get("components", {}).get("messages", {}).get(name)
    return int(message[VERSION_KEY]) if isinstance(message, dict) else None


def classify(changes: list[dict[str, str]], old: Any, new: Any) -> list[Breaking]:
    """Every breaking change of ``@asyncapi/diff``, traced to its message and versions."""
    classified: list[Breaking] = []
    for change in changes:
        path, action = change["path"], change["action"]
        owner = _message_at(new if action == "add" else old, path) or _message_at(new, path)
        if owner is None:
            classified.append(Breaking(action, path, None, None, None))
            continue
        name = owner[0]
        classified.append(
            Breaking(action, path, name, _version_of(old, name), _version_of(new, name))
        )
    return classified


def run_diff(old_document: Path, new_document: Path) -> dict[str, Any]:
    result = subprocess.run(  # noqa: S603 - node from the uv environment, our script
        ["node", str(DIFF_SCRIPT), str(old_document), str(new_document)],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"@asyncapi/diff failed: {result.stderr.strip() or result.stdout}")
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def commit_present(commit: str) -> bool:
    probe = subprocess.run(  # noqa: S603 - git, our arguments
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],  # noqa: S607
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


def document_at(commit: str) -> str:
    return subprocess.run(  # noqa: S603 - git, our arguments
        ["git", "-C", str(REPO), "show", f"{commit}:{DOCUMENT}"],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def check(old_document: Path, new_document: Path) -> list[Breaking]:
    """The breaking changes that are not allowed (an empty list: compatible)."""
    output = run_diff(old_document, new_document)
    return [b for b in classify(output["breaking"], output["old"], output["new"]) if not b.allowed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="AsyncAPI compatibility with the last release")
    parser.add_argument("--against", help="a commit (default: the changelog's last release)")
    parser.add_argument("--document", default=str(REPO / DOCUMENT))
    args = parser.parse_args(argv)
    if args.against:
        label, commit = args.against, args.against
    else:
        last = release.last_release((REPO / release.CHANGELOG).read_text())
        label, commit = f"release {last.version}", last.commit
    if not commit_present(commit):
        print(
            f"asyncapi-compat: SKIPPED: {label}'s commit {commit} is not in this clone "
            "(shallow?); fetch it (git fetch --unshallow) to compare the contracts"
        )
        return 0
    with tempfile.TemporaryDirectory() as folder:
        old_document = Path(folder) / "released.yaml"
        old_document.write_text(document_at(commit))
        refused = check(old_document, Path(args.document))
    if refused:
        for breaking in refused:
            print(f"asyncapi-compat: {breaking.explain()}", file=sys.stderr)
        print(f"asyncapi-compat: {len(refused)} breaking change(s) since {label}", file=sys.stderr)
        return 1
    print(f"asyncapi-compat: no unversioned breaking change since {label} ({commit[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
