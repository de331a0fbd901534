"""The gateway's own response models: the composite read. Proxied bodies are the services'
own and are never parsed here."""

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class OverviewUser(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    status: str
    credit_limit_cents: int
    credit_available_cents: int
    created_at: datetime


class OverviewOrder(BaseModel):
    id: uuid.UUID
    status: str
    total_cents: int
    created_at: datetime
    updated_at: datetime


class Overview(BaseModel):
    """The caller's account at a glance; a part whose service was slow or down is null and
    named in ``degraded``."""

    user: OverviewUser | None
    orders: list[OverviewOrder] | None = Field(description="the latest orders, newest first")
    unread_notifications: int | None = Field(
        description="unread notifications among the latest 100"
    )
    degraded: list[str] = Field(description="services whose part is missing (null)")
