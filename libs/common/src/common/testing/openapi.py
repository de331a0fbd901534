"""Property tests over a service's OpenAPI document, with schemathesis and hypothesis.

A service's test loads its real app (real Postgres and Redis through the plugin's fixtures)
with :func:`openapi_schema` and calls :func:`assert_no_server_errors`: for every operation of
the document, schemathesis generates requests, valid ones and, on purpose, invalid ones
(wrong types, out-of-range numbers, odd strings, missing fields), sends them to the app
in-process, and checks the properties every answer must have: it is never a 5xx, and its
status and media type are ones the document declares for the operation (schemathesis'
``status_code_conformance`` and ``content_type_conformance``): the document tells the whole
truth (common.openapi). :func:`openapi_schema_from_url` loads a running service's document
instead, for the same checks over HTTP (tests/e2e).
Every operation is tried; the failures of all of them are reported together, each with a
curl command that reproduces it.

Bounded by :data:`PROPERTY_SETTINGS` so the three services take seconds, not minutes
(``PROPERTY_MAX_EXAMPLES`` raises the bound for a longer local hunt). Derandomized: a run is
reproducible and CI never flickers.

(schemathesis' own pytest integration, ``from_fixture``, does not run under pytest 9: it
reads a private attribute pytest removed. Driving hypothesis directly needs none of it.)
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.openapi import from_asgi, from_url
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CONFORMANCE_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("PROPERTY_MAX_EXAMPLES", "100")),
    deadline=None,  # the first request of an operation pays for connections: no timing here
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def openapi_schema(app: FastAPI, *, exclude: Iterable[tuple[str, str]] = ()) -> BaseSchema:
    """The app's own document, with requests sent to the app in-process (its lifespan runs
    on schemathesis' event loop thread; :func:`stop_apps` ends it). ``exclude``: operations
    left out, as ``(path, method)``."""
    schema: BaseSchema = from_asgi("/openapi.json", app)
    for path, method in exclude:
        schema = schema.exclude(path=path, method=method)
    return schema


def openapi_schema_from_url(
    base_url: str, *, exclude: Iterable[tuple[str, str]] = (), timeout: float = 10.0
) -> BaseSchema:
    """A running service's document (``base_url/openapi.json``); requests go to that
    service over HTTP."""
    schema: BaseSchema = from_url(f"{base_url}/openapi.json", timeout=timeout)
    schema.config.update(base_url=base_url)
    for path, method in exclude:
        schema = schema.exclude(path=path, method=method)
    return schema


def stop_apps() -> None:
    """Run the shutdown half of every app lifespan schemathesis started (engines, pools)."""
    shutdown_lifespans()


def assert_no_server_error(case: Case[Any], headers: Mapping[str, str]) -> None:
    """Never a 5xx, and nothing the document does not declare: status and media type."""
    response = case.call(headers=dict(headers))
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} answered {response.status_code}:"
        f" {response.text[:300]}\n  reproduce: {case.as_curl_command()}"
    )
    case.validate_response(response, checks=CONFORMANCE_CHECKS, headers=dict(headers))


@dataclass
class Tally:
    """What a run covered, so a test can check it really ran (and say so in its report)."""

    operations: list[str] = field(default_factory=list)
    requests: int = 0


def _credentials(
    operation: APIOperation[Any, Any, Any, Any],
    headers: Mapping[str, str],
    tokens: Mapping[str, str],
) -> dict[str, str]:
    """``headers``, plus the bearer token of the scheme the operation's document requires
    (``tokens``: scheme name -> token), so /admin gets the operator's, the rest a customer's."""
    sent = dict(headers)
    for requirement in operation.definition.raw.get("security", []):
        for scheme in requirement:
            if scheme in tokens:
                sent["Authorization"] = f"Bearer {tokens[scheme]}"
    return sent


def _run_property(
    bounded: settings,
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    sent: Mapping[str, str],
    tally: Tally,
) -> None:
    """One operation, one generation mode: hypothesis draws the cases, each is checked."""

    @bounded
    @given(case=operation.as_strategy(generation_mode=mode))
    def no_server_error(case: Case[Any]) -> None:
        tally.requests += 1
        assert_no_server_error(case, sent)

    no_server_error()


def assert_no_server_errors(
    schema: BaseSchema,
    headers: Mapping[str, str] | None = None,
    *,
    tokens: Mapping[str, str] | None = None,
    max_examples: int | None = None,
) -> Tally:
    """Every operation, positive and negative cases. ``tokens``: a bearer token per security
    scheme (common.openapi), sent to the operations that declare it; ``max_examples``
    overrides :data:`PROPERTY_SETTINGS`' bound (a slower transport: real HTTP)."""
    failures: list[str] = []
    tally = Tally()
    bounded = (
        PROPERTY_SETTINGS
        if max_examples is None
        else settings(PROPERTY_SETTINGS, max_examples=max_examples)
    )
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document itself is broken: that is a failure too
        operation = result.ok()
        tally.operations.append(operation.label)
        sent = _credentials(operation, headers or {}, tokens or {})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run_property(bounded, operation, mode, sent, tally)
            except Unsatisfiable:
                pass  # nothing to get wrong (no parameters, no body): no negative case exists
            except FailureGroup as failed:  # a conformance check: what was sent, what came
                failures.append(f"[{mode.value}] {operation.label}: {failed}"[:3000])
            except Exception as failure:  # an assertion, or the app's own exception (a 500)
                failures.append(f"[{mode.value}] {operation.label}: {failure!r}"[:3000])
    assert tally.operations, "the document has no operation"
    assert not failures, "\n\n".join(failures)
    return tally


def _operations(document: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def convention_violations(document: Mapping[str, Any]) -> list[str]:
    """What in a service's document breaks the API conventions (DESIGN section 5): one tag
    and an id ``<tag>_<name>`` per operation; every error as problem+json of the one Problem
    schema; Retry-After on 429 and 503; no FastAPI HTTPValidationError left."""
    problem = {"$ref": "#/components/schemas/Problem"}
    found: list[str] = []
    for where, operation in _operations(document):
        tags = operation.get("tags", [])
        if len(tags) != 1 or not str(operation.get("operationId", "")).startswith(f"{tags[0]}_"):
            found.append(f"{where}: id {operation.get('operationId')} is not <tag>_<name> {tags}")
        for code, response in operation.get("responses", {}).items():
            if int(code) < 400:
                continue
            if response.get("content") != {"application/problem+json": {"schema": problem}}:
                found.append(f"{where} {code}: not application/problem+json of Problem")
            if int(code) in {429, 503} and "Retry-After" not in response.get("headers", {}):
                found.append(f"{where} {code}: no Retry-After")
    if "HTTPValidationError" in document.get("components", {}).get("schemas", {}):
        found.append("FastAPI's HTTPValidationError is still in the document")
    return found


def declared_statuses(document: Mapping[str, Any]) -> dict[str, set[int]]:
    """``"POST /orders"`` -> the statuses its document declares."""
    return {
        where: {int(code) for code in operation.get("responses", {})}
        for where, operation in _operations(document)
    }


def secured_operations(document: Mapping[str, Any]) -> dict[str, set[str]]:
    """``"POST /orders"`` -> the security schemes it requires (operations without: absent)."""
    return {
        where: {scheme for requirement in operation["security"] for scheme in requirement}
        for where, operation in _operations(document)
        if operation.get("security")
    }
