"""The orders document (with /admin) follows the API conventions and declares what a client
needs: derived statuses, Location and Idempotency-Key, the customer's and operator's schemes."""

from typing import Any

import pytest

from common.openapi import BEARER, GLOBAL_STATUSES, OPERATOR
from common.testing.openapi import convention_violations, declared_statuses, secured_operations
from orders.main import create_app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def test_the_document_follows_the_conventions(document: dict[str, Any]):
    assert convention_violations(document) == []


def test_each_operation_declares_what_its_code_can_answer(document: dict[str, Any]):
    statuses = declared_statuses(document)
    assert statuses["POST /orders"] == {202, 400, 401, 409, 422, 429} | GLOBAL_STATUSES
    assert statuses["GET /orders/{order_id}"] == {200, 401, 404, 422, 429} | GLOBAL_STATUSES
    assert statuses["POST /orders/{order_id}/cancel"] == (
        {202, 401, 404, 409, 422, 429} | GLOBAL_STATUSES
    )
    assert statuses["POST /admin/sagas/{order_id}/retry"] == (
        {200, 401, 403, 404, 409, 422, 429} | GLOBAL_STATUSES
    )
    assert statuses["GET /healthz"] == {200} | GLOBAL_STATUSES


def test_customers_and_operators_have_their_own_scheme(document: dict[str, Any]):
    secured = secured_operations(document)
    assert {where for where, schemes in secured.items() if schemes == {OPERATOR}} == {
        where for where in declared_statuses(document) if where.split(" ")[1].startswith("/admin")
    }
    assert {where for where, schemes in secured.items() if schemes == {BEARER}} == {
        "POST /orders",
        "GET /orders",
        "GET /orders/{order_id}",
        "GET /orders/{order_id}/saga",
        "POST /orders/{order_id}/cancel",
    }
    assert set(document["components"]["securitySchemes"]) == {BEARER, OPERATOR}


def test_placing_takes_an_idempotency_key_and_answers_with_location(document: dict[str, Any]):
    place = document["paths"]["/orders"]["post"]
    assert place["operationId"] == "orders_place_order"
    assert "Idempotency-Key" in {p["name"] for p in place["parameters"] if p["in"] == "header"}
    assert "Location" in place["responses"]["202"]["headers"]
    assert (
        "Location"
        not in document["paths"]["/orders/{order_id}/cancel"]["post"]["responses"]["202"]["headers"]
    )
