"""The read-path baseline: the plainest FastAPI + asyncpg app reading the same rows."""
