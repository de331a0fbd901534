"""Alembic environment of the users schema; the mechanics live in common.migrations."""

from common.migrations import run_migrations
from users.models import Base
from users.settings import Settings

run_migrations(Base.metadata, "users", Settings().session_database_url)
