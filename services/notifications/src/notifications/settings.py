"""Notifications service settings: environment variables prefixed ``NOTIFICATIONS_``.

Groups read their fields from ``NOTIFICATIONS_<GROUP>_<FIELD>`` (see common.settings):
``settings.webhook.max_attempts`` is ``NOTIFICATIONS_WEBHOOK_MAX_ATTEMPTS``.
"""

from typing import Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import NESTED, ServiceSettings, StreamSettings
from notifications.secretbox import SecretBox


class LiveStreamSettings(StreamSettings):
    """``NOTIFICATIONS_STREAM_*``: the shared Redis Streams trimming, and the live stream
    (GET /notifications/stream), whose variables share the ``STREAM_`` prefix."""

    # The live stream (GET /notifications/stream).
    heartbeat_seconds: float = Field(default=15.0, gt=0)  # a comment line this often
    queue_size: int = Field(default=64, ge=1)  # live events buffered per client
    # A connected stream re-reads Postgres this often even without a live event, so a PUBLISH
    # lost to a Redis blip delays a notification by at most this much. 0: only on events.
    resync_seconds: float = Field(default=60.0, ge=0)
    retry_ms: int = Field(default=2_000, ge=0)  # the reconnect delay told to clients
    # Open streams per user across every replica (counted in Redis); one more is a 429.
    max_per_user: int = Field(default=5, ge=1)
    # A stream's slot is a lease renewed at every heartbeat: a process that dies without
    # closing its streams gives their slots back after this long (at least two heartbeats).
    slot_lease_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _lease_outlives_two_heartbeats(self) -> Self:
        if self.slot_lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("stream.slot_lease_seconds must be >= 2 x stream.heartbeat_seconds")
        return self


class WebhookSettings(BaseModel):
    """``NOTIFICATIONS_WEBHOOK_*``."""

    # Webhooks: registration, delivery, retries and the per-endpoint circuit breaker.
    allow_private_targets: bool = False  # loopback/private/link-local URLs (tests)
    max_per_user: int = Field(default=10, ge=1)
    dns_timeout_seconds: float = Field(default=2.0, gt=0)
    timeout_seconds: float = Field(default=5.0, gt=0)  # one POST, connect to response
    max_attempts: int = Field(default=8, ge=1)
    backoff_base_seconds: float = Field(default=1.0, gt=0)  # full jitter, doubling
    backoff_max_seconds: float = Field(default=600.0, gt=0)
    breaker_failure_threshold: int = Field(default=5, ge=1)  # consecutive failures
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)  # open -> half-open
    concurrency: int = Field(default=16, ge=1)  # deliveries in flight per worker
    poll_interval_seconds: float = Field(default=1.0, gt=0)  # sweep for due retries
    # With no delivery pending at all, the dispatcher looks this often (what this worker
    # queues wakes it at once; this is for what a replica queued just before dying).
    idle_poll_seconds: float = Field(default=10.0, gt=0)
    # Signing secrets are stored encrypted with this Fernet key (urlsafe base64 of 32 bytes:
    # `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).
    # Several keys, comma-separated: the first encrypts, all decrypt (rotating this key).
    # Unset: the services refuse to start (`make up` generates one per checkout into
    # .run/<stack>/webhook-secret-key; the Kubernetes overlays take it from a Secret).
    secret_key: SecretStr | None = None
    # Development only: without a key, use the fixed, public development key
    # (secretbox.DEV_ONLY_KEY) with a warning, instead of refusing to start.
    dev_key_allowed: bool = False
    # After POST .../rotate-secret the old secret still signs deliveries (a second signature
    # in webhook-signature) this long, so receivers can switch without losing one.
    secret_rotation_grace_seconds: float = Field(default=24 * 3600, ge=0)

    @model_validator(mode="after")
    def _backoff_bounds(self) -> Self:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("webhook.backoff_max_seconds must be >= webhook.backoff_base_seconds")
        return self


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(**NESTED, env_prefix="NOTIFICATIONS_")

    service_name: str = "notifications"
    port: int = 8003
    worker_port: int = 9003

    stream: LiveStreamSettings = LiveStreamSettings()
    webhook: WebhookSettings = WebhookSettings()

    def secret_box(self) -> SecretBox:
        """The webhook secrets' box (refuses without a key: :class:`MissingSecretKey`)."""
        return SecretBox.from_setting(
            self.webhook.secret_key, dev_key_allowed=self.webhook.dev_key_allowed
        )
