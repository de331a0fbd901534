"""The stock check that version 2 of the order saga adds (``orders.saga.V2``).

No inventory service exists yet, so these two messages are not in ``ALL_MESSAGES`` (nor in
the event catalogue or the AsyncAPI document): the orders worker handles ``StockChecked``
only when version 2 is the current definition, and the tests answer for the inventory
service. ``docs/adding-a-saga-step.md`` says what listing them takes once a service exists.
"""

import uuid
from typing import ClassVar

from pydantic import BaseModel, Field

from common.contracts.base import Message, command_stream, event_stream


class StockLine(BaseModel):
    """One line of an order, as the stock check reads it."""

    sku: str
    quantity: int = Field(gt=0)


class CheckStock(Message):
    """Command (orders -> inventory): are the order's items in stock? Idempotent per order."""

    TYPE: ClassVar[str] = "inventory.CheckStock"
    STREAM: ClassVar[str] = command_stream("inventory")
    PRODUCER: ClassVar[str] = "orders"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("inventory",)

    order_id: uuid.UUID
    lines: tuple[StockLine, ...]


class StockChecked(Message):
    """Reply: whether every line of the order is in stock."""

    TYPE: ClassVar[str] = "inventory.StockChecked"
    STREAM: ClassVar[str] = event_stream("inventory")
    PRODUCER: ClassVar[str] = "inventory"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("orders",)

    order_id: uuid.UUID
    in_stock: bool
