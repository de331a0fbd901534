"""Request and response bodies of the notifications API."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.types import Text
from notifications import webhooks


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    order_id: uuid.UUID | None
    created_at: datetime
    read: bool


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Text = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL; its host must resolve to public addresses",
        examples=["https://example.com/hooks/shop"],
    )
    secret: Text = Field(
        min_length=16,
        max_length=256,
        repr=False,
        description="HMAC-SHA256 key of the Webhook-Signature header; write-only",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            return webhooks.check_url(url)
        except webhooks.TargetRefused as exc:
            raise ValueError(str(exc)) from exc


class WebhookOut(BaseModel):
    """A webhook as the API shows it: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    created_at: datetime


class WebhookAttemptOut(BaseModel):
    """One attempt of one delivery (a notification to this webhook)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    delivery_id: uuid.UUID = Field(description="Also the Webhook-Id header of the request")
    notification_id: uuid.UUID
    attempt: int = Field(description="1 for the first attempt of the delivery")
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered")
    error: str | None = Field(description="Why there is no status: timeout, refused, DNS...")
    outcome: Literal["succeeded", "retrying", "gave_up"]
    duration_ms: float
    next_attempt_at: datetime | None = Field(description="When it is retried; null if final")
