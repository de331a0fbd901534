"""The users document follows the API conventions and declares what each operation's code
can answer: sign-up and login are open (rate-limited per address), the rest need a token."""

from typing import Any

import pytest

from common.openapi import BEARER, GLOBAL_STATUSES
from common.testing.openapi import convention_violations, declared_statuses, secured_operations
from users.main import create_app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def test_the_document_follows_the_conventions(document: dict[str, Any]):
    assert convention_violations(document) == []


def test_each_operation_declares_what_its_code_can_answer(document: dict[str, Any]):
    statuses = declared_statuses(document)
    assert statuses["POST /users"] == {201, 400, 409, 422, 429} | GLOBAL_STATUSES
    assert statuses["POST /users/sessions"] == {201, 400, 401, 422, 429} | GLOBAL_STATUSES
    assert statuses["GET /users/{user_id}"] == {200, 401, 404, 422, 429} | GLOBAL_STATUSES
    assert document["paths"]["/users/{user_id}"]["get"]["operationId"] == "users_get_user"
    assert "Location" in document["paths"]["/users"]["post"]["responses"]["201"]["headers"]


def test_exactly_the_operations_behind_a_token_declare_the_bearer_scheme(
    document: dict[str, Any],
):
    secured = secured_operations(document)
    assert all(schemes == {BEARER} for schemes in secured.values())
    open_operations = set(declared_statuses(document)) - set(secured)
    assert open_operations == {"GET /healthz", "GET /readyz", "POST /users", "POST /users/sessions"}
    assert all(401 in declared_statuses(document)[where] for where in secured)
