"""Webhook signing secrets at rest: encrypted with a key from the environment, never stored plain.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``): authenticated, versioned tokens,
and ``MultiFernet`` lets the at-rest key itself be rotated (new key first, old ones after it,
``rotate`` re-encrypts). The key comes from ``NOTIFICATIONS_WEBHOOK_SECRET_KEY``; without it
the services refuse to start (a key everyone can read would make "encrypted at rest" a
formality). ``make up`` generates one per checkout into ``.run/<stack>/webhook-secret-key``
(scripts/stack.sh), the Kubernetes overlays take it from a Secret. Only with the development
flag ``NOTIFICATIONS_WEBHOOK_DEV_KEY_ALLOWED=true`` is the fixed, public development key used
(with a warning), and that key is refused anywhere else.
"""

import logging

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

logger = logging.getLogger(__name__)

# DEVELOPMENT ONLY, public in this repository: base64url of b"DEV-ONLY:not-a-secret:webhooks:1".
DEV_ONLY_KEY = "REVWLU9OTFk6bm90LWEtc2VjcmV0OndlYmhvb2tzOjE="


class MissingSecretKey(ValueError):
    """No usable key: the process must not start (it would write secrets anyone can read)."""


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
    def from_setting(cls, setting: SecretStr | None, *, dev_key_allowed: bool) -> "SecretBox":
        """The box of the configured keys. No key (or the public development key) is a
        :class:`MissingSecretKey` unless ``dev_key_allowed`` (a developer's machine)."""
        text = setting.get_secret_value() if setting is not None else ""
        keys = [key.strip() for key in text.split(",") if key.strip()]
        if dev_key_allowed and not keys:
            logger.warning(
                "NOTIFICATIONS_WEBHOOK_SECRET_KEY is not set: webhook secrets are encrypted with"
                " the public development key (NOTIFICATIONS_WEBHOOK_DEV_KEY_ALLOWED is on)"
            )
            return cls([DEV_ONLY_KEY])
        if not dev_key_allowed and (not keys or DEV_ONLY_KEY in keys):
            raise MissingSecretKey(
                "NOTIFICATIONS_WEBHOOK_SECRET_KEY is not set (or is the public development key):"
                " set a Fernet key (`make up` makes one in .run/<stack>/webhook-secret-key), or"
                " NOTIFICATIONS_WEBHOOK_DEV_KEY_ALLOWED=true on a developer's machine"
            )
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
