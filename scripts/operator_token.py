"""Make a new operator token for the orders console and API (``make operator-token NAME=alice``).

Prints the token (give it to the operator; it is shown once and stored nowhere) and the entry
to add to ``ORDERS_OPERATOR_TOKENS``, which holds only SHA-256 hashes (comma-separated
``name:hash`` entries, one per operator).

Usage: python scripts/operator_token.py NAME
       python scripts/operator_token.py NAME --keep-in FILE

With ``--keep-in``, the token is kept in FILE (made once, readable by its owner only) and
only the ``ORDERS_OPERATOR_TOKENS`` entry is printed: how ``make up`` gives a developer's
stack an operator without anyone typing a secret.
"""

import os
import secrets
import sys
from pathlib import Path

from common.auth import hash_token
from orders.settings import OPERATOR_ENTRY


def kept_token(path: Path) -> str:
    """The token in ``path``, made there first (mode 600) if the file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def main(argv: list[str]) -> int:
    keep_in = None
    if len(argv) == 3 and argv[1] == "--keep-in":
        argv, keep_in = argv[:1], Path(argv[2])
    if len(argv) != 1 or not argv[0]:
        print("usage: operator_token.py NAME [--keep-in FILE]", file=sys.stderr)
        return 2
    name = argv[0]
    token = kept_token(keep_in) if keep_in else secrets.token_urlsafe(32)
    entry = f"{name}:{hash_token(token)}"
    if OPERATOR_ENTRY.fullmatch(entry) is None:
        print("NAME: 1-64 letters, digits and _ . @ -", file=sys.stderr)
        return 2
    if keep_in:
        print(entry)
        return 0
    print(f"operator token for {name} (shown once): {token}")
    print(f"add to the orders service's settings: ORDERS_OPERATOR_TOKENS={entry}")
    print("(several operators: comma-separated entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
