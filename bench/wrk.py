"""Closed-loop HTTP load with wrk (``wrk -t1 -cN -dS --latency``) and its output, parsed."""

import asyncio
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

AUTH_SCRIPT = Path(__file__).with_name("wrk_auth.lua")
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


@dataclass
class WrkResult:
    requests_per_second: float
    requests: int
    latency_ms: dict[str, float]  # p50, p75, p90, p99 from wrk's --latency distribution
    non_2xx: int
    socket_errors: int  # connect + read + write + timeout
    output: str


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse(output: str) -> WrkResult:
    """Read the figures out of wrk's human-readable report."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if rps is None or total is None:
        raise ValueError(f"not a wrk report:\n{output}")
    latency = {
        f"p{match.group(1)}": _ms(match.group(2), match.group(3))
        for match in re.finditer(rf"^\s+(50|75|90|99)%\s+{_DURATION}\s*$", output, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests_per_second=float(rps.group(1)),
        requests=int(total.group(1)),
        latency_ms=latency,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        output=output,
    )


def available() -> str | None:
    return shutil.which("wrk")


async def run(url: str, *, token: str, connections: int, seconds: float) -> WrkResult:
    """One wrk run, one thread (the machine has two cores: the server needs the other)."""
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(AUTH_SCRIPT),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "BENCH_TOKEN": token},
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=seconds + 30)
    output = stdout.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited {process.returncode}:\n{output}")
    return parse(output)
