"""The per-endpoint circuit breaker, its state in Redis shared by every worker."""

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from common.testing.polling import eventually
from notifications.breaker import CircuitBreaker

pytestmark = pytest.mark.integration


def endpoint() -> str:
    return f"https://hooks.example.com/{uuid.uuid4()}"


def breaker(redis, *, cooldown_seconds: float = 0.2) -> CircuitBreaker:
    return CircuitBreaker(
        redis,
        failure_threshold=3,
        cooldown_seconds=cooldown_seconds,
        probe_lease_seconds=5.0,
        probe_wait_seconds=0.05,
    )


def transitions(from_state: str, to_state: str) -> float:
    value = REGISTRY.get_sample_value(
        "notifications_webhook_breaker_transitions_total",
        {"from_state": from_state, "to_state": to_state},
    )
    return value or 0.0


async def fail(b: CircuitBreaker, url: str, times: int) -> None:
    for _ in range(times):
        admission = await b.admit(url)
        assert admission.allowed
        await b.record(url, success=False, probe_token=admission.probe_token)


async def test_it_opens_after_n_consecutive_failures_only(redis):
    # A cool-down no stall of a loaded machine outlasts: the refusal below must still be one.
    b, url = breaker(redis, cooldown_seconds=5.0), endpoint()
    await fail(b, url, 2)
    await b.record(url, success=True, probe_token=None)  # a success resets the count
    await fail(b, url, 2)
    assert await b.state(url) == "closed"

    opened_before = transitions("closed", "open")
    await fail(b, url, 1)

    assert await b.state(url) == "open"
    assert transitions("closed", "open") == opened_before + 1
    refused = await b.admit(url)
    assert not refused.allowed
    assert 0 < refused.retry_in <= 5.0


async def test_after_the_cool_down_exactly_one_probe_goes_through(redis):
    b, url = breaker(redis), endpoint()
    await fail(b, url, 3)

    async def half_open() -> bool:
        return await b.state(url) == "half_open"

    await eventually(half_open, timeout=2)
    # Two workers' worth of callers at once: one probe, the others wait.
    admissions = await asyncio.gather(*(b.admit(url) for _ in range(20)))
    probes = [a for a in admissions if a.allowed]
    assert len(probes) == 1
    assert probes[0].probe_token is not None
    assert all(a.retry_in == 0.05 for a in admissions if not a.allowed)

    closed_before = transitions("half_open", "closed")
    await b.record(url, success=True, probe_token=probes[0].probe_token)
    assert await b.state(url) == "closed"
    assert transitions("half_open", "closed") == closed_before + 1
    assert all([(await b.admit(url)).allowed for _ in range(5)])


async def test_a_failed_probe_opens_it_again_for_a_full_cool_down(redis):
    b, url = breaker(redis, cooldown_seconds=0.2), endpoint()
    await fail(b, url, 3)

    async def probe_admitted():
        admission = await b.admit(url)
        return admission if admission.allowed else None

    probe = await eventually(probe_admitted, timeout=2)
    await b.record(url, success=False, probe_token=probe.probe_token)

    assert await b.state(url) == "open"
    waiting = await b.admit(url)
    assert not waiting.allowed
    assert waiting.retry_in > 0.1  # a new cool-down, not the probe wait


async def test_a_non_probe_success_while_open_does_not_close_it(redis):
    b, url = breaker(redis, cooldown_seconds=30), endpoint()
    await fail(b, url, 3)
    await b.record(url, success=True, probe_token=None)  # a call admitted before it opened
    assert await b.state(url) == "open"


async def test_breakers_of_different_endpoints_are_independent(redis):
    b, dead, alive = breaker(redis, cooldown_seconds=30), endpoint(), endpoint()
    await fail(b, dead, 3)
    assert await b.state(dead) == "open"
    assert (await b.admit(alive)).allowed
