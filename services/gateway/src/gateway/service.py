"""What the gateway does beyond proxying: the composite read and the merged API document.

Both call several services at once and never let one slow or absent service hold up or
fail the whole: each call has its own deadline, and what did not come is reported missing.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError

from common.errors import Problem, Unauthorized
from gateway.openapi import Document, merge_documents
from gateway.schemas import Overview, OverviewOrder, OverviewUser
from gateway.settings import Settings
from gateway.upstreams import Upstream, UpstreamUnavailable

logger = logging.getLogger("gateway.service")
UNREAD_WINDOW = 100


class PartMissing(Exception):
    """A part of a composite answer did not come (slow, down, or an unexpected answer)."""


async def _get_json(upstream: Upstream, path: str, headers: dict[str, str], deadline: float) -> Any:
    """GET one upstream document within ``deadline``; 401 is the caller's, anything else
    unexpected is a missing part (and a breaker failure when the service did not answer)."""
    try:
        upstream.admit()
        async with asyncio.timeout(deadline):
            async with upstream.session.get(
                upstream.base_url + path, headers=headers, allow_redirects=False
            ) as response:
                if response.status == 401:
                    raise Unauthorized("The token is missing, expired or revoked.")
                if response.status != 200:
                    raise PartMissing(f"{upstream.name} answered {response.status}")
                body = await response.json()
        upstream.breaker.succeeded()
        return body
    except UpstreamUnavailable as exc:
        raise PartMissing(str(exc)) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        upstream.breaker.failed()
        raise PartMissing(f"{upstream.name}: {type(exc).__name__}") from exc


async def _user(upstream: Upstream, headers: dict[str, str], deadline: float) -> OverviewUser:
    return OverviewUser.model_validate(await _get_json(upstream, "/users/me", headers, deadline))


async def _orders(
    upstream: Upstream, headers: dict[str, str], deadline: float, count: int
) -> list[OverviewOrder]:
    page = await _get_json(upstream, f"/orders?limit={count}", headers, deadline)
    return [OverviewOrder.model_validate(item) for item in page["items"]]


async def _unread(upstream: Upstream, headers: dict[str, str], deadline: float) -> int:
    page = await _get_json(upstream, f"/notifications?limit={UNREAD_WINDOW}", headers, deadline)
    return sum(1 for item in page["items"] if not item.get("read", False))


async def overview(
    upstreams: dict[str, Upstream], headers: dict[str, str], settings: Settings
) -> Overview:
    """The user, their latest orders and their unread notifications count, asked of the three
    services at once. A part that misses its deadline or fails is None and named in
    ``degraded``; a token a service refuses is the caller's 401."""
    deadline = settings.overview.part_deadline_seconds
    parts = await asyncio.gather(
        _user(upstreams["users"], headers, deadline),
        _orders(upstreams["orders"], headers, deadline, settings.overview.orders),
        _unread(upstreams["notifications"], headers, deadline),
        return_exceptions=True,
    )
    for part in parts:
        if isinstance(part, Problem):
            raise part
    degraded = []
    for name, part in zip(("users", "orders", "notifications"), parts, strict=True):
        if isinstance(part, BaseException):
            if not isinstance(part, PartMissing | ValidationError | KeyError | TypeError):
                raise part
            logger.warning("overview part missing: %s", part)
            degraded.append(name)
    user, orders, unread = (None if isinstance(part, BaseException) else part for part in parts)
    return Overview(
        user=user,
        orders=orders,
        unread_notifications=unread,
        degraded=degraded,
    )


@dataclass
class MergedDocument:
    """The merged /openapi.json, rebuilt at most every ``max_age`` seconds; a service that
    did not answer is left out of one build and asked again at the next."""

    max_age: float
    document: Document | None = None
    built_at: float = 0.0
    complete: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self, gateway: Document, upstreams: dict[str, Upstream]) -> Document:
        async with self.lock:
            fresh = time.monotonic() - self.built_at < self.max_age
            if self.document is None or not fresh or not self.complete:
                await self._build(gateway, upstreams)
            assert self.document is not None
            return self.document

    async def _build(self, gateway: Document, upstreams: dict[str, Upstream]) -> None:
        names = list(upstreams)
        documents = await asyncio.gather(
            *(_get_json(upstreams[name], "/openapi.json", {}, 5.0) for name in names),
            return_exceptions=True,
        )
        services = {
            name: document
            for name, document in zip(names, documents, strict=True)
            if isinstance(document, dict)
        }
        self.document = merge_documents(gateway, services)
        self.complete = len(services) == len(names)
        self.built_at = time.monotonic()
