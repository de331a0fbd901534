"""Signed-in reads answered from the caller's one Redis call, without FastAPI's routing.

The hottest reads (``GET /users/me``, ``GET /users/{id}``) usually end with a value that the
request's single Redis call already fetched: :func:`common.ratelimit.caller_read` checks the
session, counts the request against its rate limit and reads the caller's cached view in one
script. What is left is encoding nothing (the view is stored as JSON) and sending it. Going
through FastAPI for that (route matching, the dependency graph, a ``Response``) cost more
CPU than the Redis call itself: a third of the API process's time on this path.

:class:`FastReads` is the innermost middleware of a service app (inside the request id,
the edge limits and load shedding, so every one of them still applies). For a ``GET`` whose
path is one of its :class:`FastRead` routes and that carries a bearer token, it makes that
one call and, when the read's ``answer`` finds the value there, sends it: 200,
``application/json``, exactly what the route itself would send. Every other outcome goes on
to FastAPI: no session (401), a refusal (429), Redis down (503), a cache miss, someone
else's id (404), a path FastAPI parses differently. The outcome travels in the request's
scope, and the route's ``caller_read`` dependency takes it from there instead of calling
again, so a request is looked up and counted once whichever way it is answered. The route
stays the description of the endpoint (OpenAPI, validation, errors); this is only its fast
path, and it answers only what the route would answer the same.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from common.auth import remember_caller, token_of
from common.context import SHARED
from common.ratelimit import CallerRead, KeysOf, remember_caller_read

# A path parameter as FastAPI's routes write it, ``{name}`` or ``{name:convertor}``.
_PARAMETER = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}")
# What a fast read's parameter may hold: the characters of a canonical UUID or a slug. A
# value FastAPI might parse differently never reaches ``answer``: it goes to the route.
_VALUE = r"[0-9A-Za-z_-]{1,64}"

ANSWERED_AT = "common.fastread.path"
"""Scope key: the path of the :class:`FastRead` that answered the request (no route did)."""

Answer = Callable[[CallerRead, Mapping[str, str]], str | None]
"""From the caller's read and the path's parameters: the JSON body to send (200), or None
to let the route answer."""


@dataclass(frozen=True)
class FastRead:
    """A ``GET`` route (``path`` as declared, e.g. ``/users/{user_id}``) whose common answer
    is in the caller's read of ``keys_of(caller id)``, counted against ``group``."""

    path: str
    group: str
    keys_of: KeysOf
    answer: Answer
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # re.escape escapes the braces the substitution looks for: undone first.
        regex = _PARAMETER.sub(
            lambda m: f"(?P<{m.group(1)}>{_VALUE})",
            re.escape(self.path).replace(r"\{", "{").replace(r"\}", "}"),
        )
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


def _bearer_token(scope: Scope) -> str | None:
    """The request's bearer token, from the raw headers (no ``Request`` built for it)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return token_of(value.decode("latin-1"))
    return None


class FastReads:
    """ASGI middleware: answer :class:`FastRead` routes from the caller's read when it holds
    the answer; everything else goes on to the app (see the module's docstring)."""

    def __init__(self, app: ASGIApp, reads: Sequence[FastRead]) -> None:
        self.app = app
        self.reads = tuple(reads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        for read in self.reads:
            match = read.pattern.match(scope["path"])
            if match is not None:
                if not await self._answered(read, match.groupdict(), scope, send):
                    await self.app(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answered(
        self, read: FastRead, params: Mapping[str, str], scope: Scope, send: Send
    ) -> bool:
        token = _bearer_token(scope)
        if token is None:
            return False
        limiter = SHARED.of(scope["app"]).rate_limiter
        try:
            found = await limiter.check_caller(token, read.group, read.keys_of)
        except Exception as exc:  # a refusal, Redis down: the route raises it as its own
            remember_caller_read(scope, read.group, read.keys_of, exc)
            return False
        remember_caller_read(scope, read.group, read.keys_of, found)
        remember_caller(scope, found.caller if found is not None else None)
        if found is None:
            return False
        body = read.answer(found, params)
        if body is None:
            return False
        scope[ANSWERED_AT] = read.path  # the request's metrics label: the route's path
        content = body.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
        return True
