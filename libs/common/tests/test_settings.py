"""Grouped settings keep their flat environment variables (common.settings).

``env_nested_delimiter="_"`` with ``env_nested_max_split=1``: a group field ``bus`` reads
``<PREFIX>BUS_<FIELD>``, the rest of the name being the field's, underscores included.
"""

import ipaddress

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from common.settings import NESTED, ServiceSettings, with_changes


class Prefixed(ServiceSettings):
    model_config = SettingsConfigDict(**NESTED, env_prefix="SETTINGSTEST_")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.chdir("/")  # no stray .env
    return monkeypatch


def test_a_group_reads_its_fields_from_the_flat_variable_names(env: pytest.MonkeyPatch) -> None:
    env.setenv("SETTINGSTEST_BUS_BLOCK_MS", "5")
    env.setenv("SETTINGSTEST_BUS_STREAM_PREFIX", "mine:")
    env.setenv("SETTINGSTEST_DB_POOL_SIZE", "9")
    env.setenv("SETTINGSTEST_WORKER_DB_MAX_OVERFLOW", "7")  # a group name with an underscore
    env.setenv("SETTINGSTEST_REDIS_CLUSTER_NODES", "")
    env.setenv("SETTINGSTEST_RATE_LIMIT_AUTH", "5/second")
    env.setenv("SETTINGSTEST_RATE_LIMIT_ENABLED", "false")
    settings = Prefixed()
    assert settings.bus.block_ms == 5
    assert settings.bus.stream_prefix == "mine:"
    assert settings.bus.batch_size == 32  # the rest of the group keeps its defaults
    assert (settings.db.pool_size, settings.db.max_overflow) == (9, 2)
    assert (settings.worker_db.pool_size, settings.worker_db.max_overflow) == (4, 7)
    assert settings.rate_limit.auth == "5/second"
    assert settings.rate_limit.enabled is False


def test_fields_outside_groups_read_as_before(env: pytest.MonkeyPatch) -> None:
    env.setenv("SETTINGSTEST_DATABASE_URL", "postgresql+asyncpg://elsewhere/app")
    env.setenv("SETTINGSTEST_DATABASE_REPLICA_URL", "postgresql+asyncpg://replica/app")
    env.setenv("SETTINGSTEST_LOG_LEVEL", "DEBUG")
    env.setenv("SETTINGSTEST_WORKER_PORT", "9100")
    settings = Prefixed()
    assert settings.database_url == "postgresql+asyncpg://elsewhere/app"
    assert settings.database_replica_url == "postgresql+asyncpg://replica/app"
    assert settings.log_level == "DEBUG"
    assert settings.worker_port == 9100
    assert settings.replica.stick_seconds == 5.0


def test_dict_settings_inside_a_group_parse_json(env: pytest.MonkeyPatch) -> None:
    env.setenv("SETTINGSTEST_PARTITION_INTERVALS", '{"saga_steps": "day"}')
    env.setenv("SETTINGSTEST_PARTITION_RETENTION_DAYS", '{"saga_steps": 90}')
    settings = Prefixed()
    assert settings.partition.intervals == {"saga_steps": "day"}
    assert settings.partition.retention_days == {"saga_steps": 90}
    assert settings.partition.ahead_days == 14


def test_trusted_proxies_stay_comma_separated(env: pytest.MonkeyPatch) -> None:
    env.setenv("SETTINGSTEST_TRUSTED_PROXIES", "10.244.0.0/16, 192.0.2.7")
    assert Prefixed().trusted_proxies == (
        ipaddress.IPv4Network("10.244.0.0/16"),
        ipaddress.IPv4Network("192.0.2.7/32"),
    )


@pytest.mark.parametrize(
    ("variable", "value", "location"),
    [
        ("SETTINGSTEST_BUS_BLOCK_MS", "0", "bus.block_ms"),
        ("SETTINGSTEST_WORKER_DB_POOL_SIZE", "0", "worker_db.pool_size"),
        ("SETTINGSTEST_PARTITION_RETENTION_DAYS", '{"events": 0}', "partition.retention_days"),
        ("SETTINGSTEST_PARTITION_INTERVALS", '{"events": "week"}', "partition.intervals"),
    ],
)
def test_a_bad_value_in_a_group_names_the_group_and_field(
    env: pytest.MonkeyPatch, variable: str, value: str, location: str
) -> None:
    env.setenv(variable, value)
    with pytest.raises(ValidationError, match=location.replace(".", r"\.")):
        Prefixed()


def test_on_a_cluster_the_default_bus_prefix_gets_a_hash_tag(env: pytest.MonkeyPatch) -> None:
    env.setenv("SETTINGSTEST_REDIS_CLUSTER_NODES", "seed:7000")
    assert Prefixed().bus.stream_prefix == "{bus}:"
    env.setenv("SETTINGSTEST_BUS_STREAM_PREFIX", "mine:")
    with pytest.raises(ValidationError, match="hash tag"):
        Prefixed()


def test_with_changes_merges_into_groups() -> None:
    settings = ServiceSettings(bus={"block_ms": 50, "batch_size": 8})
    changed = with_changes(settings, bus={"block_ms": 5}, drain_file="drain")
    assert (changed.bus.block_ms, changed.bus.batch_size) == (5, 8)
    assert changed.drain_file == "drain"
    assert settings.bus.block_ms == 50  # the original is untouched
    with pytest.raises(TypeError, match="bus_block_ms"):
        with_changes(settings, bus_block_ms=5)
    with pytest.raises(TypeError, match="blocking_ms"):
        with_changes(settings, bus={"blocking_ms": 5})
