"""Alembic environment of the orders schema; the mechanics live in common.migrations."""

from common.migrations import run_migrations
from orders.models import Base
from orders.settings import Settings

run_migrations(Base.metadata, "orders", Settings().session_database_url)
