"""Notifications service settings: environment variables prefixed ``NOTIFICATIONS_``."""

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings
from notifications.secretbox import SecretBox


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", env_file=".env", extra="ignore")

    service_name: str = "notifications"
    port: int = 8003
    worker_port: int = 9003

    # The live stream (GET /notifications/stream).
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)  # a comment line this often
    stream_queue_size: int = Field(default=64, ge=1)  # live events buffered per client
    # A connected stream re-reads Postgres this often even without a live event, so a PUBLISH
    # lost to a Redis blip delays a notification by at most this much. 0: only on events.
    stream_resync_seconds: float = Field(default=60.0, ge=0)
    stream_retry_ms: int = Field(default=2_000, ge=0)  # the reconnect delay told to clients
    # Open streams per user across every replica (counted in Redis); one more is a 429.
    stream_max_per_user: int = Field(default=5, ge=1)
    # A stream's slot is a lease renewed at every heartbeat: a process that dies without
    # closing its streams gives their slots back after this long (at least two heartbeats).
    stream_slot_lease_seconds: float = Field(default=60.0, gt=0)

    # Webhooks: registration, delivery, retries and the per-endpoint circuit breaker.
    webhook_allow_private_targets: bool = False  # loopback/private/link-local URLs (tests)
    webhook_max_per_user: int = Field(default=10, ge=1)
    webhook_dns_timeout_seconds: float = Field(default=2.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)  # one POST, connect to response
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_base_seconds: float = Field(default=1.0, gt=0)  # full jitter, doubling
    webhook_backoff_max_seconds: float = Field(default=600.0, gt=0)
    webhook_breaker_failure_threshold: int = Field(default=5, ge=1)  # consecutive failures
    webhook_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)  # open -> half-open
    webhook_concurrency: int = Field(default=16, ge=1)  # deliveries in flight per worker
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0)  # sweep for due retries
    # With no delivery pending at all, the dispatcher looks this often (what this worker
    # queues wakes it at once; this is for what a replica queued just before dying).
    webhook_idle_poll_seconds: float = Field(default=10.0, gt=0)
    # Signing secrets are stored encrypted with this Fernet key (urlsafe base64 of 32 bytes:
    # `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).
    # Several keys, comma-separated: the first encrypts, all decrypt (rotating this key).
    # Unset: the services refuse to start (`make up` generates one per checkout into
    # .run/<stack>/webhook-secret-key; the Kubernetes overlays take it from a Secret).
    webhook_secret_key: SecretStr | None = None
    # Development only: without a key, use the fixed, public development key
    # (secretbox.DEV_ONLY_KEY) with a warning, instead of refusing to start.
    webhook_dev_key_allowed: bool = False
    # After POST .../rotate-secret the old secret still signs deliveries (a second signature
    # in webhook-signature) this long, so receivers can switch without losing one.
    webhook_secret_rotation_grace_seconds: float = Field(default=24 * 3600, ge=0)

    def secret_box(self) -> SecretBox:
        """The webhook secrets' box (refuses without a key: :class:`MissingSecretKey`)."""
        return SecretBox.from_setting(
            self.webhook_secret_key, dev_key_allowed=self.webhook_dev_key_allowed
        )

    @model_validator(mode="after")
    def _backoff_bounds(self) -> "Settings":
        if self.webhook_backoff_max_seconds < self.webhook_backoff_base_seconds:
            raise ValueError("webhook_backoff_max_seconds must be >= webhook_backoff_base_seconds")
        if self.stream_slot_lease_seconds < 2 * self.stream_heartbeat_seconds:
            raise ValueError("stream_slot_lease_seconds must be >= 2 x stream_heartbeat_seconds")
        return self
