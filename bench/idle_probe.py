"""The idle cost of any running local stack: CPU per process, with no load, over a window.

(``make bench`` reports the bench stack's own idle cost: bench/idle.py.)

docs/design.md section 8 promises an idle stack under 3% of one core. Idle cost is what the
periodic loops (reclaim, sweepers, timers, partition maintenance, gauges, blocking reads)
burn while nothing happens, so it is measured on a stack that nobody talks to: each
supervised process's CPU time (``/proc/<pid>/stat``, children included) at the start and
the end of the window, and, when the stack runs on a private pair (``scripts/infra.py``),
the Postgres and Redis serving it.

Usage, against a stack ``scripts/stack.sh up`` started (``STACK`` names it)::

    STACK=e2e python -m bench.idle_probe --settle 30 --window 20
"""

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from bench.procs import PidGroups, children, cpu_seconds

ROOT = Path(__file__).resolve().parents[1]


def supervised(run_dir: Path) -> dict[str, int]:
    """Program name -> pid of every program supervisord runs for the stack in ``run_dir``."""
    pid = int((run_dir / "supervisord.pid").read_text().strip())
    return {_program_name(child): child for child in children(pid)}


def _program_name(pid: int) -> str:
    """The name supervisord gives the program (``orders-worker-2``), from its environment."""
    environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    for entry in environ:
        name, _, value = entry.decode(errors="replace").partition("=")
        if name == "SUPERVISOR_PROCESS_NAME":
            return value
    return f"pid {pid}"


def _tree(pid: int) -> Callable[[], list[int]]:
    """A process and its children (uvicorn's workers, if any), resolved at each reading."""
    return lambda: [pid, *children(pid)]


def _infra_groups(stack: str) -> PidGroups:
    """The private Postgres (postmaster and every backend) and Redis of ``stack``, if any."""
    state = ROOT / ".run" / stack / "infra.json"
    if not state.exists():
        return {}
    home = Path(json.loads(state.read_text())["home"])
    groups: PidGroups = {}
    postmaster_file = home / "pg" / "postmaster.pid"
    if postmaster_file.exists():
        postmaster = int(postmaster_file.read_text().split()[0])
        groups["postgres"] = _tree(postmaster)
    redis_file = home / "redis" / "redis.pid"
    if redis_file.exists():
        groups["redis"] = _tree(int(redis_file.read_text().strip()))
    return groups


def measure(groups: PidGroups, window: float) -> dict[str, float]:
    """Percent of one core used by each group over ``window`` seconds."""

    def reading() -> dict[str, float]:
        totals = {}
        for name, resolve in groups.items():
            totals[name] = sum(cpu_seconds(pid) or 0.0 for pid in resolve())
        return totals

    before, started = reading(), time.monotonic()
    time.sleep(window)  # the measurement window itself: nothing to poll for
    after, elapsed = reading(), time.monotonic() - started
    return {name: 100 * (after[name] - before.get(name, 0.0)) / elapsed for name in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stack", default=os.environ.get("STACK", "dev"))
    parser.add_argument("--settle", type=float, default=30.0, help="seconds idle before measuring")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    args = parser.parse_args()
    run_dir = ROOT / ".run" / args.stack
    groups: PidGroups = {name: _tree(pid) for name, pid in supervised(run_dir).items()}
    groups.update(_infra_groups(args.stack))
    time.sleep(args.settle)  # let start-up work (migrations, first runs of timers) pass
    usage = measure(groups, args.window)
    services = sum(value for name, value in usage.items() if name not in ("postgres", "redis"))
    for name, value in sorted(usage.items()):
        print(f"  {name:26} {value:6.2f} % of a core")
    print(f"  {'services (sum)':26} {services:6.2f} %")
    print(f"  {'stack (sum)':26} {sum(usage.values()):6.2f} %")


if __name__ == "__main__":
    main()
