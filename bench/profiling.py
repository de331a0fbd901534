"""py-spy profiles of one process (``BENCH_PROFILE``): record, then summarise where its
CPU went."""

import asyncio
import math
import shutil
from pathlib import Path
from typing import Any

from bench.config import Config


def profile_path(config: Config) -> Path:
    return config.run_dir / f"profile-{config.profile}.txt"


async def profile_start(config: Config, pid: int, seconds: float) -> asyncio.subprocess.Process:
    output = profile_path(config)
    command = ["py-spy"] if shutil.which("py-spy") else ["uv", "tool", "run", "py-spy"]
    return await asyncio.create_subprocess_exec(
        *command,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(math.ceil(seconds)),
        "--rate",
        "100",
        "--gil",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


IDLE_LEAVES = ("Condition.wait", "EpollSelector.select", "select (selectors")


def _module(frame: str) -> str:
    """``func (sqlalchemy/orm/session.py:12)`` -> ``sqlalchemy``; stdlib files keep their name."""
    location = frame.rpartition("(")[2].rstrip(")")
    return location.split(":")[0].split("/")[0] or "?"


def profile_report(config: Config, during: str) -> dict[str, Any]:
    path = profile_path(config)
    if not path.exists():
        return {"process": config.profile, "during": during, "error": "py-spy wrote nothing"}
    return {"process": config.profile, "during": during, "file": str(path), **profile_top(path)}


PROJECT_MODULES = frozenset({"common", "users", "orders", "notifications"})


def profile_top(path: Path, limit: int = 12) -> dict[str, Any]:
    """Where a process spent its CPU, from py-spy's collapsed stacks (``--gil --format raw``).

    Only the thread holding the GIL is sampled, so the shares are of the time the process
    ran Python (or C holding the GIL: uvloop's socket I/O, asyncpg's protocol), not of time
    spent waiting. Reported: the running frame's top-level package (``by_module``), the
    functions with the most own time (``self``) and the project's own functions with the
    most inclusive time (``project``: which handler or query path costs most).
    """
    own: dict[str, int] = {}
    modules: dict[str, int] = {}
    project: dict[str, int] = {}
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        if leaf.startswith(IDLE_LEAVES):
            idle += count
            continue
        total += count
        own[leaf] = own.get(leaf, 0) + count
        modules[_module(leaf)] = modules.get(_module(leaf), 0) + count
        for frame in set(frames):
            if _module(frame) in PROJECT_MODULES:
                project[frame] = project.get(frame, 0) + count

    def top(table: dict[str, int], n: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: item[1], reverse=True)[:n]
        return [(frame, round(100 * count / max(total, 1), 1)) for frame, count in ranked]

    return {
        "busy_samples": total,
        "idle_samples": idle,
        "by_module": top(modules, 10),
        "self": top(own, limit),
        "project": top(project, limit),
    }
