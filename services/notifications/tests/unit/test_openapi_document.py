"""The notifications document follows the API conventions; the live stream declares its
event-stream media type and the refusals it can answer before streaming."""

from typing import Any

import pytest

from common.openapi import BEARER, GLOBAL_STATUSES
from common.testing.openapi import convention_violations, declared_statuses, secured_operations
from notifications.main import create_app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def test_the_document_follows_the_conventions(document: dict[str, Any]):
    assert convention_violations(document) == []


def test_the_stream_declares_its_media_type_and_refusals(document: dict[str, Any]):
    stream = document["paths"]["/notifications/stream"]["get"]
    assert set(stream["responses"]["200"]["content"]) == {"text/event-stream"}
    assert declared_statuses(document)["GET /notifications/stream"] == (
        {200, 400, 401, 422, 429} | GLOBAL_STATUSES
    )


def test_every_operation_but_the_probes_needs_the_bearer_token(document: dict[str, Any]):
    secured = secured_operations(document)
    assert set(declared_statuses(document)) - set(secured) == {"GET /healthz", "GET /readyz"}
    assert all(schemes == {BEARER} for schemes in secured.values())
