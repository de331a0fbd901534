"""Migration 0003 on a database that has webhooks with plaintext secrets (made by 0002)."""

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from pydantic import SecretStr
from standardwebhooks import Webhook

from common.testing.plugin import throwaway_database
from notifications.secretbox import SecretBox

from ..conftest import SERVICE_DIR

pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_database() -> AsyncIterator[tuple[str, str]]:
    """A database of its own (asyncpg URL, SQLAlchemy URL): this test migrates up and down."""
    async with throwaway_database() as url:
        yield url.replace("postgresql+asyncpg://", "postgresql://", 1), url


async def alembic(sqlalchemy_url: str, verb: str, revision: str) -> None:
    config = Config(str(SERVICE_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(SERVICE_DIR / "migrations"))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url)
    await asyncio.to_thread(getattr(command, verb), config, revision)


async def test_0003_encrypts_existing_secrets_keeping_the_same_signing_key(
    empty_database, monkeypatch
):
    plain_url, url = empty_database
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("NOTIFICATIONS_WEBHOOK_SECRET_KEY", key)
    await alembic(url, "upgrade", "0002")
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
        await alembic(url, "upgrade", "head")
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

        await alembic(url, "downgrade", "0002")
        restored = await connection.fetchval(
            "SELECT secret FROM notifications.webhooks WHERE id = $1", webhook_id
        )
        assert restored == legacy_secret
    finally:
        await connection.close()
