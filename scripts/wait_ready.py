"""Poll URLs until each answers 200, or fail after a deadline (used by `make up`).

Usage: python scripts/wait_ready.py [--timeout SECONDS] URL...
"""

import argparse
import sys
import time
import urllib.error
import urllib.request


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URLs
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    waiting = list(args.urls)
    while waiting and time.monotonic() < deadline:
        waiting = [url for url in waiting if not answers(url)]
        if waiting:
            time.sleep(0.25)
    for url in args.urls:
        print(f"  {'ready  ' if url not in waiting else 'TIMEOUT'} {url}")
    return 1 if waiting else 0


if __name__ == "__main__":
    sys.exit(main())
