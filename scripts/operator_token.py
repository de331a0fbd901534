"""Make a new operator token for the orders console and API (``make operator-token NAME=alice``).

Prints the token (give it to the operator; it is shown once and stored nowhere) and the entry
to add to ``ORDERS_OPERATOR_TOKENS``, which holds only SHA-256 hashes (comma-separated
``name:hash`` entries, one per operator).

Usage: python scripts/operator_token.py NAME
"""

import secrets
import sys

from common.auth import hash_token
from orders.settings import OPERATOR_ENTRY


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0]:
        print("usage: operator_token.py NAME", file=sys.stderr)
        return 2
    name = argv[0]
    token = secrets.token_urlsafe(32)
    entry = f"{name}:{hash_token(token)}"
    if OPERATOR_ENTRY.fullmatch(entry) is None:
        print("NAME: 1-64 letters, digits and _ . @ -", file=sys.stderr)
        return 2
    print(f"operator token for {name} (shown once): {token}")
    print(f"add to the orders service's settings: ORDERS_OPERATOR_TOKENS={entry}")
    print("(several operators: comma-separated entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
