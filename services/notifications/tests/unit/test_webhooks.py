"""Webhook mechanics without a network: URL rules, address rules, signature, backoff, body."""

import hashlib
import hmac
import ipaddress
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from notifications import webhooks
from notifications.deliveries import backoff_seconds
from notifications.settings import Settings


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"id":"1"}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.signature("k" * 16, 1_700_000_000, body) == f"v1={expected}"


def test_signed_headers_name_the_delivery_and_the_attempt():
    delivery_id = uuid.uuid4()
    headers = webhooks.signed_headers(
        delivery_id=delivery_id, attempt=3, secret="k" * 16, body=b"{}", timestamp=42
    )
    assert headers["Webhook-Id"] == str(delivery_id)
    assert headers["Webhook-Timestamp"] == "42"
    assert headers["Webhook-Attempt"] == "3"
    assert headers["Webhook-Signature"] == webhooks.signature("k" * 16, 42, b"{}")
    assert headers["Content-Type"] == "application/json"


def test_the_body_has_exactly_the_documented_fields():
    notification_id, user_id = uuid.uuid4(), uuid.uuid4()
    created_at = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    body = webhooks.body_of(
        notification_id=notification_id,
        kind="welcome",
        order_id=None,
        user_id=user_id,
        created_at=created_at,
    )
    assert (
        body
        == (
            f'{{"id":"{notification_id}","kind":"welcome","order_id":null,'
            f'"user_id":"{user_id}","created_at":"2026-01-02T03:04:05.678000+00:00"}}'
        ).encode()
    )


@pytest.mark.parametrize(
    "url",
    ["http://example.com/hook", "https://example.com:8443/a?b=c", "HTTPS://Example.com"],
)
def test_http_and_https_urls_are_accepted(url):
    assert webhooks.check_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("example.com/hook", "scheme"),
        ("https:///path", "no host"),
        ("https://user:pass@example.com/", "credentials"),
        ("https://example.com:99999/", "valid URL"),
        ("https://example.com:0/", "port 0"),
    ],
)
def test_other_urls_are_refused_with_a_reason(url, reason):
    with pytest.raises(webhooks.TargetRefused, match=reason):
        webhooks.check_url(url)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.31.255.255", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("ff02::1", False),
    ],
)
def test_only_globally_routable_unicast_addresses_are_public(address, public):
    assert webhooks.is_public(ipaddress.ip_address(address)) is public


async def test_literal_private_addresses_are_refused_without_dns():
    with pytest.raises(webhooks.TargetRefused, match="private, loopback or link-local"):
        await webhooks.resolve("http://127.0.0.1:8080/x", dns_timeout=1, allow_private=False)
    target = await webhooks.resolve("http://127.0.0.1:8080/x", dns_timeout=1, allow_private=True)
    assert str(target.pinned_url) == "http://127.0.0.1:8080/x"


async def test_the_request_goes_to_the_checked_address_with_the_original_host():
    target = webhooks.Target(
        httpx.URL("https://hooks.example.com:8443/p?q=1"),
        ipaddress.ip_address("2001:db8::1"),
    )
    assert str(target.pinned_url) == "https://[2001:db8::1]:8443/p?q=1"


def test_backoff_is_full_jitter_doubling_up_to_the_cap():
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0), (500, 60.0)]:
        delays = [backoff_seconds(attempt, base=1.0, cap=60.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the whole range, not a fixed delay


def test_backoff_settings_must_be_ordered():
    with pytest.raises(ValueError, match="backoff"):
        Settings(webhook_backoff_base_seconds=10, webhook_backoff_max_seconds=1)
