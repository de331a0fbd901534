"""Users service settings: environment variables prefixed ``USERS_``.

Groups read their fields from ``USERS_<GROUP>_<FIELD>`` (see common.settings):
``settings.password.hashes_in_flight`` is ``USERS_PASSWORD_HASHES_IN_FLIGHT``.
"""

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from common.settings import NESTED, ServiceSettings


class Argon2Settings(BaseModel):
    """Password hashing cost (``USERS_ARGON2_*``)."""

    # Argon2id cost; the defaults are OWASP's recommended minimum (19 MiB, 2 passes).
    time_cost: int = Field(default=2, ge=1)
    memory_kib: int = Field(default=19_456, ge=8)
    parallelism: int = Field(default=1, ge=1)


class PasswordSettings(BaseModel):
    """Password hashes at once (``USERS_PASSWORD_*``)."""

    # Password hashes running at once in one process (a hash takes a core for tens of ms),
    # and how many more may wait for a turn, for at most how long; past that, a 503 with
    # Retry-After at once (users.passwords).
    hashes_in_flight: int = Field(default=2, ge=1, le=1000)
    hashes_queued: int = Field(default=32, ge=0, le=10_000)
    hash_wait_seconds: float = Field(default=2.0, gt=0)


class LoginSettings(BaseModel):
    """Failed logins (``USERS_LOGIN_*``)."""

    # Failed logins per email within the window; beyond, a 429 until the window ends
    # (counted before any hash is spent, whoever sends them).
    failures_per_email: int = Field(default=10, ge=1)
    failure_window_seconds: int = Field(default=900, ge=1)


class WelcomeSettings(BaseModel):
    """The welcome notification's confirmation (``USERS_WELCOME_*``)."""

    # UserRegistered is announced again after this long without a confirmed welcome.
    timeout_seconds: float = Field(default=60.0, gt=0)
    timer_interval_seconds: float = Field(default=5.0, gt=0)


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(**NESTED, env_prefix="USERS_")

    service_name: str = "users"
    port: int = 8001
    worker_port: int = 9001
    argon2: Argon2Settings = Argon2Settings()
    password: PasswordSettings = PasswordSettings()
    login: LoginSettings = LoginSettings()
    # The user view cache; entries are also invalidated on every change (see users.cache).
    user_cache_ttl_seconds: int = Field(default=300, ge=1)
    welcome: WelcomeSettings = WelcomeSettings()
