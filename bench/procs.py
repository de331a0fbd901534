"""What the benchmark reads from /proc: memory (VmRSS, VmHWM) and CPU time of processes."""

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def memory_kib(pid: int) -> tuple[int, int] | None:
    """``(VmRSS, VmHWM)`` in KiB, or None when the process is gone."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    if "VmRSS" not in values or "VmHWM" not in values:
        return None
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process, in seconds."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after "pid (comm)": state is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    try:
        text = (PROC / str(pid) / "task" / str(pid) / "children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def pids_named(*names: str) -> list[int]:
    """Every process whose command name is one of ``names`` (e.g. postgres, redis-server)."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
    return found


def machine_cpu() -> tuple[float, float, float]:
    """``(busy, total, irq)`` CPU seconds of the whole machine since boot (all cores).

    ``irq`` (hard and soft interrupts) is busy time no process is charged with: on this
    machine mostly the kernel's loopback TCP processing between the services, Postgres
    and Redis.
    """
    first = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in first[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    total = sum(ticks)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS, (ticks[5] + ticks[6]) / CLOCK_TICKS


# A named group of processes, resolved at each snapshot (Postgres backends come and go).
PidGroups = dict[str, Callable[[], list[int]]]


def fixed(*pids: int) -> Callable[[], list[int]]:
    return lambda: list(pids)


def named(*names: str) -> Callable[[], list[int]]:
    return lambda: pids_named(*names)


@dataclass
class CpuSnapshot:
    """CPU seconds of every process of each group, and of the machine, at one instant."""

    groups: dict[str, dict[int, float]]
    machine_busy: float
    machine_total: float
    machine_irq: float

    @classmethod
    def take(cls, groups: PidGroups) -> "CpuSnapshot":
        busy, total, irq = machine_cpu()
        seconds: dict[str, dict[int, float]] = {}
        for name, resolve in groups.items():
            seconds[name] = {}
            for pid in resolve():
                used = cpu_seconds(pid)
                if used is not None:
                    seconds[name][pid] = used
        return cls(groups=seconds, machine_busy=busy, machine_total=total, machine_irq=irq)

    def percent_since(self, earlier: "CpuSnapshot", wall_seconds: float) -> dict[str, float]:
        """Percent of one core per group over the interval, plus ``irq`` (interrupts), ``other``
        (the rest of the machine's busy time), both also of one core, and ``machine``
        (percent of all cores).

        A process that started in between counts whole. One that ended in between counts
        up to its last sighting, when the snapshot comes from a :class:`CpuTracker`.
        """
        usage = {}
        for name, pids in self.groups.items():
            before = earlier.groups.get(name, {})
            used = sum(seconds - before.get(pid, 0.0) for pid, seconds in pids.items())
            usage[name] = 100 * used / wall_seconds
        busy = self.machine_busy - earlier.machine_busy
        usage["irq"] = 100 * (self.machine_irq - earlier.machine_irq) / wall_seconds
        # Everything else that ran: load generators, other people's work, the kernel.
        usage["other"] = max(0.0, 100 * busy / wall_seconds - sum(usage.values()))
        total = self.machine_total - earlier.machine_total
        usage["machine"] = 100 * busy / total if total else 0.0
        return usage


class Periodic:
    """Calls :meth:`sample` every ``interval`` seconds in a background task, from
    :meth:`start` until :meth:`stop` (which samples once more: the last word)."""

    interval: float
    _task: "asyncio.Task[None] | None" = None

    def sample(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()


class CpuTracker(Periodic):
    """Polls the groups' CPU time in the background, remembering processes that exit.

    Postgres forks a backend per new connection; under overload a pool's overflow
    connections come and go within seconds, and their CPU would otherwise be lost to
    ``other``. Polled every ``interval`` seconds, a backend is missed only if it lives
    shorter than that.
    """

    def __init__(self, groups: PidGroups, interval: float = 0.25) -> None:
        self.groups = groups
        self.interval = interval
        self.seen: dict[str, dict[int, float]] = {name: {} for name in groups}

    def add(self, name: str, resolve: Callable[[], list[int]]) -> None:
        self.groups[name] = resolve
        self.seen.setdefault(name, {})

    def remove(self, name: str) -> None:
        self.groups.pop(name, None)
        self.seen.pop(name, None)

    def sample(self) -> None:
        for name, resolve in self.groups.items():
            seen = self.seen.setdefault(name, {})
            for pid in resolve():
                used = cpu_seconds(pid)
                if used is not None:
                    seen[pid] = used

    def take(self) -> CpuSnapshot:
        self.sample()
        busy, total, irq = machine_cpu()
        groups = {name: dict(seen) for name, seen in self.seen.items()}
        return CpuSnapshot(groups=groups, machine_busy=busy, machine_total=total, machine_irq=irq)


@dataclass
class MemorySampler(Periodic):
    """Samples VmRSS/VmHWM of named processes every ``interval`` seconds in the background.

    ``phase`` names what the benchmark is doing, so the highest VmRSS is kept per phase.
    """

    pids: dict[str, int]
    interval: float = 0.5
    phase: str = "start"
    max_rss_kib: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> name -> KiB
    hwm_kib: dict[str, int] = field(default_factory=dict)
    samples: int = 0

    def sample(self) -> None:
        peaks = self.max_rss_kib.setdefault(self.phase, {})
        for name, pid in self.pids.items():
            memory = memory_kib(pid)
            if memory is None:
                continue
            rss, hwm = memory
            peaks[name] = max(rss, peaks.get(name, 0))
            self.hwm_kib[name] = max(hwm, self.hwm_kib.get(name, 0))
        self.samples += 1

    def enter(self, phase: str) -> None:
        self.sample()
        self.phase = phase


def postgres_backends_of(database: str) -> Callable[[], list[int]]:
    """The Postgres backends connected to one database, by their process title
    (``postgres: <user> <database> <client> <state>``): the stack's own share of Postgres
    on a server other work shares."""

    def resolve() -> list[int]:
        found = []
        for pid in pids_named("postgres"):
            with contextlib.suppress(OSError):
                title = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode()
                words = title.split()
                if len(words) > 2 and words[0] == "postgres:" and words[2] == database:
                    found.append(pid)
        return found

    return resolve
