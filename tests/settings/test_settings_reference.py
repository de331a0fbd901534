"""The settings reference (scripts/settings_reference.py) and the real settings classes: the
grouping of settings per concern kept every environment variable's name."""

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from common.settings import ServiceSettings
from common.testing.scripts import load_script
from gateway.settings import Settings as GatewaySettings
from notifications.settings import Settings as NotificationsSettings
from orders.settings import Settings as OrdersSettings
from users.settings import Settings as UsersSettings

REPO = Path(__file__).resolve().parents[2]

# Every variable of docs/settings.md before the settings were grouped (flat fields), as
# the reference listed them: the grouping must not rename one.
BEFORE_GROUPING = {
    "<PREFIX>BUS_BATCHES_IN_FLIGHT",
    "<PREFIX>BUS_BATCH_SIZE",
    "<PREFIX>BUS_BLOCK_MS",
    "<PREFIX>BUS_CONCURRENCY",
    "<PREFIX>BUS_CONSUMER_DELETE_IDLE_MS",
    "<PREFIX>BUS_MAX_ATTEMPTS",
    "<PREFIX>BUS_PAUSE_MAX_SECONDS",
    "<PREFIX>BUS_RECLAIM_IDLE_MS",
    "<PREFIX>BUS_RECLAIM_INTERVAL_SECONDS",
    "<PREFIX>BUS_RETRY_BASE_SECONDS",
    "<PREFIX>BUS_RETRY_MAX_SECONDS",
    "<PREFIX>BUS_SHUTDOWN_TIMEOUT_SECONDS",
    "<PREFIX>BUS_STREAM_PREFIX",
    "<PREFIX>CONSUMER_NAME",
    "<PREFIX>DATABASE_REPLICA_URL",
    "<PREFIX>DATABASE_URL",
    "<PREFIX>DB_MAX_OVERFLOW",
    "<PREFIX>DB_POOL_SIZE",
    "<PREFIX>DB_POOL_TIMEOUT_SECONDS",
    "<PREFIX>DB_STATEMENT_TIMEOUT_MS",
    "<PREFIX>DRAIN_FILE",
    "<PREFIX>HOST",
    "<PREFIX>HTTP_BODY_TIMEOUT_SECONDS",
    "<PREFIX>HTTP_HEADER_TIMEOUT_SECONDS",
    "<PREFIX>HTTP_MAX_BODY_BYTES",
    "<PREFIX>HTTP_MAX_IN_FLIGHT",
    "<PREFIX>HTTP_MAX_STREAMS",
    "<PREFIX>INBOX_PRUNE_INTERVAL_SECONDS",
    "<PREFIX>INBOX_RETENTION_HOURS",
    "<PREFIX>LOG_LEVEL",
    "<PREFIX>OUTBOX_BATCH_SIZE",
    "<PREFIX>OUTBOX_DELETE_DELAY_SECONDS",
    "<PREFIX>OUTBOX_SWEEP_GRACE_SECONDS",
    "<PREFIX>OUTBOX_SWEEP_INTERVAL_SECONDS",
    "<PREFIX>PARTITION_AHEAD_DAYS",
    "<PREFIX>PARTITION_INTERVALS",
    "<PREFIX>PARTITION_MAINTENANCE_INTERVAL_SECONDS",
    "<PREFIX>PARTITION_RETENTION_DAYS",
    "<PREFIX>PORT",
    "<PREFIX>RATE_LIMIT_AUTH",
    "<PREFIX>RATE_LIMIT_ENABLED",
    "<PREFIX>RATE_LIMIT_READ",
    "<PREFIX>RATE_LIMIT_WRITE",
    "<PREFIX>REDIS_CLUSTER_NODES",
    "<PREFIX>REDIS_CLUSTER_PASSWORD",
    "<PREFIX>REDIS_MAX_CONNECTIONS",
    "<PREFIX>REDIS_TIMEOUT_SECONDS",
    "<PREFIX>REDIS_URL",
    "<PREFIX>REPLICA_RETRY_SECONDS",
    "<PREFIX>REPLICA_STICK_SECONDS",
    "<PREFIX>REUSE_PORT",
    "<PREFIX>SERVICE_NAME",
    "<PREFIX>SESSION_TTL_SECONDS",
    "<PREFIX>STREAM_MIN_RETENTION",
    "<PREFIX>STREAM_MIN_RETENTION_SECONDS",
    "<PREFIX>STREAM_TRIM_INTERVAL_SECONDS",
    "<PREFIX>TRUSTED_PROXIES",
    "<PREFIX>WORKER_DB_MAX_OVERFLOW",
    "<PREFIX>WORKER_DB_POOL_SIZE",
    "<PREFIX>WORKER_PORT",
    "GATEWAY_BREAKER_FAILURES",
    "GATEWAY_BREAKER_OPEN_SECONDS",
    "GATEWAY_NOTIFICATIONS_URL",
    "GATEWAY_OPENAPI_CACHE_SECONDS",
    "GATEWAY_ORDERS_URL",
    "GATEWAY_OVERVIEW_ORDERS",
    "GATEWAY_OVERVIEW_PART_DEADLINE_SECONDS",
    "GATEWAY_ROUTE_DEADLINES",
    "GATEWAY_ROUTE_DEADLINE_SECONDS",
    "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECONDS",
    "GATEWAY_UPSTREAM_KEEPALIVE_SECONDS",
    "GATEWAY_UPSTREAM_POOL_SIZE",
    "GATEWAY_USERS_URL",
    "NOTIFICATIONS_STREAM_HEARTBEAT_SECONDS",
    "NOTIFICATIONS_STREAM_MAX_PER_USER",
    "NOTIFICATIONS_STREAM_QUEUE_SIZE",
    "NOTIFICATIONS_STREAM_RESYNC_SECONDS",
    "NOTIFICATIONS_STREAM_RETRY_MS",
    "NOTIFICATIONS_STREAM_SLOT_LEASE_SECONDS",
    "NOTIFICATIONS_WEBHOOK_ALLOW_PRIVATE_TARGETS",
    "NOTIFICATIONS_WEBHOOK_BACKOFF_BASE_SECONDS",
    "NOTIFICATIONS_WEBHOOK_BACKOFF_MAX_SECONDS",
    "NOTIFICATIONS_WEBHOOK_BREAKER_COOLDOWN_SECONDS",
    "NOTIFICATIONS_WEBHOOK_BREAKER_FAILURE_THRESHOLD",
    "NOTIFICATIONS_WEBHOOK_CONCURRENCY",
    "NOTIFICATIONS_WEBHOOK_DEV_KEY_ALLOWED",
    "NOTIFICATIONS_WEBHOOK_DNS_TIMEOUT_SECONDS",
    "NOTIFICATIONS_WEBHOOK_IDLE_POLL_SECONDS",
    "NOTIFICATIONS_WEBHOOK_MAX_ATTEMPTS",
    "NOTIFICATIONS_WEBHOOK_MAX_PER_USER",
    "NOTIFICATIONS_WEBHOOK_POLL_INTERVAL_SECONDS",
    "NOTIFICATIONS_WEBHOOK_SECRET_KEY",
    "NOTIFICATIONS_WEBHOOK_SECRET_ROTATION_GRACE_SECONDS",
    "NOTIFICATIONS_WEBHOOK_TIMEOUT_SECONDS",
    "ORDERS_ADMISSION_MAX_PENDING_SAGAS",
    "ORDERS_ADMISSION_REFRESH_SECONDS",
    "ORDERS_OPERATOR_COOKIE_MAX_AGE_SECONDS",
    "ORDERS_OPERATOR_COOKIE_SECURE",
    "ORDERS_OPERATOR_TOKENS",
    "ORDERS_SAGA_CREDIT_TIMEOUT_SECONDS",
    "ORDERS_SAGA_DEFINITION_VERSION",
    "ORDERS_SAGA_MAX_RESENDS",
    "ORDERS_SAGA_MAX_TIMEOUT_SECONDS",
    "ORDERS_SAGA_NOTIFICATION_TIMEOUT_SECONDS",
    "ORDERS_SAGA_RELEASE_TIMEOUT_SECONDS",
    "ORDERS_SAGA_RESEND_BACKOFF",
    "ORDERS_SAGA_STOCK_TIMEOUT_SECONDS",
    "ORDERS_SAGA_TIMER_INTERVAL_SECONDS",
    "USERS_LOGIN_FAILURES_PER_EMAIL",
    "USERS_LOGIN_FAILURE_WINDOW_SECONDS",
    "USERS_PASSWORD_HASHES_IN_FLIGHT",
    "USERS_PASSWORD_HASHES_QUEUED",
    "USERS_PASSWORD_HASH_WAIT_SECONDS",
    "USERS_USER_CACHE_TTL_SECONDS",
    "USERS_WELCOME_TIMEOUT_SECONDS",
    "USERS_WELCOME_TIMER_INTERVAL_SECONDS",
}


def reference() -> ModuleType:
    return load_script(REPO / "scripts" / "settings_reference.py", "shop_settings_reference")


# Added since: each a new name, none a renamed one.
ADDED_SINCE = {"<PREFIX>DATABASE_DIRECT_URL"}


def test_the_reference_lists_the_same_variables_as_before_the_grouping() -> None:
    text = reference().render()
    variables = set(re.findall(r"^\| `([A-Z_<>]+)`", text, flags=re.MULTILINE))
    assert variables == BEFORE_GROUPING | ADDED_SINCE


def test_the_reference_is_current() -> None:
    assert (REPO / "docs" / "settings.md").read_text() == reference().render()


# Per group, a variable set in the environment and where the service's settings show it.
READ_THROUGH: list[tuple[type[ServiceSettings], str, str, str, Any]] = [
    (OrdersSettings, "ORDERS_DATABASE_URL", "postgresql+asyncpg://x/y", "database_url", None),
    (OrdersSettings, "ORDERS_LOG_LEVEL", "DEBUG", "log_level", None),
    (OrdersSettings, "ORDERS_DB_POOL_SIZE", "9", "db.pool_size", 9),
    (OrdersSettings, "ORDERS_DB_STATEMENT_TIMEOUT_MS", "7", "db.statement_timeout_ms", 7),
    (OrdersSettings, "ORDERS_WORKER_DB_POOL_SIZE", "3", "worker_db.pool_size", 3),
    (OrdersSettings, "ORDERS_REPLICA_STICK_SECONDS", "1.5", "replica.stick_seconds", 1.5),
    (OrdersSettings, "ORDERS_REDIS_URL", "redis://r:1/2", "redis.url", None),
    (OrdersSettings, "ORDERS_REDIS_TIMEOUT_SECONDS", "3", "redis.timeout_seconds", 3.0),
    (OrdersSettings, "ORDERS_HTTP_MAX_IN_FLIGHT", "12", "http.max_in_flight", 12),
    (OrdersSettings, "ORDERS_BUS_BLOCK_MS", "5", "bus.block_ms", 5),
    (OrdersSettings, "ORDERS_BUS_STREAM_PREFIX", "b2:", "bus.stream_prefix", None),
    (OrdersSettings, "ORDERS_INBOX_RETENTION_HOURS", "2", "inbox.retention_hours", 2.0),
    (OrdersSettings, "ORDERS_PARTITION_AHEAD_DAYS", "20", "partition.ahead_days", 20),
    (
        OrdersSettings,
        "ORDERS_PARTITION_INTERVALS",
        '{"saga_steps": "day"}',
        "partition.intervals",
        {"saga_steps": "day"},
    ),
    (OrdersSettings, "ORDERS_OUTBOX_BATCH_SIZE", "10", "outbox.batch_size", 10),
    (OrdersSettings, "ORDERS_STREAM_MIN_RETENTION", "11", "stream.min_retention", 11),
    (OrdersSettings, "ORDERS_RATE_LIMIT_AUTH", "1/second", "rate_limit.auth", None),
    (OrdersSettings, "ORDERS_SAGA_MAX_RESENDS", "4", "saga.max_resends", 4),
    (OrdersSettings, "ORDERS_SAGA_DEFINITION_VERSION", "2", "saga.definition_version", 2),
    (OrdersSettings, "ORDERS_ADMISSION_MAX_PENDING_SAGAS", "0", "admission.max_pending_sagas", 0),
    (OrdersSettings, "ORDERS_OPERATOR_COOKIE_SECURE", "false", "operator.cookie_secure", False),
    (UsersSettings, "USERS_ARGON2_TIME_COST", "3", "argon2.time_cost", 3),
    (UsersSettings, "USERS_PASSWORD_HASHES_IN_FLIGHT", "5", "password.hashes_in_flight", 5),
    (UsersSettings, "USERS_LOGIN_FAILURES_PER_EMAIL", "6", "login.failures_per_email", 6),
    (UsersSettings, "USERS_USER_CACHE_TTL_SECONDS", "30", "user_cache_ttl_seconds", 30),
    (UsersSettings, "USERS_WELCOME_TIMEOUT_SECONDS", "9", "welcome.timeout_seconds", 9.0),
    (UsersSettings, "USERS_SESSION_TTL_SECONDS", "600", "session_ttl_seconds", 600),
    (
        NotificationsSettings,
        "NOTIFICATIONS_STREAM_HEARTBEAT_SECONDS",
        "2",
        "stream.heartbeat_seconds",
        2.0,
    ),
    (
        NotificationsSettings,
        "NOTIFICATIONS_STREAM_TRIM_INTERVAL_SECONDS",
        "8",
        "stream.trim_interval_seconds",
        8.0,
    ),
    (NotificationsSettings, "NOTIFICATIONS_WEBHOOK_MAX_ATTEMPTS", "2", "webhook.max_attempts", 2),
    (
        NotificationsSettings,
        "NOTIFICATIONS_WEBHOOK_DEV_KEY_ALLOWED",
        "true",
        "webhook.dev_key_allowed",
        True,
    ),
    (GatewaySettings, "GATEWAY_USERS_URL", "http://u:1", "users_url", None),
    (GatewaySettings, "GATEWAY_HTTP_MAX_IN_FLIGHT", "99", "http.max_in_flight", 99),
    (GatewaySettings, "GATEWAY_UPSTREAM_POOL_SIZE", "7", "upstream.pool_size", 7),
    (GatewaySettings, "GATEWAY_ROUTE_DEADLINES", '{"/orders": 10}', "route.deadlines", None),
    (GatewaySettings, "GATEWAY_BREAKER_FAILURES", "2", "breaker.failures", 2),
    (GatewaySettings, "GATEWAY_OVERVIEW_ORDERS", "3", "overview.orders", 3),
    (GatewaySettings, "GATEWAY_OPENAPI_CACHE_SECONDS", "1", "openapi_cache_seconds", 1.0),
]


@pytest.mark.parametrize(
    ("cls", "variable", "value", "path", "expected"),
    READ_THROUGH,
    ids=[case[1] for case in READ_THROUGH],
)
def test_each_group_reads_its_flat_variable(
    monkeypatch: pytest.MonkeyPatch,
    cls: type[ServiceSettings],
    variable: str,
    value: str,
    path: str,
    expected: Any,
) -> None:
    monkeypatch.chdir("/")  # no stray .env
    monkeypatch.setenv(variable, value)
    found: Any = cls()
    for part in path.split("."):
        found = getattr(found, part)
    if expected is None:
        expected = {"/orders": 10.0} if path == "route.deadlines" else value
    assert found == expected
    prefix = str(cls.model_config.get("env_prefix", ""))
    assert variable == prefix + path.replace(".", "_").upper()  # the reference's rule


def test_every_documented_number_and_flag_is_read_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each int, float and bool setting the reference lists, set alone in the environment
    under the reference's variable name, reaches the setting (a name the settings classes
    did not read would be ignored silently)."""
    module = reference()
    monkeypatch.chdir("/")  # no stray .env
    checked = 0
    for _, cls in module.service_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        defaults = cls()
        for path, setting in module.settings_of(cls).items():
            default = defaults
            for part in path.split("."):
                default = getattr(default, part)
            if setting.field.annotation is bool:
                value: Any = not default
            elif setting.field.annotation in (int, float):
                value = default + 1
            else:
                continue
            with monkeypatch.context() as env:
                env.setenv(prefix + setting.variable, str(value))
                found: Any = cls()
            for part in path.split("."):
                found = getattr(found, part)
            assert found == value, prefix + setting.variable
            checked += 1
    assert checked > 200, checked  # four services, most of their settings
