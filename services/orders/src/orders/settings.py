"""Orders service settings: environment variables prefixed ``ORDERS_``."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", env_file=".env", extra="ignore")

    service_name: str = "orders"
    port: int = 8002
    worker_port: int = 9002

    # How long the saga waits for each reply before it sends its request again (orders.saga).
    saga_credit_timeout_seconds: float = Field(default=30.0, gt=0)
    saga_release_timeout_seconds: float = Field(default=30.0, gt=0)
    saga_notification_timeout_seconds: float = Field(default=60.0, gt=0)
    # ReserveCredit is sent again this many times before the order is rejected (timeout);
    # releases and announcements are sent again until they are answered.
    saga_max_resends: int = Field(default=3, ge=0, le=100)
    # Each re-send waits this much longer than the one before, up to the cap.
    saga_resend_backoff: float = Field(default=2.0, ge=1.0)
    saga_max_timeout_seconds: float = Field(default=600.0, gt=0)
    # How often the worker looks for sagas past their deadline.
    saga_timer_interval_seconds: float = Field(default=0.5, gt=0)
