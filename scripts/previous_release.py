"""The previous release, as the upgrade checks need it: its migration heads and a checkout.

The release is the newest in CHANGELOG.md, by the commit it names (scripts/release.py); no
git tag is read. Two things are taken from that commit:

* each service's Alembic head at the release (read from the commit's migration files with
  ``git show``), which ``alembic downgrade`` must reach from today's head (expand/contract);
* a ``git worktree`` of the commit under ``.run/releases/<version>``, with its own .venv
  (``uv sync --frozen --compile-bytecode`` in it: its processes start warm), so its processes
  and its e2e suite run next to ours.

    python scripts/previous_release.py heads       # service -> revision at the last release
    python scripts/previous_release.py worktree    # make (or reuse) the checkout; prints its path
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import release

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("users", "orders", "notifications")
REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]+)?\s*=\s*(.+)$", re.MULTILINE)
QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")
SYNC_TIMEOUT_SECONDS = 600


class PreviousReleaseError(RuntimeError):
    """The previous release cannot be used here (its commit is missing, say)."""


def last_release() -> release.Release:
    return release.last_release((REPO / release.CHANGELOG).read_text())


def _git(*args: str, cwd: Path = REPO, timeout: float = 120) -> str:
    return subprocess.run(  # noqa: S603 - git, our arguments
        ["git", "-C", str(cwd), *args],  # noqa: S607 - git from PATH
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


def commit_present(commit: str) -> bool:
    try:
        _git("cat-file", "-e", f"{commit}^{{commit}}")
    except subprocess.CalledProcessError:
        return False
    return True


def heads_of(sources: list[str]) -> set[str]:
    """The revisions no other revision names as its down_revision (Alembic's heads)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for source in sources:
        match = REVISION.search(source)
        if match is None:
            continue
        revisions.add(match[1])
        down = DOWN_REVISION.search(source)
        if down is not None:
            parents.update(QUOTED.findall(down[1]))
    return revisions - parents


def migration_heads(commit: str, service: str) -> set[str]:
    """``service``'s Alembic heads at ``commit``."""
    folder = f"services/{service}/migrations/versions"
    names = _git("ls-tree", "--name-only", f"{commit}:{folder}").split()
    sources = [_git("show", f"{commit}:{folder}/{name}") for name in names if name.endswith(".py")]
    return heads_of(sources)


def worktree(commit: str, version: str) -> Path:
    """A checkout of ``commit`` with its own synced .venv (made once, then reused)."""
    if not commit_present(commit):
        raise PreviousReleaseError(f"commit {commit} is not in this clone (shallow?)")
    path = REPO / ".run" / "releases" / version
    if not (path / ".git").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "prune")
        _git("worktree", "add", "--force", "--detach", str(path), commit)
    if _git("rev-parse", "HEAD", cwd=path).strip() != commit:
        _git("checkout", "--detach", "--force", commit, cwd=path)
    environment = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    subprocess.run(
        ["uv", "sync", "--frozen", "--quiet", "--compile-bytecode"],  # noqa: S607 - uv from PATH (make fetches it)
        cwd=path,
        env=environment,
        timeout=SYNC_TIMEOUT_SECONDS,
        check=True,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the previous release, for upgrade checks")
    parser.add_argument("command", choices=("heads", "worktree"))
    args = parser.parse_args(argv)
    previous = last_release()
    if args.command == "heads":
        for service in SERVICES:
            print(service, " ".join(sorted(migration_heads(previous.commit, service))))
    else:
        print(worktree(previous.commit, previous.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
