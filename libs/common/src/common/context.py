"""The application context: what a process builds once at start-up and requests read.

Instead of untyped ``app.state.<attr>`` lookups spread over the code, an app keeps typed
contexts, each behind one :class:`AppSlot`. ``common`` owns :data:`SHARED`
(:class:`AppContext`: settings, database, Redis, read replica, rate limiter, capacity), filled
by :func:`common.http.create_service_app`'s lifespan; each service declares one slot for its
own context (its concrete settings and what its lifespan builds) in its ``context`` module.
mypy checks every attribute read through a slot, and reading a slot no lifespan filled fails
with a message naming it, not with an ``AttributeError`` deep in a dependency.

Routes read a context through a slot's ``Annotated`` dependency (:data:`AppContextDep`, or a
service's own); middleware and other code that has only the ASGI scope use
:meth:`AppSlot.of_scope`.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Generic, TypeVar

from fastapi import Depends, Request
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.types import Scope

from common.db import Database
from common.settings import ServiceSettings

if TYPE_CHECKING:  # these modules read the context: they build on this one, not the reverse
    from common.http import Capacity
    from common.ratelimit import RateLimiter
    from common.replica import Replica

Context = TypeVar("Context")


class AppSlot(Generic[Context]):
    """One typed context of an app, kept in its state under ``name``."""

    def __init__(self, name: str, kind: type[Context]) -> None:
        self.name = name
        self.kind = kind
        self.dependency = self._dependency()
        """The FastAPI dependency that reads this context (async: no thread hop)."""

    def put(self, app: Starlette, context: Context) -> None:
        """Called once, by the lifespan that built ``context``."""
        setattr(app.state, self.name, context)

    def of(self, app: Starlette) -> Context:
        context = getattr(app.state, self.name, None)
        if not isinstance(context, self.kind):
            raise RuntimeError(
                f"The app's {self.name!r} context is not set: its lifespan has not started."
            )
        return context

    def of_scope(self, scope: Scope) -> Context:
        """For ASGI middleware, which has the scope (whose ``app`` is the application)."""
        return self.of(scope["app"])

    def _dependency(self) -> Callable[[Request], Awaitable[Context]]:
        async def read(request: Request) -> Context:
            return self.of(request.app)

        return read


@dataclass(frozen=True, slots=True)
class AppContext:
    """What every service's process shares: one of each per process."""

    settings: ServiceSettings
    db: Database
    redis: Redis
    replica: "Replica | None"
    rate_limiter: "RateLimiter"
    capacity: "Capacity"


SHARED = AppSlot("shared", AppContext)
AppContextDep = Annotated[AppContext, Depends(SHARED.dependency)]
