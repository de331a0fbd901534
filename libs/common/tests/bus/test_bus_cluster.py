"""The whole bus suite (test_bus.py) again, on a real 3-primary Redis Cluster.

Same tests, other fixtures: the client is redis-py's ``RedisCluster`` (``common.redis``), the
stream prefix carries a hash tag, so each test's streams and dead letters share one slot
(XREADGROUP over several streams, the dead-letter MULTI and the replay MULTI need it), and
every other key spreads over the shards.
"""

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from common.redis import create_redis, is_cluster
from common.settings import ServiceSettings
from common.testing.cluster import LocalRedisCluster

from . import test_bus
from .harness import fast_bus_settings

pytestmark = pytest.mark.cluster

# Every test of test_bus.py, collected here a second time with this module's fixtures, but
# the subprocess test of ``python -m common.bus`` (the command line itself, with
# --cluster-nodes, runs here through the other dead-letter tests) and the tracing test (it
# installs the process's one tracer provider; nothing in it depends on where Redis is), and
# the four MONITOR tests (a cluster client has no MONITOR; on the cluster the other tests of
# unwanted entries and of a handler's Redis commands run the same pipelines).
_SINGLE_REDIS_ONLY = {
    "test_the_deadletters_module_runs_as_a_command",
    "test_one_trace_spans_the_publisher_and_the_consumer",
    "test_unwanted_entries_are_acknowledged_together_in_the_next_reads_round_trip",
    "test_a_handlers_redis_commands_cost_no_round_trip_of_their_own",
    "test_one_statement_handlers_of_a_batch_are_acknowledged_with_one_xack",
    "test_an_unhurried_stream_is_read_after_the_blocking_read_never_waited_on",
}
globals().update(
    {
        name: value
        for name, value in vars(test_bus).items()
        if name.startswith("test_") and callable(value) and name not in _SINGLE_REDIS_ONLY
    }
)


@pytest.fixture
def bus_settings(database_url: str, redis_cluster: LocalRedisCluster) -> ServiceSettings:
    return _cluster_settings(database_url, redis_cluster)


def _cluster_settings(database_url: str, cluster: LocalRedisCluster) -> ServiceSettings:
    return fast_bus_settings(
        database_url,
        redis={"cluster_nodes": cluster.nodes},
        stream_prefix=f"{{bustest-{uuid.uuid4().hex[:10]}}}:",
        outbox={"sweep_interval_seconds": 0.05, "batch_size": 50},
    )


@pytest.fixture(scope="module")
async def redis(redis_cluster: LocalRedisCluster) -> AsyncIterator[Redis]:
    client = create_redis(ServiceSettings(redis={"cluster_nodes": redis_cluster.nodes}))
    assert is_cluster(client)
    yield client
    await client.aclose()


def test_an_untagged_prefix_is_refused_and_the_default_gets_a_tag() -> None:
    assert ServiceSettings(redis={"cluster_nodes": "h:1"}).bus.stream_prefix == "{bus}:"
    with pytest.raises(ValueError, match="hash tag"):
        ServiceSettings(redis={"cluster_nodes": "h:1"}, bus={"stream_prefix": "mine:"})
