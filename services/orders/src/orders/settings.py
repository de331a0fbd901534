"""Orders service settings: environment variables prefixed ``ORDERS_``."""

from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", env_file=".env", extra="ignore")

    service_name: str = "orders"
    port: int = 8002
    worker_port: int = 9002
