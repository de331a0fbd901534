"""Request and response bodies of the notifications API."""

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    order_id: uuid.UUID | None
    created_at: datetime
    read: bool
