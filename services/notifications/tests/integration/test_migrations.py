"""Migration 0003 on a database that has webhooks with plaintext secrets (made by 0002)."""

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from standardwebhooks import Webhook

from common.testing.plugin import alembic
from notifications.secretbox import SecretBox

from ..conftest import SERVICE_DIR

pytestmark = pytest.mark.integration


async def test_0003_encrypts_existing_secrets_keeping_the_same_signing_key(
    empty_database, monkeypatch
):
    plain_url, url = empty_database
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("NOTIFICATIONS_WEBHOOK_SECRET_KEY", key)
    await alembic(SERVICE_DIR, url, "upgrade", "0002")
    webhook_id, legacy_secret = uuid.uuid4(), "a-users-own-secret-ünïcode"
    connection = await asyncpg.connect(plain_url, timeout=10)
    try:
        await connection.execute(
            "INSERT INTO notifications.webhooks (id, user_id, url, secret) VALUES ($1, $2, $3, $4)",
            webhook_id,
            uuid.uuid4(),
            "https://example.com/hook",
            legacy_secret,
        )
        await alembic(SERVICE_DIR, url, "upgrade", "head")
        row = await connection.fetchrow(
            "SELECT * FROM notifications.webhooks WHERE id = $1", webhook_id
        )
        assert row is not None
        assert "secret" not in dict(row)  # the plaintext column is gone
        assert legacy_secret not in str(dict(row))
        whsec = SecretBox.from_setting(SecretStr(key), dev_key_allowed=False).decrypt(
            row["secret_ciphertext"]
        )
        assert whsec == "whsec_" + base64.b64encode(legacy_secret.encode()).decode()

        # A receiver still on the old scheme's key verifies the new scheme with it.
        body, message_id, now = b"{}", "msg_1", datetime.now(UTC)
        signed = Webhook(whsec).sign(message_id, now, body.decode())
        legacy_key_mac = hmac.new(
            legacy_secret.encode(),
            f"{message_id}.{int(now.timestamp())}.".encode() + body,
            hashlib.sha256,
        ).digest()
        assert signed == "v1," + base64.b64encode(legacy_key_mac).decode()

        await alembic(SERVICE_DIR, url, "downgrade", "0002")
        restored = await connection.fetchval(
            "SELECT secret FROM notifications.webhooks WHERE id = $1", webhook_id
        )
        assert restored == legacy_secret
    finally:
        await connection.close()
