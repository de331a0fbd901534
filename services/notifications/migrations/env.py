"""Alembic environment of the notifications schema; the mechanics live in common.migrations."""

from common.migrations import run_migrations
from notifications.models import Base
from notifications.settings import Settings

run_migrations(Base.metadata, "notifications", Settings().session_database_url)
