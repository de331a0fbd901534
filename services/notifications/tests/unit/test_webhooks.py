"""Webhook mechanics without a network: URL rules, address rules, signature, backoff, body."""

import base64
import hashlib
import hmac
import ipaddress
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

from notifications import secretbox, webhooks
from notifications.deliveries import retry_delay
from notifications.secretbox import MissingSecretKey, SecretBox, SecretUnreadable
from notifications.settings import Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the specification's example secret


def test_secrets_are_whsec_and_32_random_bytes():
    secrets = {webhooks.new_secret() for _ in range(100)}
    assert len(secrets) == 100
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_the_signature_is_what_the_reference_library_computes():
    """v1,<base64 HMAC-SHA256 keyed by the decoded secret over "id.timestamp.body">."""
    body = b'{"type":"notification.welcome"}'
    ours = webhooks.signature(SECRET, message_id="msg_1", timestamp=1_700_000_000, body=body)
    reference = Webhook(SECRET).sign(
        "msg_1", datetime.fromtimestamp(1_700_000_000, tz=UTC), body.decode()
    )
    assert ours == reference
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert ours == "v1," + base64.b64encode(mac).decode()


def test_signed_headers_verify_with_the_reference_library():
    delivery_id = uuid.uuid4()
    body = b'{"type":"notification.welcome"}'
    headers = webhooks.signed_headers(
        delivery_id=delivery_id, attempt=3, secrets=[SECRET], body=body
    )
    assert headers["webhook-id"] == str(delivery_id)
    assert headers["webhook-attempt"] == "3"
    assert headers["content-type"] == "application/json"
    assert Webhook(SECRET).verify(body, headers) == {"type": "notification.welcome"}
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)


def test_during_a_rotation_each_secret_verifies_on_its_own():
    new, old = webhooks.new_secret(), SECRET
    body = b"{}"
    headers = webhooks.signed_headers(
        delivery_id=uuid.uuid4(), attempt=1, secrets=[new, old], body=body
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)


def test_a_delivery_without_a_secret_is_a_bug():
    with pytest.raises(ValueError, match="secret"):
        webhooks.signed_headers(delivery_id=uuid.uuid4(), attempt=1, secrets=[], body=b"{}")


def test_the_secret_box_round_trips_and_refuses_another_key():
    key = Fernet.generate_key().decode()
    box = SecretBox.from_setting(SecretStr(key), dev_key_allowed=False)
    ciphertext = box.encrypt(SECRET)
    assert SECRET not in ciphertext
    assert box.decrypt(ciphertext) == SECRET
    with pytest.raises(SecretUnreadable):
        SecretBox.from_setting(
            SecretStr(Fernet.generate_key().decode()), dev_key_allowed=False
        ).decrypt(ciphertext)
    # Rotating the at-rest key: the new key first, the old one still decrypts.
    rotated = SecretBox.from_setting(
        SecretStr(f"{Fernet.generate_key().decode()},{key}"), dev_key_allowed=False
    )
    assert rotated.decrypt(ciphertext) == SECRET


def test_without_a_key_the_secret_box_refuses_unless_the_development_flag_is_on():
    """Defect 11: no key was a silent fall-back to the key in this repository."""
    with pytest.raises(MissingSecretKey):
        SecretBox.from_setting(None, dev_key_allowed=False)
    with pytest.raises(MissingSecretKey):
        SecretBox.from_setting(SecretStr(" "), dev_key_allowed=False)
    with pytest.raises(MissingSecretKey):  # the public key, set on purpose, is no key either
        SecretBox.from_setting(SecretStr(secretbox.DEV_ONLY_KEY), dev_key_allowed=False)
    with pytest.raises(MissingSecretKey):
        Settings(webhook={"secret_key": None}).secret_box()
    development = SecretBox.from_setting(None, dev_key_allowed=True)
    assert development.decrypt(SecretBox([secretbox.DEV_ONLY_KEY]).encrypt(SECRET)) == SECRET
    with pytest.raises(ValueError, match="Fernet"):
        SecretBox.from_setting(SecretStr("not-a-key"), dev_key_allowed=False)


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
    at = "2026-01-02T03:04:05.678000+00:00"
    assert (
        body
        == (
            f'{{"type":"notification.welcome","timestamp":"{at}","data":'
            f'{{"id":"{notification_id}","kind":"welcome","order_id":null,'
            f'"user_id":"{user_id}","created_at":"{at}"}}}}'
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
        ("2001:db8::1", False),  # documentation
        ("::", False),
        # IPv4-mapped (::ffff:0:0/96): the IPv4 inside decides.
        ("::ffff:93.184.216.34", True),
        ("::ffff:169.254.169.254", False),
        ("::ffff:100.64.0.1", False),
        # NAT64 well-known prefix (64:ff9b::/96, what DNS64 answers): the IPv4 inside decides.
        ("64:ff9b::93.184.216.34", True),
        ("64:ff9b::127.0.0.1", False),
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b::169.254.169.254", False),
        ("64:ff9b::192.168.1.1", False),
        ("64:ff9b::224.0.0.1", False),
        # NAT64 local-use prefix (64:ff9b:1::/48): site-local, refused whatever it carries.
        ("64:ff9b:1::a00:1", False),
        ("64:ff9b:1:5db8:d822::", False),
        # 6to4 (2002::/16, IPv4 in bits 16-48): refused whatever it carries.
        ("2002:7f00:1::1", False),
        ("2002:a00:1::1", False),
        ("2002:a9fe:a9fe::1", False),
        ("2002:5db8:d822::1", False),
        # Teredo (2001::/32, client IPv4 obfuscated in the last 32 bits): refused.
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # client 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # client 127.0.0.1
        ("2001::1", False),
        # IPv4-compatible (::/96, deprecated): refused whatever it carries.
        ("::a00:1", False),
        ("::7f00:1", False),
        ("::5db8:d822", False),
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
    settings = Settings(webhook={"backoff_base_seconds": 1.0, "backoff_max_seconds": 60.0})
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0), (500, 60.0)]:
        delays = [retry_delay(attempt, settings) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the whole range, not a fixed delay


def test_backoff_settings_must_be_ordered():
    with pytest.raises(ValueError, match="backoff"):
        Settings(webhook={"backoff_base_seconds": 10, "backoff_max_seconds": 1})
