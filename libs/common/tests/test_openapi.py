"""The document is derived from the code: what a dependency or handler declares reaches every
route that uses it, and nothing reaches a route that does not."""

from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Response
from pydantic import BaseModel

from common.auth import CurrentUser
from common.errors import NotFound, Problem
from common.http import create_service_app
from common.openapi import BEARER, GLOBAL_STATUSES, OPERATOR, raises, sends_location
from common.pagination import Cursor
from common.ratelimit import READ_LIMIT, WRITE_LIMIT
from common.settings import ServiceSettings
from common.testing.openapi import assert_no_server_errors, openapi_schema, stop_apps

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


class Teapot(Problem):
    status = 418


@raises(Teapot)
async def brew() -> None:
    """A dependency that can refuse: every route using it, however deep, declares 418."""


async def kettle(_: Annotated[None, Depends(brew)]) -> None:
    """Uses ``brew`` one level down."""


@raises(401, 403, security=OPERATOR)
async def operator() -> None:
    """Stands in for the operator check of /admin."""


class Thing(BaseModel):
    name: str


def _router() -> APIRouter:
    router = APIRouter(prefix="/things", tags=["things"])

    @router.get("/plain")
    async def plain() -> dict[str, str]:
        return {}

    @router.post("", status_code=201, dependencies=[WRITE_LIMIT])
    @raises(409)
    @sends_location
    async def create_thing(
        body: Thing, caller: CurrentUser, key: Annotated[str | None, Header()] = None
    ) -> Thing:
        return body

    @router.get("/listed", dependencies=[READ_LIMIT])
    async def list_things(caller: CurrentUser, cursor: Cursor = None) -> list[Thing]:
        return []

    @router.get("/{thing_id}")
    @raises(NotFound)
    async def get_thing(thing_id: int, _: Annotated[None, Depends(kettle)]) -> Thing:
        return Thing(name="x")

    @router.delete("/{thing_id}", status_code=204, dependencies=[Depends(operator)])
    async def delete_thing(thing_id: int) -> Response:
        return Response(status_code=204)

    return router


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = ServiceSettings(service_name="things")
    return create_service_app(settings, title="things", routers=[_router()]).openapi()


def _operation(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method]
    return operation


def _statuses(operation: dict[str, Any]) -> set[int]:
    return {int(code) for code in operation["responses"]}


def test_operation_ids_are_tag_and_handler_name(document: dict[str, Any]):
    ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    assert ids == {
        "things_healthz",
        "things_readyz",
        "things_plain",
        "things_create_thing",
        "things_list_things",
        "things_get_thing",
        "things_delete_thing",
    }


def test_a_route_without_input_or_dependencies_declares_only_the_global_statuses(
    document: dict[str, Any],
):
    plain = _operation(document, "/things/plain", "get")
    assert _statuses(plain) == {200} | GLOBAL_STATUSES
    assert "security" not in plain


def test_statuses_come_from_the_dependencies_and_the_handler(document: dict[str, Any]):
    created = _operation(document, "/things", "post")
    # 401: CurrentUser; 429: the write limit; 409: the handler; 400/422: it takes a body.
    assert _statuses(created) == {201, 400, 401, 409, 422, 429} | GLOBAL_STATUSES
    got = _operation(document, "/things/{thing_id}", "get")
    # 418 from a dependency of a dependency; 422 from the path parameter; no auth, no limit.
    assert _statuses(got) == {200, 404, 418, 422} | GLOBAL_STATUSES
    listed = _operation(document, "/things/listed", "get")
    assert 400 in _statuses(listed)  # the cursor parameter: one this API did not issue


def test_errors_are_problem_json_of_one_schema_with_retry_after_where_due(
    document: dict[str, Any],
):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if int(code) < 400:
                    continue
                assert response["content"] == {
                    "application/problem+json": {"schema": PROBLEM_REF}
                }, (method, path, code)
                retry_after = "Retry-After" in response["headers"]
                assert retry_after == (int(code) in {429, 503}), (method, path, code)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail"}
    assert schemas["Problem"]["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/FieldError"
    }


def test_security_is_applied_exactly_where_a_dependency_requires_it(document: dict[str, Any]):
    secured = {
        (method, path): operation.get("security")
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    }
    assert secured == {
        ("post", "/things"): [{BEARER: []}],
        ("get", "/things/listed"): [{BEARER: []}],
        ("delete", "/things/{thing_id}"): [{OPERATOR: []}],
    }
    assert set(document["components"]["securitySchemes"]) == {BEARER, OPERATOR}


def test_headers_taken_and_sent(document: dict[str, Any]):
    created = _operation(document, "/things", "post")
    assert "Location" in created["responses"]["201"]["headers"]
    assert "X-Request-ID" in created["responses"]["201"]["headers"]
    taken = {p["name"] for p in created["parameters"] if p["in"] == "header"}
    assert taken == {"key", "X-Request-ID"}
    got = _operation(document, "/things/{thing_id}", "get")
    assert "Location" not in got["responses"]["200"]["headers"]


@pytest.mark.filterwarnings("ignore:Duplicate Operation ID")
def test_two_routes_with_one_id_are_refused():
    router = APIRouter(tags=["things"])

    @router.get("/a", name="same")
    async def first() -> None: ...

    @router.get("/b", name="same")
    async def second() -> None: ...

    app = create_service_app(ServiceSettings(service_name="t"), title="t", routers=[router])
    with pytest.raises(ValueError, match="operation id things_same"):
        app.openapi()


def _undocumented_app(database_url: str, redis_url: str) -> FastAPI:
    router = APIRouter(prefix="/odd", tags=["odd"])

    @router.get("/conflict")
    async def conflict() -> dict[str, str]:
        raise Problem("never declared", status=409)

    @router.get("/text")
    async def text() -> Response:
        return Response("plain", media_type="text/plain")

    settings = ServiceSettings(
        service_name="odd", database_url=database_url, redis={"url": redis_url}
    )
    return create_service_app(settings, title="odd", routers=[router])


def test_the_conformance_checks_fail_an_undeclared_status_and_media_type(
    database_url: str, redis_url: str
):
    """The property tests can fail: a status or media type the document omits is reported."""
    schema = openapi_schema(
        _undocumented_app(database_url, redis_url), exclude=[("/readyz", "GET")]
    )
    try:
        with pytest.raises(AssertionError) as failed:
            assert_no_server_errors(schema, max_examples=1)
    finally:
        stop_apps()
    report = str(failed.value)
    assert "GET /odd/conflict" in report
    assert "409" in report
    assert "GET /odd/text" in report
    assert "text/plain" in report
    assert "GET /healthz" not in report
