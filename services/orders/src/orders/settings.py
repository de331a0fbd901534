"""Orders service settings: environment variables prefixed ``ORDERS_``."""

import re

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings
from orders.saga import DEFINITIONS


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
    # How long a version 2 saga waits for the stock check's reply (StockChecked) before it
    # sends CheckStock again.
    saga_stock_timeout_seconds: float = Field(default=30.0, gt=0)
    # The saga definition new orders start on (orders.saga.DEFINITIONS); a saga keeps the one
    # it started on until it settles. 2 adds the stock check (one more command and reply per
    # order, answered by an inventory service): switch only once every process knows it.
    saga_definition_version: int = 1
    # How often the worker looks for sagas past their deadline.
    saga_timer_interval_seconds: float = Field(default=0.5, gt=0)

    # Admission (orders.admission): a new order is refused at once (503, Retry-After) while
    # this many sagas wait for credit, so accepted orders keep a bounded latency instead of
    # queueing behind the backlog (about the bound / the sustained rate: set it to the
    # sustained rate for a p99 near a second). 0: no bound.
    admission_max_pending_sagas: int = Field(default=200, ge=0)
    # The backlog is counted at most this often (and only while orders arrive).
    admission_refresh_seconds: float = Field(default=0.1, gt=0)

    # Operators of /admin (orders.admin_auth): "name:sha256hex,name:sha256hex". Only hashes are
    # configured; `make operator-token NAME=alice` prints a new token and its entry. Empty: no
    # operator can sign in.
    operator_tokens: str = ""
    # The console's cookie is Secure (sent over HTTPS only, and http://localhost); set false only
    # to reach a console over plain HTTP on another host.
    operator_cookie_secure: bool = True
    operator_cookie_max_age_seconds: int = Field(default=8 * 3600, ge=60)

    @field_validator("saga_definition_version")
    @classmethod
    def _saga_definition_is_registered(cls, value: int) -> int:
        if value not in DEFINITIONS:
            raise ValueError(f"no saga definition version {value}; known: {sorted(DEFINITIONS)}")
        return value

    @field_validator("operator_tokens")
    @classmethod
    def _operator_tokens_are_name_hash_pairs(cls, value: str) -> str:
        operator_token_hashes(value)  # raises ValueError, naming the bad entry
        return value

    def operator_hashes(self) -> dict[str, str]:
        return operator_token_hashes(self.operator_tokens)


OPERATOR_ENTRY = re.compile(r"(?P<name>[A-Za-z0-9_.@-]{1,64}):(?P<hash>[0-9a-f]{64})")


def operator_token_hashes(setting: str) -> dict[str, str]:
    """``"alice:<sha256 hex>,bob:<sha256 hex>"`` -> ``{"alice": "<hex>", "bob": "<hex>"}``."""
    hashes: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in setting.split(","))):
        match = OPERATOR_ENTRY.fullmatch(entry)
        if match is None:
            shown = entry.partition(":")[0][:64]
            raise ValueError(f"operator token entry {shown!r}... is not name:<64 hex digits>")
        hashes[match["name"]] = match["hash"]
    return hashes
