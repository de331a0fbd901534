"""`make soak`: minutes of mixed load with a random fault every 15 s, then the drills' checks.

Not in CI (it takes minutes by design). Customers sign up, log in, place and cancel orders,
read their orders, credit and notifications, and follow their notification stream (SSE),
while every ``--fault-every`` seconds one fault from the drill list strikes: Redis restarted
empty, Postgres restarted, Postgres unreachable (``--outage`` seconds), or kill -9 of one of
the six processes (started again after two seconds). When the time is up the load stops and
``harness.verify`` checks everything the drills check. Figures go to stdout and to
``.run/<stack>/soak.json``; the exit status is 1 when anything was violated.

Run it through ``make soak`` (its own stack on its own Postgres and Redis, see the Makefile);
by hand: ``python -m tests.e2e.soak --seconds 180`` with the stack's environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import httpx

from . import harness
from .harness import Client, Downtime, Figures, GaveUp, Placed, Shopper

FAULT_NAMES = (
    "redis-restart",
    "pg-restart",
    "pg-outage",
    *(f"kill {p}" for p in harness.PROCESSES),
)


@dataclass
class Crowd:
    """Everyone who signed up, and every order accepted, as the load goes on."""

    shoppers: list[Shopper] = field(default_factory=list)
    placed: list[Placed] = field(default_factory=list)
    stream_events: int = 0
    streams_opened: int = 0
    streams_cut: int = 0


def fault_named(name: str, outage_seconds: float) -> harness.Fault:
    if name == "redis-restart":
        return harness.redis_restarted_empty()
    if name == "pg-restart":
        return harness.postgres_restarted()
    if name == "pg-outage":
        return harness.postgres_outage(outage_seconds)
    return harness.process_killed(name.removeprefix("kill "))


async def customer(client: Client, crowd: Crowd, rng: random.Random, until: float) -> None:
    """One customer's session: mostly orders and reads, now and then a cancel or a new login."""
    limit = rng.choice((5_000, 50_000, 50_000, 200_000))
    shopper = await client.sign_up(limit)
    crowd.shoppers.append(shopper)
    mine: list[Placed] = []
    turn = 0
    while time.monotonic() < until:
        turn += 1
        roll = rng.random()
        try:
            if roll < 0.5:
                prices = [rng.randint(100, 3_000) for _ in range(rng.randint(1, 3))]
                if (order := await client.place(shopper, prices)) is not None:
                    mine.append(order)
                    crowd.placed.append(order)
            elif roll < 0.6 and mine:
                await client.cancel(rng.choice(mine))
            elif roll < 0.65:
                await client.login(shopper)
            else:
                await client.browse(shopper, turn)
        except GaveUp as exc:
            client.figures.violation(f"a customer gave up: {exc}")
        await asyncio.sleep(rng.uniform(0.05, 0.3))


async def follower(client: Client, crowd: Crowd, rng: random.Random, until: float) -> None:
    """Opens a customer's notification stream for a few seconds at a time and reads it."""
    while time.monotonic() < until:
        if not crowd.shoppers:
            await asyncio.sleep(0.5)
            continue
        shopper = rng.choice(crowd.shoppers)
        await watch(client, crowd, shopper, seconds=rng.uniform(2, 6))


async def watch(client: Client, crowd: Crowd, shopper: Shopper, seconds: float) -> None:
    """One stream: its opening answer is judged like any other; a cut stream is only counted."""
    http = client.http["notifications"]
    timeout = httpx.Timeout(10.0, read=None)
    try:
        async with (
            asyncio.timeout(seconds),
            http.stream("GET", "/notifications/stream", headers=shopper.auth, timeout=timeout) as r,
        ):
            status = r.status_code
            client.figures.responses[str(status)] = client.figures.responses.get(str(status), 0) + 1
            if status == 401:
                await client.relogin(shopper, stale_token=shopper.token)
                return
            if status == 503:
                client.figures.status_503 += 1
                return
            if status not in (200, 429):
                client.figures.violation(f"GET /notifications/stream answered {status}")
                return
            crowd.streams_opened += 1
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    crowd.stream_events += 1
    except TimeoutError:
        return  # the few seconds are over
    except httpx.TransportError:
        crowd.streams_cut += 1
        await asyncio.sleep(0.5)


async def saboteur(
    downtime: Downtime,
    figures: Figures,
    rng: random.Random,
    until: float,
    every: float,
    outage_seconds: float,
) -> None:
    """A random fault every ``every`` seconds (the next waits for the last to end)."""
    next_at = time.monotonic() + every
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        name = rng.choice(FAULT_NAMES)
        started = time.monotonic()
        await fault_named(name, outage_seconds)(downtime)
        figures.faults.append(f"{name} ({time.monotonic() - started:.1f}s)")
        print(f"soak: {name} done after {time.monotonic() - started:.1f}s", flush=True)
        figures.fault_seconds = round(figures.fault_seconds + time.monotonic() - started, 1)
        next_at = max(next_at + every, time.monotonic() + 1.0)


async def soak(seconds: float, every: float, outage_seconds: float, seed: int) -> Figures:
    rng = random.Random(seed)
    figures = Figures("soak", seed=seed)
    harness.RESULTS.append(figures)
    crowd = Crowd()
    downtime = Downtime()
    until = time.monotonic() + seconds
    figures.dead_letters = await harness.count_dead_letters()
    async with Client(figures, downtime) as client:

        async def newcomers() -> None:
            """Sign-ups go on all along (some land in the middle of a fault)."""
            tasks: list[asyncio.Task[None]] = []
            while time.monotonic() < until and len(tasks) < 12:
                tasks.append(
                    asyncio.create_task(customer(client, crowd, random.Random(rng.random()), until))
                )
                await asyncio.sleep(seconds / 12)
            await asyncio.gather(*tasks)

        load = [
            asyncio.create_task(newcomers()),
            *(
                asyncio.create_task(follower(client, crowd, random.Random(rng.random()), until))
                for _ in range(3)
            ),
        ]
        await saboteur(downtime, figures, rng, until, every, outage_seconds)
        try:
            await asyncio.gather(*load)
        except GaveUp as exc:
            figures.violation(f"the load gave up: {exc}")
        finally:
            for task in load:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, GaveUp):
                    await task
        recovered = time.monotonic()
        figures.users = len(crowd.shoppers)
        await harness.verify(
            client, crowd.shoppers, crowd.placed, settle_timeout=120.0, settle_from=recovered
        )
    print(
        f"soak: SSE streams opened {crowd.streams_opened}, events {crowd.stream_events},"
        f" ended by a dropped connection {crowd.streams_cut}"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--fault-every", type=float, default=15.0)
    parser.add_argument("--outage", type=float, default=20.0, help="Postgres outage, seconds")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 30))
    args = parser.parse_args(argv)
    print(f"soak: {args.seconds:.0f} s, a fault every {args.fault_every:.0f} s, seed {args.seed}")
    figures = asyncio.run(soak(args.seconds, args.fault_every, args.outage, args.seed))
    path = harness.write_results(harness.ROOT / ".run" / "soak" / "soak.json")
    print(figures.summary())
    print("faults: " + ", ".join(figures.faults))
    print(json.dumps({k: v for k, v in asdict(figures).items() if k != "violations"}))
    for violation in figures.violations[:40]:
        print(f"VIOLATION {violation}")
    print(f"figures: {path}")
    return 1 if figures.violations else 0


if __name__ == "__main__":
    sys.exit(main())
