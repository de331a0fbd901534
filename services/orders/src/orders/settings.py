"""Orders service settings: environment variables prefixed ``ORDERS_``.

Groups read their fields from ``ORDERS_<GROUP>_<FIELD>`` (see common.settings):
``settings.saga.max_resends`` is ``ORDERS_SAGA_MAX_RESENDS``.
"""

import re

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.settings import NESTED, ServiceSettings
from orders.saga import DEFINITIONS


class SagaSettings(BaseModel):
    """The order saga, orders.saga (``ORDERS_SAGA_*``)."""

    # How long the saga waits for each reply before it sends its request again (orders.saga).
    credit_timeout_seconds: float = Field(default=30.0, gt=0)
    release_timeout_seconds: float = Field(default=30.0, gt=0)
    notification_timeout_seconds: float = Field(default=60.0, gt=0)
    # ReserveCredit is sent again this many times before the order is rejected (timeout);
    # releases and announcements are sent again until they are answered.
    max_resends: int = Field(default=3, ge=0, le=100)
    # Each re-send waits this much longer than the one before, up to the cap.
    resend_backoff: float = Field(default=2.0, ge=1.0)
    max_timeout_seconds: float = Field(default=600.0, gt=0)
    # How long a version 2 saga waits for the stock check's reply (StockChecked) before it
    # sends CheckStock again.
    stock_timeout_seconds: float = Field(default=30.0, gt=0)
    # The saga definition new orders start on (orders.saga.DEFINITIONS); a saga keeps the one
    # it started on until it settles. 2 adds the stock check (one more command and reply per
    # order, answered by an inventory service): switch only once every process knows it.
    definition_version: int = 1
    # How often the worker looks for sagas past their deadline.
    timer_interval_seconds: float = Field(default=0.5, gt=0)

    @field_validator("definition_version")
    @classmethod
    def _saga_definition_is_registered(cls, value: int) -> int:
        if value not in DEFINITIONS:
            raise ValueError(f"no saga definition version {value}; known: {sorted(DEFINITIONS)}")
        return value


class AdmissionSettings(BaseModel):
    """Admission of new orders, orders.admission (``ORDERS_ADMISSION_*``)."""

    # Admission (orders.admission): a new order is refused at once (503, Retry-After) while
    # this many sagas wait for credit, so accepted orders keep a bounded latency instead of
    # queueing behind the backlog (about the bound / the rate sagas pass their pivot, which
    # under overload is below the sustained rate: set it to half the sustained rate for a
    # p99 under a second). 0: no bound.
    max_pending_sagas: int = Field(default=100, ge=0)
    # The backlog is counted at most this often (and only while orders arrive).
    refresh_seconds: float = Field(default=0.1, gt=0)


class OperatorSettings(BaseModel):
    """Operators of /admin, orders.admin_auth (``ORDERS_OPERATOR_*``)."""

    # Operators of /admin (orders.admin_auth): "name:sha256hex,name:sha256hex". Only hashes are
    # configured; `make operator-token NAME=alice` prints a new token and its entry. Empty: no
    # operator can sign in.
    tokens: str = ""
    # The console's cookie is Secure (sent over HTTPS only, and http://localhost); set false only
    # to reach a console over plain HTTP on another host.
    cookie_secure: bool = True
    cookie_max_age_seconds: int = Field(default=8 * 3600, ge=60)

    @field_validator("tokens")
    @classmethod
    def _operator_tokens_are_name_hash_pairs(cls, value: str) -> str:
        operator_token_hashes(value)  # raises ValueError, naming the bad entry
        return value

    def hashes(self) -> dict[str, str]:
        return operator_token_hashes(self.tokens)


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(**NESTED, env_prefix="ORDERS_")

    service_name: str = "orders"
    port: int = 8002
    worker_port: int = 9002

    saga: SagaSettings = SagaSettings()
    admission: AdmissionSettings = AdmissionSettings()
    operator: OperatorSettings = OperatorSettings()

    def operator_hashes(self) -> dict[str, str]:
        return self.operator.hashes()


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
