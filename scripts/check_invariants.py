"""Check the saga's invariants across the users and orders schemas (`make check-invariants`).

1. For every user, active credit reservations (users schema) equal the total of that user's
   APPROVED orders (orders schema).
2. No saga is past its deadline unsettled (allowing the timer a few seconds of grace),
   so no order stays PENDING or CANCELLING past its deadline.

Run it at a quiet moment (no orders in flight). Exits 1 and names every offender.
Usage: python scripts/check_invariants.py [DATABASE_URL]   (default: $DATABASE_URL or app)
"""

import asyncio
import os
import sys

import asyncpg

CREDIT_MISMATCHES = """
WITH reserved AS (
    SELECT user_id, sum(amount_cents) AS cents
    FROM users.credit_reservations WHERE status = 'active' GROUP BY user_id
), approved AS (
    SELECT user_id, sum(total_cents) AS cents
    FROM orders.orders WHERE status = 'APPROVED' GROUP BY user_id
)
SELECT coalesce(r.user_id, a.user_id) AS user_id,
       coalesce(r.cents, 0) AS reserved_cents,
       coalesce(a.cents, 0) AS approved_cents
FROM reserved r FULL OUTER JOIN approved a ON a.user_id = r.user_id
WHERE coalesce(r.cents, 0) <> coalesce(a.cents, 0)
ORDER BY 1
"""

OVERDUE_SAGAS = """
SELECT s.order_id, s.state, o.status, s.deadline_at
FROM orders.sagas s JOIN orders.orders o ON o.id = s.order_id
WHERE s.deadline_at < now() - make_interval(secs => $1)
ORDER BY s.deadline_at
"""


async def find_violations(url: str, grace_seconds: float = 5.0) -> list[str]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
    try:
        mismatches = await connection.fetch(CREDIT_MISMATCHES)
        overdue = await connection.fetch(OVERDUE_SAGAS, grace_seconds)
    finally:
        await connection.close()
    return [
        f"user {row['user_id']}: active reservations {row['reserved_cents']} cents"
        f" != approved orders {row['approved_cents']} cents"
        for row in mismatches
    ] + [
        f"order {row['order_id']}: saga {row['state']} (order {row['status']})"
        f" past its deadline {row['deadline_at'].isoformat()}"
        for row in overdue
    ]


def main() -> int:
    url = (
        sys.argv[1:] or [os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/app")]
    )[0]
    violations = asyncio.run(find_violations(url))
    for violation in violations:
        print(f"VIOLATION {violation}")
    print(
        f"invariants: {'FAILED, ' + str(len(violations)) + ' violation(s)' if violations else 'ok'}"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
