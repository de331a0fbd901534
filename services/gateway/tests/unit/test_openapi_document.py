"""The gateway's own operations follow the API conventions like every service's, and the
merged document adds the gateway's own answer to every proxied operation (504)."""

from typing import Any

from common.openapi import BEARER, GLOBAL_STATUSES
from common.testing.openapi import convention_violations, declared_statuses, secured_operations
from gateway.main import create_app
from gateway.openapi import merge_documents


def test_the_gateways_own_document_follows_the_conventions():
    document = create_app().openapi()
    assert convention_violations(document) == []
    assert declared_statuses(document)["GET /me/overview"] == {200, 401} | GLOBAL_STATUSES
    assert secured_operations(document) == {"GET /me/overview": {BEARER}}
    assert document["paths"]["/me/overview"]["get"]["operationId"] == "gateway_me_overview"


def test_a_proxied_operation_also_declares_the_gateways_timeout():
    service: dict[str, Any] = {
        "paths": {
            "/orders": {"get": {"tags": ["orders"], "operationId": "orders_list", "responses": {}}}
        },
        "components": {},
    }
    merged = merge_documents(create_app().openapi(), {"orders": service})
    assert "504" in merged["paths"]["/orders"]["get"]["responses"]
    assert "504" not in merged["paths"]["/me/overview"]["get"]["responses"]
    assert convention_violations(merged) == []
