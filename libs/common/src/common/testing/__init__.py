"""Test support shared by every service: a pytest plugin with real Postgres and Redis."""
