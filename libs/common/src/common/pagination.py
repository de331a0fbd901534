"""Keyset pagination shared by every list endpoint.

Lists are ordered newest first by ``(created_at, id)``; the cursor is that pair of the last
item, base64-encoded so clients treat it as opaque. Keyset (not offset) pagination stays fast
and stable while new rows arrive.
"""

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, StringConstraints

from common.errors import Problem
from common.openapi import parameter_raises
from common.types import Text

ItemT = TypeVar("ItemT")
RowT = TypeVar("RowT")

Limit = Annotated[int, Query(ge=1, le=100, description="Page size (1..100)")]
Cursor = Annotated[
    Annotated[Text, StringConstraints(max_length=200)] | None,
    Query(description="next_cursor of the last page"),
]
parameter_raises("cursor", 400)  # a cursor this API did not issue (decode_cursor)


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The ``(created_at, id)`` a cursor carries; a 400 for anything this API did not issue.

    The timestamp must carry its offset and lie in PostgreSQL's range once in UTC: a naive
    one, or ``9999-12-31T23:59:59-14:00`` (year 10000 in UTC), would otherwise reach the
    query and fail there, as a 500.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, _, item_id = raw.partition("|")
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None:
            raise ValueError("cursor timestamp without an offset")
        return at.astimezone(UTC), uuid.UUID(item_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise Problem(
            "The cursor is not one this API issued.",
            status=400,
            errors=[{"field": "cursor", "in": "query", "message": "invalid cursor"}],
        ) from exc


def build_page(
    rows: Sequence[RowT],
    limit: int,
    *,
    item: Callable[[RowT], ItemT],
    key: Callable[[RowT], tuple[datetime, uuid.UUID]],
) -> Page[ItemT]:
    """A page from rows fetched with ``limit + 1``: the extra row only says "there is more".

    ``key`` gives a row's ``(timestamp, id)``, the order the list is sorted by.
    """
    page = rows[:limit]
    more = len(rows) > limit and bool(page)
    return Page[ItemT](
        items=[item(row) for row in page],
        next_cursor=encode_cursor(*key(page[-1])) if more else None,
    )
