"""Each running service, and the gateway in front of them, answers only what its
/openapi.json declares (the gateway's: the merged document, every service's operations).

Schemathesis loads every service's document from the running stack and sends generated
requests (valid and, on purpose, invalid ones) to every operation over HTTP: an answer whose
status or media type the document does not declare for that operation fails, and so does
any 5xx that is not a documented one. A customer's token goes to the operations that declare
the bearer scheme, the operator's (make test's stack has one: scripts/stack.sh) to /admin.

Bounded (``E2E_PROPERTY_MAX_EXAMPLES``, default 8 per operation and mode) so it takes about
a minute over real HTTP; the in-process property tests of each service run 100.
"""

import os
from pathlib import Path

import pytest

from common.openapi import BEARER, OPERATOR
from common.testing.openapi import assert_no_server_errors, openapi_schema_from_url

from .conftest import GATEWAY_URL, NOTIFICATIONS_URL, ORDERS_URL, ROOT, USERS_URL, Stack, sign_up

MAX_EXAMPLES = int(os.environ.get("E2E_PROPERTY_MAX_EXAMPLES", "8"))
# The live stream's 200 never ends; a webhook's URL is resolved by DNS (random hosts: slow).
NOT_GENERATED = {("/notifications/stream", "GET"), ("/notifications/webhooks", "POST")}


def operator_token() -> str | None:
    """The stack's operator token: ORDERS_OPERATOR_TOKEN, or the one stack.sh keeps."""
    if token := os.environ.get("ORDERS_OPERATOR_TOKEN"):
        return token
    kept = Path(ROOT) / ".run" / os.environ.get("STACK", "dev") / "operator-token"
    return kept.read_text().strip() if kept.exists() else None


@pytest.mark.parametrize("base_url", [USERS_URL, ORDERS_URL, NOTIFICATIONS_URL, GATEWAY_URL])
async def test_every_answer_is_one_the_document_declares(stack: Stack, base_url: str):
    customer = await sign_up(stack)
    tokens = {BEARER: customer.token}
    if (operator := operator_token()) is not None:
        tokens[OPERATOR] = operator
    schema = openapi_schema_from_url(base_url, exclude=NOT_GENERATED)
    tally = assert_no_server_errors(schema, tokens=tokens, max_examples=MAX_EXAMPLES)
    assert len(tally.operations) >= 5
    assert tally.requests >= MAX_EXAMPLES * len(tally.operations)
