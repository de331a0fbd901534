"""Every error leaves a service as RFC 9457 ``application/problem+json``.

Services raise :class:`Problem` (or one of its subclasses) for expected failures; FastAPI's
own errors (validation, 404 for unknown routes, 405, malformed JSON) and anything unexpected
are turned into the same shape here, so no client ever sees a stack trace.
"""

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from common.unavailable import is_overloaded

PROBLEM_JSON = "application/problem+json"
_REQUEST_IDS_KEY = "common.request_ids"  # (request id, correlation id), set by common.http


def remember_request_ids(scope: Scope, request_id: str, correlation_id: str) -> None:
    """Kept in the request's scope by common.http's middleware, for :func:`request_ids`."""
    scope[_REQUEST_IDS_KEY] = (request_id, correlation_id)


def request_ids(scope: Scope) -> tuple[str, str] | None:
    """The request's (request id, correlation id); None outside the middleware."""
    ids: tuple[str, str] | None = scope.get(_REQUEST_IDS_KEY)
    return ids


logger = logging.getLogger(__name__)


class Problem(Exception):
    """An expected failure with an HTTP status and a human-readable detail."""

    status: int = 400
    title: str | None = None
    type: str = "about:blank"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra


class NotFound(Problem):
    status = 404


class Conflict(Problem):
    status = 409


class Unauthorized(Problem):
    status = 401

    def __init__(self, detail: str = "Missing, invalid or expired bearer token.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_name(loc: Sequence[int | str]) -> str:
    """``("body", "items", 0, "sku")`` -> ``items[0].sku``: the name a client recognises."""
    parts = list(loc[1:] if loc and loc[0] in {"body", "query", "path", "header"} else loc)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or str(loc[0] if loc else "request")


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": _field_name(error.get("loc", ())),
            "in": str(error.get("loc", ("body",))[0]),
            "message": error.get("msg", "invalid"),
            "type": error.get("type", "value_error"),
        }
        for error in exc.errors()
    ]


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        type_=exc.type,
        instance=request.url.path,
        headers=exc.headers,
        **exc.extra,
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc)
    if any(error["type"] == "json_invalid" for error in errors):
        return problem_response(
            400, "The request body is not valid JSON.", instance=request.url.path, errors=errors
        )
    fields = ", ".join(sorted({error["field"] for error in errors}))
    return problem_response(
        422, f"Invalid request: {fields}.", instance=request.url.path, errors=errors
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(
        exc.status_code,
        detail,
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
    )


# Where a driver's error can surface. Each goes through one handler that answers 503 when the
# error means "Postgres or Redis is unreachable, restarting or saturated" (common.unavailable)
# and 500 otherwise. Handled here, inside the app, so no traceback escapes to the server and
# the client's keep-alive connection stays usable.
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    RedisError,
    OSError,  # ConnectionError and TimeoutError among them
    ExceptionGroup,
    # What redis-py raises from its connection code when a Redis Cluster fail-over closes a
    # connection under a send (common.unavailable._redis_connection_torn_down). Any other
    # error of these types is still a 500, answered here rather than by the server.
    RuntimeError,
    AttributeError,
)


def unavailable_response(request: Request, exc: BaseException) -> JSONResponse:
    """A dependency is down or saturated: a 503 the client may retry, never a 500."""
    logger.warning("dependency unavailable", extra={"path": request.url.path, "error": repr(exc)})
    return problem_response(
        503,
        "The service is overloaded or its database is unreachable; retry shortly.",
        instance=request.url.path,
        headers={"Retry-After": "1"},
    )


async def _on_driver_error(request: Request, exc: Exception) -> JSONResponse:
    """Inside the request middleware (which adds the request id to the response)."""
    if is_overloaded(exc):
        return unavailable_response(request, exc)
    return _internal_error(request, exc, echo_request_id=False)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """The last resort. It runs outside the request middleware, so the request's ids come
    from the scope: the traceback in the log and the response still carry them."""
    if is_overloaded(exc):  # raised outside the routes (a middleware), still a 503
        return unavailable_response(request, exc)
    return _internal_error(request, exc, echo_request_id=True)


def _internal_error(request: Request, exc: Exception, *, echo_request_id: bool) -> JSONResponse:
    """A 500 without internals; the traceback goes to the log under the request's ids."""
    request_id, correlation_id = request_ids(request.scope) or (None, None)
    logger.error(
        "unhandled error",
        exc_info=exc,
        extra={
            "path": request.url.path,
            "request_id": request_id,
            "correlation_id": correlation_id,
        },
    )
    return problem_response(
        500,
        "An unexpected error occurred; it has been logged.",
        instance=request.url.path,
        headers={"X-Request-ID": request_id} if request_id and echo_request_id else None,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for driver_error in DRIVER_ERRORS:
        app.add_exception_handler(driver_error, _on_driver_error)
    app.add_exception_handler(Exception, _on_unexpected)
