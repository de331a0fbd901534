"""webhook secrets: Standard Webhooks ``whsec_`` secrets, encrypted at rest, with rotation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 23:30:00

Existing secrets (chosen by users, stored in plaintext) are kept and encrypted, not dropped:
each becomes ``whsec_`` + base64 of its own bytes, which is the very same HMAC key, so a
receiver that knows its old secret keeps verifying (with the new scheme's headers) by giving
a Standard Webhooks library ``whsec_<base64 of the old secret>``. The key is the service's
``NOTIFICATIONS_WEBHOOK_SECRET_KEY`` (the migration Job has it, like the API and the worker).
The plaintext column is then dropped. Downgrade decrypts them back.
"""

import base64
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from notifications.secretbox import SecretBox
from notifications.settings import Settings

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifications"


def _box() -> SecretBox:
    return Settings().secret_box()


def upgrade() -> None:
    op.add_column(
        "webhooks",
        sa.Column("secret_ciphertext", sa.String(length=1024), nullable=True),
        schema=SCHEMA,
    )
    op.add_column(
        "webhooks",
        sa.Column("previous_secret_ciphertext", sa.String(length=1024), nullable=True),
        schema=SCHEMA,
    )
    op.add_column(
        "webhooks",
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, secret FROM notifications.webhooks")).all()
    if rows:
        box = _box()
        for row in rows:
            whsec = "whsec_" + base64.b64encode(row.secret.encode()).decode("ascii")
            connection.execute(
                sa.text("UPDATE notifications.webhooks SET secret_ciphertext = :c WHERE id = :id"),
                {"c": box.encrypt(whsec), "id": row.id},
            )
    op.alter_column("webhooks", "secret_ciphertext", nullable=False, schema=SCHEMA)
    op.drop_column("webhooks", "secret", schema=SCHEMA)


def downgrade() -> None:
    op.add_column(
        "webhooks",
        sa.Column("secret", sa.String(length=256), nullable=True),
        schema=SCHEMA,
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, secret_ciphertext FROM notifications.webhooks")
    ).all()
    if rows:
        box = _box()
        for row in rows:
            whsec = box.decrypt(row.secret_ciphertext)
            raw = base64.b64decode(whsec.removeprefix("whsec_"))
            # A server-generated secret is random bytes, not text: keep its whsec_ form.
            try:
                secret = raw.decode()
            except UnicodeDecodeError:
                secret = whsec
            connection.execute(
                sa.text("UPDATE notifications.webhooks SET secret = :s WHERE id = :id"),
                {"s": secret, "id": row.id},
            )
    op.alter_column("webhooks", "secret", nullable=False, schema=SCHEMA)
    op.drop_column("webhooks", "previous_secret_expires_at", schema=SCHEMA)
    op.drop_column("webhooks", "previous_secret_ciphertext", schema=SCHEMA)
    op.drop_column("webhooks", "secret_ciphertext", schema=SCHEMA)
