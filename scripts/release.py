"""Releases, recorded in the repository itself: CHANGELOG.md and the version of ``common``.

``python scripts/release.py cut 0.2.0`` (``make release VERSION=0.2.0``): checks that the work
tree is clean and that 0.2.0 is a higher semantic version than the last release; moves the
changelog's Unreleased section into ``## [0.2.0] - <today>`` with a ``Commit: <HEAD>`` line;
bumps the version where it lives (``libs/common/pyproject.toml``, and its entry in ``uv.lock``
so the lock stays exact); commits. Nothing here reads or needs a git tag: a fresh clone of
main may have none, so the commit a release was cut from is written in the changelog.

``python scripts/release.py last`` prints the last release's version and commit (what the
AsyncAPI diff and the upgrade drill compare with).

Why the ``common`` distribution holds the version: every API and worker imports it, and it is
installed (editable in .venv, as a wheel in the images), so ``importlib.metadata`` reads the
same number everywhere with no file to copy around.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHANGELOG = "CHANGELOG.md"
VERSION_FILE = "libs/common/pyproject.toml"
LOCK_FILE = "uv.lock"
UNRELEASED = "## [Unreleased]"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
RELEASE_HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\] - (?P<date>\d{4}-\d{2}-\d{2})\s*$")
COMMIT_LINE = re.compile(r"^Commit: (?P<commit>[0-9a-f]{40})\s*$")
PROJECT_VERSION = re.compile(r'^(version = ")([^"]+)(")', re.MULTILINE)
LOCK_ENTRY = re.compile(r'(\[\[package\]\]\nname = "common"\nversion = ")([^"]+)(")')


class ReleaseError(Exception):
    """The release cannot be cut; the message says why (nothing was changed)."""


@dataclass(frozen=True)
class Release:
    version: str
    date: str
    commit: str


def semver(version: str) -> tuple[int, int, int]:
    """``"1.2.3"`` as a comparable tuple; pre-release and build suffixes are not used here."""
    match = SEMVER.match(version)
    if match is None:
        raise ReleaseError(f"{version!r} is not a semantic version x.y.z")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def releases(changelog: str) -> list[Release]:
    """Every release in the changelog, newest first, each with the commit it was cut from."""
    found: list[Release] = []
    heading: re.Match[str] | None = None
    for line in changelog.splitlines():
        if match := RELEASE_HEADING.match(line):
            if heading is not None:
                raise ReleaseError(f"release {heading['version']} names no commit")
            heading = match
        elif (match := COMMIT_LINE.match(line)) and heading is not None:
            found.append(Release(heading["version"], heading["date"], match["commit"]))
            heading = None
    if heading is not None:
        raise ReleaseError(f"release {heading['version']} names no commit")
    return found


def last_release(changelog: str) -> Release:
    found = releases(changelog)
    if not found:
        raise ReleaseError("the changelog records no release")
    return found[0]


def with_release(changelog: str, release: Release) -> str:
    """The changelog with its Unreleased entries moved under ``release`` (Unreleased left empty)."""
    if UNRELEASED not in changelog:
        raise ReleaseError(f"the changelog has no {UNRELEASED!r} section")
    head, rest = changelog.split(UNRELEASED, 1)
    next_heading = rest.find("\n## [")
    entries = rest if next_heading < 0 else rest[:next_heading]
    tail = "" if next_heading < 0 else rest[next_heading:]
    if not entries.strip():
        raise ReleaseError("the Unreleased section is empty: nothing to release")
    section = (
        f"## [{release.version}] - {release.date}\n\nCommit: {release.commit}\n\n"
        f"{entries.strip()}\n"
    )
    return f"{head}{UNRELEASED}\n\n{section}{tail}"


def with_version(text: str, pattern: re.Pattern[str], version: str) -> str:
    bumped, count = pattern.subn(lambda m: f"{m[1]}{version}{m[3]}", text, count=1)
    if count != 1:
        raise ReleaseError(f"no version found to bump ({pattern.pattern!r})")
    return bumped


def current_version(repo: Path) -> str:
    """The version in ``libs/common/pyproject.toml`` (python3 alone: no .venv needed)."""
    match = PROJECT_VERSION.search((repo / VERSION_FILE).read_text())
    if match is None:
        raise ReleaseError(f"{VERSION_FILE} has no version")
    return match[2]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(  # noqa: S603 - git, our own arguments
        ["git", "-C", str(repo), *args],  # noqa: S607 - git from PATH
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


def cut(repo: Path, version: str, today: datetime.date) -> Release:
    """Record ``version`` as a release of HEAD and commit it; raises before changing anything."""
    if git(repo, "status", "--porcelain"):
        raise ReleaseError("the work tree is not clean: commit or stash first")
    changelog = (repo / CHANGELOG).read_text()
    previous = last_release(changelog)
    if semver(version) <= semver(previous.version):
        raise ReleaseError(f"{version} is not higher than the last release, {previous.version}")
    release = Release(version, today.isoformat(), git(repo, "rev-parse", "HEAD"))
    updated = {
        CHANGELOG: with_release(changelog, release),
        VERSION_FILE: with_version((repo / VERSION_FILE).read_text(), PROJECT_VERSION, version),
        LOCK_FILE: with_version((repo / LOCK_FILE).read_text(), LOCK_ENTRY, version),
    }
    for name, text in updated.items():
        (repo / name).write_text(text)
    git(repo, "add", *updated)
    git(repo, "commit", "-q", "-m", f"release {version} (cut from {release.commit[:12]})")
    return release


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    cut_parser = commands.add_parser("cut", help="record VERSION as a release of HEAD, commit")
    cut_parser.add_argument("version")
    commands.add_parser("last", help="print the last release's version and commit")
    commands.add_parser("current", help="print the version the code carries now")
    args = parser.parse_args(argv)
    try:
        if args.command == "cut":
            release = cut(REPO, args.version, datetime.datetime.now(datetime.UTC).date())
            print(f"released {release.version} from {release.commit}")
        elif args.command == "current":
            print(current_version(REPO))
        else:
            release = last_release((REPO / CHANGELOG).read_text())
            print(f"{release.version} {release.commit}")
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
