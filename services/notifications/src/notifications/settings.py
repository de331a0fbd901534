"""Notifications service settings: environment variables prefixed ``NOTIFICATIONS_``."""

from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", env_file=".env", extra="ignore")

    service_name: str = "notifications"
    port: int = 8003
    worker_port: int = 9003
