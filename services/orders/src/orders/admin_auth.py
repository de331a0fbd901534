"""Who may use ``/admin``: operators, with a credential of their own, never a customer's.

Operator tokens are random strings handed to each operator; the service is configured with
only their SHA-256 hashes (``ORDERS_OPERATOR_TOKENS="alice:<hex>,bob:<hex>"``, printed by
``make operator-token NAME=alice``), so a leaked configuration grants nothing. A presented
token is hashed and compared with every configured hash in constant time.

* The JSON API takes the token as ``Authorization: Bearer <token>``. No token, or one that is
  nobody's: 401. A customer's session token: 403 (it is valid, just not for this).
* The console's login form takes the token once and starts a console session: a random
  session id in an HttpOnly, SameSite=Strict cookie, and in Redis (only its hash, as the
  key ``admin:console:<sha256>`` -> operator name) with a TTL; sign-out deletes it, so a
  replayed cookie is worthless afterwards, and the operator token itself never sits in a
  browser. Every form carries a CSRF token derived from the session id (an HMAC); a POST
  without the matching one, or from another origin, is refused. A console page without a
  live session redirects to the login page.
* Every ``/admin`` response is ``Cache-Control: no-store`` (:class:`NoStoreMiddleware`): the
  pages and the JSON carry every customer's data.
"""

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse
from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.auth import bearer_token, hash_token, optional_user
from common.context import SHARED
from common.errors import Problem, Unauthorized
from common.openapi import OPERATOR, raises
from orders.admin_schemas import Operator
from orders.context import ORDERS
from orders.settings import Settings

OPERATOR_COOKIE = "orders_operator"
CSRF_FIELD = "csrf_token"
_CSRF_CONTEXT = b"orders.admin.csrf"
CONSOLE_SESSION_PREFIX = "admin:console:"


class Forbidden(Problem):
    status = 403


class LoginRequired(Exception):
    """A console page was asked for without an operator cookie: go to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def find_operator(token: str, hashes: dict[str, str]) -> Operator | None:
    """The operator whose configured hash matches ``token``; every hash is compared."""
    digest = hash_token(token)
    found: str | None = None
    for name, expected in hashes.items():
        if hmac.compare_digest(digest, expected):
            found = name
    if found is None:
        return None
    return Operator(name=found, csrf_token=_csrf_of(token))


def _csrf_of(secret: str) -> str:
    return hmac.new(secret.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def _console_key(session_id: str) -> str:
    return CONSOLE_SESSION_PREFIX + hash_token(session_id)


async def start_console_session(redis: Redis, operator: Operator, ttl_seconds: int) -> str:
    """A new console session of ``operator``: its id (the cookie's value), kept in Redis
    (hashed) with a TTL."""
    session_id = secrets.token_urlsafe(32)
    await redis.set(_console_key(session_id), operator.name, ex=ttl_seconds)
    return session_id


async def end_console_session(redis: Redis, session_id: str) -> None:
    await redis.delete(_console_key(session_id))


async def console_session_operator(
    redis: Redis, session_id: str, hashes: dict[str, str]
) -> Operator | None:
    """The operator of a live console session; None when it expired, was ended, or its
    operator is no longer configured."""
    name = await redis.get(_console_key(session_id))
    if name is None:
        return None
    name = name.decode() if isinstance(name, bytes) else str(name)
    if name not in hashes:
        return None
    return Operator(name=name, csrf_token=_csrf_of(session_id))


def _settings(request: Request) -> Settings:
    return ORDERS.of(request.app).settings


async def _refuse(request: Request) -> Problem:
    """401, or 403 when the bearer token is a customer's session."""
    if await optional_user(request) is not None:
        return Forbidden("A customer token cannot be used for /admin; use an operator token.")
    return Unauthorized("Missing or unknown operator token.")


@raises(Unauthorized, Forbidden, security=OPERATOR)
async def api_operator(request: Request) -> Operator:
    """FastAPI dependency of the JSON API: the operator behind the bearer token."""
    token = bearer_token(request)
    operator = find_operator(token, _settings(request).operator_hashes()) if token else None
    if operator is None:
        raise await _refuse(request)
    return operator


async def console_operator(request: Request) -> Operator:
    """FastAPI dependency of the console: the operator behind the session cookie (or the
    bearer token)."""
    bearer = bearer_token(request)
    hashes = _settings(request).operator_hashes()
    if bearer is not None:
        operator = find_operator(bearer, hashes)
        if operator is None:
            raise await _refuse(request)
        return operator
    session_id = request.cookies.get(OPERATOR_COOKIE)
    if session_id and len(session_id) <= 128:
        redis = SHARED.of(request.app).redis
        operator = await console_session_operator(redis, session_id, hashes)
        if operator is not None:
            return operator
    raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Origin or Referer)."""
    sent = request.headers.get("origin") or request.headers.get("referer")
    if not sent or sent == "null":
        return sent is None  # no header at all: not a browser's cross-site form
    return urlsplit(sent).netloc == request.headers.get("host", "")


def check_csrf(request: Request, operator: Operator, submitted: str) -> None:
    """Refuse a console POST that is cross-origin or lacks the operator's CSRF token."""
    if not same_origin(request) or not hmac.compare_digest(submitted, operator.csrf_token):
        raise Forbidden("The form is stale or came from another site; reload the page.")


def login_redirect(request: Request, exc: Exception) -> RedirectResponse:
    """Exception handler: a console page without a session goes to the login page."""
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/admin/login?next={quote(exc.next_path, safe='')}", status_code=303)


def safe_next(path: str | None) -> str:
    """Where to go after login: only a path of this console, never another site."""
    if path and path.startswith("/admin") and not path.startswith("//") and "\\" not in path:
        return path
    return "/admin/"


ApiOperator = Annotated[Operator, Depends(api_operator)]
ConsoleOperator = Annotated[Operator, Depends(console_operator)]


class NoStoreMiddleware:
    """``Cache-Control: no-store`` on every response under ``prefix``, errors and redirects
    included (a route's own header could not cover a 401 or a 404 raised before it)."""

    def __init__(self, app: ASGIApp, prefix: str = "/admin") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"cache-control"
                ]
                message["headers"] = [*headers, (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, send_no_store)
