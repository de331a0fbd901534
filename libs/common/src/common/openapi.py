"""The OpenAPI document tells the whole truth: every status, one Problem schema, auth, ids.

FastAPI documents only the happy path and its own 422 (``HTTPValidationError``, plain JSON),
while every error the services send is RFC 9457 ``application/problem+json``. Typing each
route's errors by hand drifts from the code, so the errors are derived instead:

* What can fail is declared **where it is raised, once**: a dependency (authentication, a
  rate limit, the operator check) or a route handler carries :func:`raises` (statuses or
  :class:`common.errors.Problem` subclasses, plus the security scheme it requires); a query
  parameter that the code validates itself (``cursor``) is declared with
  :func:`parameter_raises` next to its type.
* :func:`install` post-processes the app's document: for every route it walks the route's
  dependency tree (FastAPI's ``Dependant``), unions what each call declares, adds 422 (and
  400 for a malformed JSON body) where the route takes input, and the statuses any request
  can get from the shared layers (:data:`GLOBAL_STATUSES`: 503 when Postgres or Redis is
  down or the process is at capacity, 408/413 from the edge limits). Each becomes an
  ``application/problem+json`` response of the one ``Problem`` schema, with ``Retry-After``
  on 429 and 503.
* Security schemes are declared once (:data:`SECURITY_SCHEMES`, the same names in every
  service, so the gateway merges them into one) and applied to exactly the operations whose
  dependencies require one.
* Operation ids are ``<tag>_<handler name>`` (:func:`operation_id`), checked to be unique.

Schemathesis checks the result against the running services (status-code and content-type
conformance), so a status the code can return and the document omits fails the tests.
"""

from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.utils import generate_unique_id
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from common.errors import PROBLEM_JSON, Problem

CallableT = TypeVar("CallableT", bound=Callable[..., Any])

BEARER = "BearerAuth"
OPERATOR = "OperatorBearer"
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "A customer's session token, from POST /users/sessions.",
    },
    OPERATOR: {
        "type": "http",
        "scheme": "bearer",
        "description": "An operator's token for /admin (make operator-token); a customer's"
        " session token is refused there with 403.",
    },
}

# Any request can get these from the shared layers, whatever the route: 503 from the load
# shedder or a dependency that is down (common.errors, common.http), 408 and 413 from the
# edge limits (a slow or oversized request, refused before parsing or auth).
GLOBAL_STATUSES: frozenset[int] = frozenset({408, 413, 503})
RETRY_AFTER_STATUSES: frozenset[int] = frozenset({429, 503})

_PROBLEMS_ATTRIBUTE = "__openapi_problems__"
_SECURITY_ATTRIBUTE = "__openapi_security__"
_LOCATION_ATTRIBUTE = "__openapi_location__"
_PARAMETER_PROBLEMS: dict[str, frozenset[int]] = {}


def _absent_not_null(schema: dict[str, Any]) -> None:
    """An optional member is left out, never sent as null: no ``default: null`` either."""
    for member in schema.get("properties", {}).values():
        if member.get("default", "") is None:
            del member["default"]


class FieldError(BaseModel):
    """One invalid input of a 422 (or 400) problem."""

    model_config = ConfigDict(
        populate_by_name=True, title="FieldError", json_schema_extra=_absent_not_null
    )

    field: str = Field(description="The input's name as the client knows it: items[0].sku")
    in_: str = Field(alias="in", description="body, query, path, header or cookie")
    message: str
    type: str | SkipJsonSchema[None] = None


class ProblemDocument(BaseModel):
    """RFC 9457 problem details: every error of every service has this shape."""

    model_config = ConfigDict(title="Problem", extra="allow", json_schema_extra=_absent_not_null)

    # Absent rather than null when they do not apply: SkipJsonSchema keeps null out of it.
    type: str = Field(description="A URI naming the kind of problem (about:blank: the status)")
    title: str = Field(description="The status's phrase, or the problem type's title")
    status: int = Field(description="The HTTP status, repeated")
    detail: str = Field(description="What went wrong, for a human")
    instance: str | SkipJsonSchema[None] = Field(None, description="The request path")
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        None, description="Validation problems (400, 422): one entry per invalid input"
    )


Declared = int | type[Problem]


def _status(problem: Declared) -> int:
    return problem if isinstance(problem, int) else problem.status


def raises(*problems: Declared, security: str | None = None) -> Callable[[CallableT], CallableT]:
    """Declare what a dependency or route handler can answer besides success: the statuses
    (or Problem classes) it raises, and the security scheme it requires. Put it where the
    raising happens; every route that depends on it inherits it in the document."""

    def mark(function: CallableT) -> CallableT:
        declared = set(getattr(function, _PROBLEMS_ATTRIBUTE, ()))
        setattr(function, _PROBLEMS_ATTRIBUTE, frozenset(declared | {_status(p) for p in problems}))
        if security is not None:
            setattr(function, _SECURITY_ATTRIBUTE, security)
        return function

    return mark


def sends_location(function: CallableT) -> CallableT:
    """The handler's success answer carries a ``Location`` header (the created resource)."""
    setattr(function, _LOCATION_ATTRIBUTE, True)
    return function


def parameter_raises(name: str, *problems: Declared) -> None:
    """A query parameter (by name) the code validates past its schema, e.g. ``cursor``: 400
    for one this API did not issue. Every operation taking it declares those statuses."""
    known = _PARAMETER_PROBLEMS.get(name, frozenset())
    _PARAMETER_PROBLEMS[name] = known | {_status(p) for p in problems}


def operation_id(route: APIRoute) -> str:
    """``<tag>_<handler name>``: a generated client reads ``orders.place_order(...)``.

    A route without exactly one tag keeps FastAPI's id (path and verb in it) rather than
    failing the whole document at request time; each service's document test requires the
    ``<tag>_<name>`` form of every operation, so such a route fails the tests instead."""
    if len(route.tags) != 1:
        return generate_unique_id(route)
    return f"{route.tags[0]}_{route.name}"


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    """The route's own dependant and every dependency below it."""
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _calls(route: RouteContext) -> Iterator[Callable[..., Any]]:
    return (d.call for d in _dependants(route.dependant) if d.call is not None)


def route_statuses(route: RouteContext) -> set[int]:
    """Every error status the route can answer, derived from its dependency tree."""
    statuses = set(GLOBAL_STATUSES)
    for call in _calls(route):
        statuses |= getattr(call, _PROBLEMS_ATTRIBUTE, frozenset())
    for dependant in _dependants(route.dependant):
        if dependant.path_params or dependant.query_params or dependant.header_params:
            statuses.add(422)
        if dependant.cookie_params or dependant.body_params:
            statuses.add(422)
        if dependant.body_params:
            statuses.add(400)  # a body that is not JSON
        for param in dependant.query_params:
            statuses |= _PARAMETER_PROBLEMS.get(param.alias, frozenset())
    return statuses


def route_security(route: RouteContext) -> list[str]:
    schemes = {getattr(call, _SECURITY_ATTRIBUTE, None) for call in _calls(route)}
    return sorted(scheme for scheme in schemes if scheme)


# Required where always sent, so schemathesis' header check proves it is (a missing
# Retry-After on a 503 fails the property tests).
_RETRY_AFTER = {
    "required": True,
    "description": "Seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 0},
}
_REQUEST_ID = {
    "required": True,
    "description": "The request's id (the client's X-Request-ID if it sent a valid one)",
    "schema": {"type": "string"},
}
_RATE_LIMIT_HEADERS = {
    name: {"description": description, "schema": {"type": "integer", "minimum": 0}}
    for name, description in (
        ("RateLimit-Limit", "Requests allowed per window"),
        ("RateLimit-Remaining", "Requests left in the window"),
        ("RateLimit-Reset", "Seconds until the window resets"),
    )
}
_REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Echoed in the response's X-Request-ID and in the service's logs",
    "schema": {"type": "string", "maxLength": 128},
}


def problem_response(status: int) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": _REQUEST_ID}
    if status in RETRY_AFTER_STATUSES:
        headers["Retry-After"] = _RETRY_AFTER
    if status == 429:
        headers.update(_RATE_LIMIT_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = {
            "description": "Bearer",
            "schema": {"type": "string"},
        }
    return {
        "description": HTTPStatus(status).phrase,
        "headers": headers,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _document_operation(operation: dict[str, Any], route: RouteContext) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's HTTPValidationError: replaced by the Problem
    for code, response in responses.items():
        response.setdefault("headers", {})["X-Request-ID"] = _REQUEST_ID
        if getattr(route.endpoint, _LOCATION_ATTRIBUTE, False) and code.startswith("2"):
            response["headers"]["Location"] = {
                "required": True,
                "description": "The created resource",
                "schema": {"type": "string", "format": "uri-reference"},
            }
    for status in sorted(route_statuses(route)):
        responses[str(status)] = problem_response(status)
    security = route_security(route)
    if security:
        operation["security"] = [{scheme: []} for scheme in security]
    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    if not any(p.get("name", "").lower() == "x-request-id" for p in parameters):
        parameters.append(dict(_REQUEST_ID_PARAMETER))


def _schema_routes(app: FastAPI) -> Iterator[RouteContext]:
    """The documented routes, as included (prefix, tags and dependencies of their router)."""
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.include_in_schema:
            yield context


def _add_components(document: dict[str, Any], used_schemes: set[str]) -> None:
    components: dict[str, Any] = document.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    problem = ProblemDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    if used_schemes:
        components["securitySchemes"] = {
            name: SECURITY_SCHEMES[name] for name in sorted(used_schemes)
        }


def _check_unique_ids(document: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            op_id = operation.get("operationId")
            where = f"{method.upper()} {path}"
            if op_id in seen:
                raise ValueError(f"operation id {op_id} of {where} is also {seen[op_id]}'s")
            seen[op_id] = where


def build_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, with errors, headers and security derived (see above)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    used_schemes: set[str] = set()
    for route in _schema_routes(app):
        for method in route.methods or ():
            operation = document["paths"][route.path_format].get(method.lower())
            if operation is not None:
                _document_operation(operation, route)
        used_schemes.update(route_security(route))
    _add_components(document, used_schemes)
    _check_unique_ids(document)
    return document


def install(app: FastAPI) -> None:
    """Serve :func:`build_document` as the app's ``/openapi.json`` (built once, on demand)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
