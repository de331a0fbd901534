"""Request and response bodies of the orders API."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from common.types import Integer, Text

Sku = Annotated[Text, StringConstraints(min_length=1, max_length=64)]


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    quantity: Integer = Field(ge=1, le=1000)
    unit_price_cents: Integer = Field(ge=1, le=100_000_000)


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[OrderItem] = Field(min_length=1, max_length=100)


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    status: str
    total_cents: int
    items: list[OrderItem]
    rejection_reason: str | None
    created_at: datetime
    updated_at: datetime


class SagaStepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    status: str
    detail: str | None
    at: datetime


class SagaOut(BaseModel):
    order_id: uuid.UUID
    state: str
    version: int
    deadline_at: datetime | None
    steps: list[SagaStepOut]
