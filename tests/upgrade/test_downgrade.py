"""Expand, then contract: every service's migrations at today's head go down to the previous
release's head (the one CHANGELOG.md names, read from its commit) and back up again.

Whatever migrations this round added are at head; the test reads them from the tree, so a
new migration without a working downgrade fails here. Real Postgres, a database per service.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from common.testing.plugin import throwaway_database
from common.testing.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("users", "orders", "notifications")

pytestmark = pytest.mark.integration


def load_previous_release() -> ModuleType:
    return load_script(REPO / "scripts" / "previous_release.py", "shop_previous_release")


previous_release = load_previous_release()


def alembic_config(service: str, url: str) -> Config:
    folder = REPO / "services" / service
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    return config


async def version_of(url: str, schema: str) -> set[str]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        query = f'SELECT version_num FROM "{schema}".alembic_version'  # noqa: S608 - ours
        rows = await connection.fetch(query)
    finally:
        await connection.close()
    return {row["version_num"] for row in rows}


def test_the_previous_release_heads_come_from_its_commit():
    heads = {
        service: previous_release.migration_heads(previous_release.last_release().commit, service)
        for service in SERVICES
    }
    assert all(len(found) == 1 for found in heads.values()), heads


@pytest.mark.parametrize("service", SERVICES)
async def test_head_downgrades_to_the_previous_release_and_upgrades_again(service: str):
    released = previous_release.last_release()
    if not previous_release.commit_present(released.commit):
        pytest.skip(f"release {released.version}'s commit is not in this clone (shallow?)")
    [target] = previous_release.migration_heads(released.commit, service)
    async with throwaway_database() as url:
        config = alembic_config(service, url)
        heads = set(ScriptDirectory.from_config(config).get_heads())
        await asyncio.to_thread(command.upgrade, config, "heads")
        assert await version_of(url, service) == heads

        await asyncio.to_thread(command.downgrade, config, target)
        assert await version_of(url, service) == {target}

        await asyncio.to_thread(command.upgrade, config, "heads")
        assert await version_of(url, service) == heads
