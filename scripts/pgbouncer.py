"""PgBouncer 1.24.1, built from Debian's source, for the stacks that run past one replica.

Why a build: transaction pooling with prepared statements (``max_prepared_statements``, what
asyncpg and the hot path rely on) arrived in PgBouncer 1.21. Debian 12 ships 1.18, and
Debian 13's package needs Debian 13's libc. So this downloads Debian 13's source (the
upstream tarball and Debian's patches, security fixes included), checks both against the
sha256 pinned below, applies the patches and builds the one binary into
``.run/tools/bin/pgbouncer`` (about 15 s on two cores). Needs gcc, make, pkg-config and the
development files of libevent and OpenSSL (``apt-get install libevent-dev libssl-dev``).

    python3 scripts/pgbouncer.py          prints the binary's path (building it if missing)

A ``pgbouncer`` on PATH that is 1.21 or newer is used as it is (``PGBOUNCER`` names another).
The standard library only, like scripts/tools.py. deploy/pgbouncer/Dockerfile builds the
same source for the images.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = ROOT / ".run" / "tools" / "bin"
VERSION = "1.24.1"
MINIMUM = (1, 21)  # max_prepared_statements: prepared statements in transaction pooling
POOL = "http://deb.debian.org/debian/pool/main/p/pgbouncer"
SOURCES = {
    f"pgbouncer_{VERSION}.orig.tar.gz": (
        "da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0"
    ),
    f"pgbouncer_{VERSION}-1+deb13u2.debian.tar.xz": (
        "2325bcaa2e71919d399b9e5aef5b94ff988fc1f1d296908c3937b682b7be5cbb"
    ),
}
TIMEOUT_SECONDS = 120.0


class BuildError(RuntimeError):
    pass


class MissingBuildTools(BuildError):
    """The machine lacks what the build needs (Debian packages); exit status NO_BUILD_TOOLS."""


NO_BUILD_TOOLS = 3  # the exit status when MissingBuildTools: callers may treat it as "not here"


def version_of(binary: str | Path) -> tuple[int, ...] | None:
    try:
        printed = subprocess.run(  # noqa: S603 - a pgbouncer binary, asked its version
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return None
    found = re.search(r"PgBouncer (\d+)\.(\d+)", printed)
    return tuple(int(part) for part in found.groups()) if found else None


def usable(binary: str | Path | None) -> bool:
    return binary is not None and (version_of(binary) or (0,)) >= MINIMUM


def download(name: str, sha256: str, into: Path) -> Path:
    with urllib.request.urlopen(f"{POOL}/{name}", timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
        data = response.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BuildError(f"{name}: sha256 mismatch (expected {sha256})")
    path = into / name
    path.write_bytes(data)
    return path


def extract(archive: tarfile.TarFile, into: Path) -> None:
    """Unpack ``archive`` under ``into`` and nowhere else. Python's ``data`` filter does that
    since 3.11.4; Debian 12's Python is 3.11.2, so there each member is checked first: a
    regular file or directory whose path stays under ``into``, or a link whose target does.
    (The archives are pinned by sha256 as well: this is the second lock, not the first.)"""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(into, filter="data")
        return
    root = into.resolve()

    def inside(path: Path) -> bool:
        return path.resolve() == root or root in path.resolve().parents

    for member in archive.getmembers():
        target = into / member.name
        allowed = member.isfile() or member.isdir() or member.issym() or member.islnk()
        if not allowed or os.path.isabs(member.name) or not inside(target):
            raise tarfile.TarError(f"refusing to unpack {member.name!r}")
        if member.issym() and not inside(target.parent / member.linkname):
            raise tarfile.TarError(f"refusing the link {member.name!r} -> {member.linkname!r}")
        if member.islnk() and not inside(into / member.linkname):
            raise tarfile.TarError(f"refusing the link {member.name!r} -> {member.linkname!r}")
    archive.extractall(into)  # noqa: S202 - every member checked above


def build(dest: Path) -> Path:
    missing = [tool for tool in ("gcc", "make", "pkg-config", "patch") if not shutil.which(tool)]
    if missing or subprocess.run(["pkg-config", "--exists", "libevent"], check=False).returncode:  # noqa: S607
        raise MissingBuildTools(
            "building PgBouncer needs gcc, make, pkg-config, patch and libevent's headers: "
            "sudo apt-get install -y build-essential pkg-config patch libevent-dev libssl-dev"
        )
    with tempfile.TemporaryDirectory(prefix="pgbouncer-build-") as scratch:
        work = Path(scratch)
        for name, sha256 in SOURCES.items():
            with tarfile.open(download(name, sha256, work)) as archive:
                extract(archive, work)
        source = work / f"pgbouncer-{VERSION}"
        patches = work / "debian" / "patches"
        for patch in (patches / "series").read_text().split():
            if patch.startswith("debian-"):
                continue  # Debian's packaging paths (log and socket directories), not code
            run(["patch", "-p1", "-s", "-i", str(patches / patch)], source)
        run(["./configure", "--without-cares"], source)  # DNS by libevent's evdns
        run(["make", f"-j{os.cpu_count() or 2}"], source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / "pgbouncer", dest)
    return dest


def run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise BuildError(f"{' '.join(command)} failed:\n{output}")


def ensure() -> Path:
    """The path of a PgBouncer >= 1.21: PGBOUNCER, PATH's, or ours (built once)."""
    for candidate in (os.environ.get("PGBOUNCER"), shutil.which("pgbouncer")):
        if usable(candidate):
            return Path(str(candidate))
    ours = TOOLS_BIN / "pgbouncer"
    if not usable(ours):
        print(f"==> building PgBouncer {VERSION} from Debian's source", file=sys.stderr)
        build(ours)
        print(f"==> built {ours}", file=sys.stderr)
    return ours


def main() -> int:
    try:
        print(ensure())
    except MissingBuildTools as exc:
        print(f"error: {exc}", file=sys.stderr)
        return NO_BUILD_TOOLS
    except (BuildError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
