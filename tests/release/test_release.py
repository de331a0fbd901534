"""scripts/release.py on a real git repository: a copy of this one's changelog, version and lock."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from common.testing.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
TODAY = datetime.date(2030, 1, 2)


def load_release() -> ModuleType:
    return load_script(REPO / "scripts" / "release.py", "shop_release")


release = load_release()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(  # noqa: S603 - git, our own arguments
        ["git", "-C", str(repo), *args],  # noqa: S607 - git from PATH
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for name in ("CHANGELOG.md", "uv.lock", "libs/common/pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    git(tmp_path, "init", "-q")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    git(tmp_path, "config", "user.name", "t")
    git(tmp_path, "config", "user.email", "t@t")
    return tmp_path


def test_the_first_release_is_the_landed_state_by_full_commit():
    first = release.releases((REPO / "CHANGELOG.md").read_text())[-1]
    assert (first.version, first.commit) == ("0.1.0", "cf23cce2cb65d902794ee85d7a67abbf60632321")


def test_the_version_in_pyproject_is_the_last_release_or_ahead_of_it():
    last = release.last_release((REPO / "CHANGELOG.md").read_text())
    assert release.semver(release.current_version(REPO)) >= release.semver(last.version)


def test_every_image_is_labelled_with_the_version_it_is_built_from():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()  # every service's image
    runtime = dockerfile.split("AS runtime", 1)[1]
    assert "ARG VERSION=" in runtime
    assert 'org.opencontainers.image.version="${VERSION}"' in runtime
    compose = (REPO / "deploy" / "compose.yaml").read_text()
    assert "VERSION=${SHOP_VERSION" in compose
    assert "release.py current" in (REPO / "scripts" / "stack.sh").read_text()


def test_cut_moves_unreleased_records_head_bumps_the_version_and_commits(repo: Path):
    head = git(repo, "rev-parse", "HEAD")
    cut = release.cut(repo, "0.2.0", TODAY)
    assert cut == release.Release("0.2.0", "2030-01-02", head)
    changelog = (repo / "CHANGELOG.md").read_text()
    assert release.last_release(changelog) == cut
    unreleased, rest = changelog.split("## [Unreleased]")[1].split("## [0.2.0]", 1)
    assert not unreleased.strip()
    assert "### Added" in rest.split("## [0.1.0]")[0]
    assert release.current_version(repo) == "0.2.0"
    assert 'name = "common"\nversion = "0.2.0"' in (repo / "uv.lock").read_text()
    assert not git(repo, "status", "--porcelain")
    assert git(repo, "rev-parse", "HEAD~1") == head


def test_cut_refuses_a_dirty_tree(repo: Path):
    (repo / "CHANGELOG.md").write_text((repo / "CHANGELOG.md").read_text() + "\nedit\n")
    with pytest.raises(release.ReleaseError, match="not clean"):
        release.cut(repo, "0.2.0", TODAY)


@pytest.mark.parametrize("version", ["0.1.0", "0.0.9", "1.0", "v0.2.0", "0.2.0-rc1"])
def test_cut_refuses_a_version_not_higher_or_not_semver(repo: Path, version: str):
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(release.ReleaseError):
        release.cut(repo, version, TODAY)
    assert git(repo, "rev-parse", "HEAD") == head
    assert not git(repo, "status", "--porcelain")


def test_cut_refuses_an_empty_unreleased_section(repo: Path):
    release.cut(repo, "0.2.0", TODAY)
    with pytest.raises(release.ReleaseError, match="empty"):
        release.cut(repo, "0.3.0", TODAY)


def test_a_release_without_a_commit_line_is_an_error():
    with pytest.raises(release.ReleaseError, match="names no commit"):
        release.releases("## [1.0.0] - 2030-01-01\n\n### Added\n")
