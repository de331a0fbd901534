"""Open-loop load generator for ``POST /orders``: requests leave on a fixed schedule.

Request ``i`` is due at ``start + i / rate`` whatever happened to the earlier ones (no
coordinated omission: a slow server does not slow the offered load down). Each request runs
in its own task on uvloop over a pool of keep-alive HTTP/1.1 connections.

The HTTP client is a minimal one on asyncio streams (:class:`ConnectionPool`), not httpx:
measured here, httpx spends about 1.3 ms of CPU a request (half a core at 400 requests/s,
a quarter of this 2-core machine taken from the stack under test); this one several times
less. It speaks just what the benchmark needs: a fixed request, a response with
``Content-Length`` (what uvicorn sends for JSON), keep-alive.

Because this is Python, it also measures itself, so the benchmark can show it is not the
bottleneck:

* ``lag``: how late each request actually started against its schedule (event-loop delay;
  if the generator could not keep up, this grows first),
* ``cpu``: the generator's own CPU time over the step (user + system, of one core),
* the achieved send rate.

Input: JSON on stdin ``{"url", "rate", "duration", "tokens": [...], "max_inflight"}``.
Output: JSON on stdout (see :class:`StepResult`); progress and errors go to stderr.
"""

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvloop

ORDER_BODY = json.dumps(
    {"items": [{"sku": "bench-sku", "quantity": 1, "unit_price_cents": 100}]}
).encode()
START_DELAY_SECONDS = 0.2  # lets the first tasks be scheduled before the clock starts
REQUEST_TIMEOUT_SECONDS = 10.0


class HttpError(Exception):
    """The connection failed or answered something this client does not speak."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request; ``(status, body, keep_alive)``."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, keep_alive = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise HttpError(f"unexpected Transfer-Encoding: {value.strip()!r}")
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
        body = await self.reader.readexactly(length) if length else b""
        return status, body, keep_alive

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    """Keep-alive connections to one host: reuse an idle one, else open another."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.opened = 0

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.idle:
            connection = self.idle.pop()
        else:
            connection = Connection(*await asyncio.open_connection(self.host, self.port))
            self.opened += 1
        try:
            status, body, keep_alive = await connection.exchange(request)
        except BaseException:
            connection.close()
            raise
        if keep_alive:
            self.idle.append(connection)
        else:
            connection.close()
        return status, body

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def order_request(host: str, token: str) -> bytes:
    head = (
        f"POST /orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(ORDER_BODY)}\r\n\r\n"
    )
    return head.encode() + ORDER_BODY


@dataclass
class StepResult:
    rate: float
    duration: float
    planned: int
    sent: int = 0
    skipped_inflight_cap: int = 0  # never sent: too many requests already in flight
    statuses: dict[str, int] = field(default_factory=dict)  # "202" or an exception name
    # One row per accepted order: [order id, scheduled send (unix s), response latency (s)].
    orders: list[tuple[str, float, float]] = field(default_factory=list)
    lag_ms: dict[str, float] = field(default_factory=dict)  # p50, p99, max
    response_ms: dict[str, float] = field(default_factory=dict)  # p50, p99, max
    send_window_seconds: float = 0.0  # first to last actual send
    connections_opened: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


def quantiles_ms(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of durations in seconds, in milliseconds (nearest rank)."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000

    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1] * 1000}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_step(
    url: str, rate: float, duration: float, tokens: list[str], max_inflight: int
) -> StepResult:
    planned = round(rate * duration)
    result = StepResult(rate=rate, duration=duration, planned=planned)
    statuses: Counter[str] = Counter()
    lags: list[float] = []
    latencies: list[float] = []
    sends: list[float] = []
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    requests = [order_request(target.netloc, token) for token in tokens]
    # perf_counter, not loop.time(): uvloop's clock only has millisecond resolution.
    clock = time.perf_counter
    pool = ConnectionPool(host, port)
    try:
        inflight: set[asyncio.Task[None]] = set()

        async def one(index: int, due: float, due_wall: float) -> None:
            started = clock()
            lags.append(started - due)
            sends.append(started)
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    status, body = await pool.exchange(requests[index % len(requests)])
            except (OSError, asyncio.IncompleteReadError, HttpError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
                return
            elapsed = clock() - started
            statuses[str(status)] += 1
            if status == 202:
                latencies.append(elapsed)
                result.orders.append((str(json.loads(body)["id"]), due_wall, elapsed))

        cpu_start, wall_start = _cpu_seconds(), clock()
        start = wall_start + START_DELAY_SECONDS
        start_wall = time.time() + START_DELAY_SECONDS
        for index in range(planned):
            offset = index / rate
            delay = start + offset - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(inflight) >= max_inflight:
                result.skipped_inflight_cap += 1
                continue
            task = asyncio.create_task(one(index, start + offset, start_wall + offset))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=15.0)
        for task in list(inflight):  # bounded: whatever is still out after 15 s is given up
            task.cancel()
            statuses["unfinished"] += 1
        result.cpu_seconds = _cpu_seconds() - cpu_start
        result.wall_seconds = clock() - wall_start
        result.connections_opened = pool.opened
    finally:
        pool.close()
    result.sent = len(sends)
    result.statuses = dict(statuses)
    result.lag_ms = quantiles_ms(lags)
    result.response_ms = quantiles_ms(latencies)
    result.send_window_seconds = max(sends) - min(sends) if sends else 0.0
    return result


def main() -> None:
    spec: dict[str, Any] = json.load(sys.stdin)
    result = uvloop.run(
        run_step(
            spec["url"],
            float(spec["rate"]),
            float(spec["duration"]),
            list(spec["tokens"]),
            int(spec.get("max_inflight", 512)),
        )
    )
    json.dump(asdict(result), sys.stdout)


if __name__ == "__main__":
    main()
