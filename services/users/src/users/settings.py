"""Users service settings: environment variables prefixed ``USERS_``."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="USERS_", env_file=".env", extra="ignore")

    service_name: str = "users"
    port: int = 8001
    worker_port: int = 9001
    # Argon2id cost; the defaults are OWASP's recommended minimum (19 MiB, 2 passes).
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19_456, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Password hashes running at once in one process; one more is a 503 with Retry-After.
    password_hashes_in_flight: int = Field(default=4, ge=1, le=1000)
    # Failed logins per email within the window; beyond, a 429 until the window ends
    # (counted before any hash is spent, whoever sends them).
    login_failures_per_email: int = Field(default=10, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    # The user view cache; entries are also invalidated on every change (see users.cache).
    user_cache_ttl_seconds: int = Field(default=300, ge=1)
    # UserRegistered is announced again after this long without a confirmed welcome.
    welcome_timeout_seconds: float = Field(default=60.0, gt=0)
    welcome_timer_interval_seconds: float = Field(default=5.0, gt=0)
