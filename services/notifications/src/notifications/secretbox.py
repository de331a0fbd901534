"""Webhook signing secrets at rest: encrypted with a key from the environment, never stored plain.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``): authenticated, versioned tokens,
and ``MultiFernet`` lets the at-rest key itself be rotated (new key first, old ones after it,
``rotate`` re-encrypts). The key comes from ``NOTIFICATIONS_WEBHOOK_SECRET_KEY``; unset, a
fixed and public development key is used and a warning is logged, so ``make up`` works out of
the box while every deployment manifest takes the key from a Secret.
"""

import logging

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

logger = logging.getLogger(__name__)

# DEVELOPMENT ONLY, public in this repository: base64url of b"DEV-ONLY:not-a-secret:webhooks:1".
DEV_ONLY_KEY = "REVWLU9OTFk6bm90LWEtc2VjcmV0OndlYmhvb2tzOjE="


class SecretUnreadable(Exception):
    """A stored secret does not decrypt with any configured key (wrong or missing key)."""


class SecretBox:
    """Encrypts and decrypts webhook secrets with the configured key(s)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as exc:
            raise ValueError(
                "NOTIFICATIONS_WEBHOOK_SECRET_KEY must be Fernet keys (urlsafe base64 of 32"
                " bytes), comma-separated"
            ) from exc

    @classmethod
    def from_setting(cls, setting: SecretStr | None) -> "SecretBox":
        if setting is None or not setting.get_secret_value().strip():
            logger.warning(
                "NOTIFICATIONS_WEBHOOK_SECRET_KEY is not set: webhook secrets are encrypted with"
                " the public development key; set it everywhere but on a developer's machine"
            )
            return cls([DEV_ONLY_KEY])
        keys = [key.strip() for key in setting.get_secret_value().split(",") if key.strip()]
        return cls(keys)

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except InvalidToken as exc:
            raise SecretUnreadable(
                "a webhook secret does not decrypt with NOTIFICATIONS_WEBHOOK_SECRET_KEY"
            ) from exc
