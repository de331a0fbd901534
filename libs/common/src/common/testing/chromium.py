"""The machine's Chromium for browser tests (Debian's package; playwright drives it).

A test tool's own browser download is refused on a closed network, so the tests use the
installed one and are skipped where it is missing. The flags keep it from reaching out at
start-up (the machine's network refuses those connections, many at a time).
"""

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
