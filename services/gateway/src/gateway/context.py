"""The gateway's application context (see :mod:`common.context`): built by its lifespan
(gateway.main), read by its routes through :data:`GatewayContextDep` and by the proxy
middleware through :func:`upstreams_of`."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.types import Scope

from common.context import AppSlot
from gateway.proxy import Proxy
from gateway.service import MergedDocument
from gateway.settings import Settings
from gateway.upstreams import Upstream


@dataclass(frozen=True, slots=True)
class GatewayContext:
    settings: Settings
    proxy: Proxy
    merged_document: MergedDocument
    upstreams: dict[str, Upstream]
    """One keep-alive pool and breaker per service, by name."""


GATEWAY = AppSlot("gateway", GatewayContext)
GatewayContextDep = Annotated[GatewayContext, Depends(GATEWAY.dependency)]


def upstreams_of(scope: Scope) -> dict[str, Upstream]:
    """For :class:`gateway.proxy.ProxyMiddleware`, which sits below this module."""
    return GATEWAY.of_scope(scope).upstreams
