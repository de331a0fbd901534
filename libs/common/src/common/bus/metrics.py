"""Prometheus metrics of the bus, defined once per process at import time.

Both the API (outbox relay) and the worker (consumers) export them on their ``/metrics``.
Labels are bounded: streams, groups and message types come from the contract catalogue.
"""

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter(
    "bus_messages_published_total",
    "Messages moved from an outbox to their stream",
    ["stream", "type"],
)
HANDLED = Counter(
    "bus_messages_handled_total",
    "Messages handled and acknowledged (duplicates the inbox skipped included)",
    ["group", "type"],
)
FAILED = Counter(
    "bus_messages_failed_total",
    "Handler attempts that raised (the message stays pending and is retried)",
    ["group", "type"],
)
CONFLICTS = Counter(
    "bus_transaction_conflicts_total",
    "Handler transactions Postgres rolled back to settle a race (deadlock, serialization"
    " failure); tried again without counting toward the dead-letter limit",
    ["group", "type"],
)
HELD = Counter(
    "bus_messages_held_total",
    "Deliveries held, not handled: a schema version newer than the consumer knows (retried)",
    ["group", "type"],
)
DEAD_LETTERED = Counter(
    "bus_messages_dead_lettered_total",
    "Messages moved to the dead-letter stream",
    ["group", "type"],
)
HANDLE_LATENCY = Histogram(
    "bus_handle_latency_seconds",
    "Time from publish (envelope occurred_at) to handled and committed",
    ["group", "type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CONSUMER_LAG = Gauge(
    "bus_consumer_lag",
    "Entries in the stream not yet delivered to the group (XINFO GROUPS lag)",
    ["stream", "group"],
)
CONSUMER_PENDING = Gauge(
    "bus_consumer_pending",
    "Entries delivered to the group but not yet acknowledged",
    ["stream", "group"],
)
CONSUMER_PAUSED = Gauge(
    "bus_consumer_paused",
    "1 while the group's consumer waits for Postgres or Redis to answer again",
    ["group"],
)
