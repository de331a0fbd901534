"""Who may use ``/admin``: operators, with a credential of their own, never a customer's.

Operator tokens are random strings handed to each operator; the service is configured with
only their SHA-256 hashes (``ORDERS_OPERATOR_TOKENS="alice:<hex>,bob:<hex>"``, printed by
``make operator-token NAME=alice``), so a leaked configuration grants nothing. A presented
token is hashed and compared with every configured hash in constant time.

* The JSON API takes the token as ``Authorization: Bearer <token>``. No token, or one that is
  nobody's: 401. A customer's session token: 403 (it is valid, just not for this).
* The console keeps the token in an HttpOnly, SameSite=Strict cookie set by its login form,
  and every form it serves carries a CSRF token derived from the operator's token (an HMAC, so
  nothing is stored server-side); a POST without the matching one, or from another origin, is
  refused. A console page without a valid cookie redirects to the login page.
"""

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse

from common.auth import hash_token, optional_user
from common.errors import Problem, Unauthorized
from common.openapi import OPERATOR, raises
from orders.settings import Settings

OPERATOR_COOKIE = "orders_operator"
CSRF_FIELD = "csrf_token"
_CSRF_CONTEXT = b"orders.admin.csrf"


class Forbidden(Problem):
    status = 403


class LoginRequired(Exception):
    """A console page was asked for without an operator cookie: go to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    csrf_token: str  # what the console's forms must send back


def find_operator(token: str, hashes: dict[str, str]) -> Operator | None:
    """The operator whose configured hash matches ``token``; every hash is compared."""
    digest = hash_token(token)
    found: str | None = None
    for name, expected in hashes.items():
        if hmac.compare_digest(digest, expected):
            found = name
    if found is None:
        return None
    csrf = hmac.new(token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()
    return Operator(name=found, csrf_token=csrf)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _refuse(request: Request) -> Problem:
    """401, or 403 when the bearer token is a customer's session."""
    if await optional_user(request) is not None:
        return Forbidden("A customer token cannot be used for /admin; use an operator token.")
    return Unauthorized("Missing or unknown operator token.")


@raises(Unauthorized, Forbidden, security=OPERATOR)
async def api_operator(request: Request) -> Operator:
    """FastAPI dependency of the JSON API: the operator behind the bearer token."""
    token = _bearer(request)
    operator = find_operator(token, _settings(request).operator_hashes()) if token else None
    if operator is None:
        raise await _refuse(request)
    return operator


async def console_operator(request: Request) -> Operator:
    """FastAPI dependency of the console: the operator behind the cookie (or bearer token)."""
    bearer = _bearer(request)
    token = bearer or request.cookies.get(OPERATOR_COOKIE)
    operator = find_operator(token, _settings(request).operator_hashes()) if token else None
    if operator is not None:
        return operator
    if bearer is not None:
        raise await _refuse(request)
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
