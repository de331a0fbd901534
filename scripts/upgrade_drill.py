"""``make upgrade-drill``: a rolling upgrade from the previous release to this tree, under load.

Runs inside ``scripts/infra.py run`` (a private Postgres and Redis; DATABASE_URL, REDIS_URL,
PG_PORT, REDIS_PORT in the environment) on its own ports (PORT_BASE, WORKER_PORT_BASE):

1. the previous release (the commit CHANGELOG.md names; a ``git worktree`` of it with its own
   .venv, scripts/previous_release.py) up with REPLICAS=2, by its own scripts/stack.sh;
2. steady load: customers sign up and place orders, all the time, every response counted;
3. this tree's migrations applied while the old processes serve (expand), then the previous
   release's own e2e contract suites run against its processes on the new schema;
4. every process replaced, one at a time, by this tree's: an API's successor starts first on
   the shared port (SO_REUSEPORT), then the old one is stopped (SIGTERM: it stops accepting
   and finishes what is in flight); a worker is stopped first (it stops reading and finishes
   its in-flight messages; its pending entries stay its consumer name's), then its successor
   starts under the same consumer name and re-reads them;
5. the old release's supervisor gone; load for a while more on the new release alone; then
   the load stops and every saga must settle, the invariants (scripts/check_invariants.py)
   hold, and the dead-letter stream is empty.

It fails on any response other than 2xx, 4xx or 503, on any connection error, on a saga left
unsettled, an invariant broken or a dead letter; it prints its figures either way.

Its client replays a request once, as Go's ``net/http`` does and RFC 9112 section 9.3.1 allows,
in one case only: the request is replayable (a GET, or a POST with an ``Idempotency-Key``), it
went out on a kept-alive connection, and that connection closed before any answer. A stopping
server of release 0.1.0 closes its idle kept-alive connections at once, racing a request
already on its way (this tree drains them gently: ``common.edge``); such replays are counted
and printed. Any other connection error fails the drill, as does a replay that fails again.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import previous_release
from redis.asyncio import Redis

from common.bus.deadletters import list_dead_letters
from common.version import VERSION

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("users", "orders", "notifications")
REPLICAS = 2
CUSTOMERS = 6  # concurrent load loops
REQUEST_TIMEOUT_SECONDS = 10.0
LOAD_BEFORE_SECONDS = 8.0
LOAD_AFTER_SECONDS = 8.0
SETTLE_TIMEOUT_SECONDS = 90.0
OLD_SUITES = ("tests/e2e/test_users.py", "tests/e2e/test_orders.py")
SUITE_TIMEOUT_SECONDS = 240
STEP_TIMEOUT_SECONDS = 300  # a stack.sh verb (the old `up` migrates and waits 60 s itself)
READY_TIMEOUT_SECONDS = 180  # cold starts of 12 processes on a busy 2-core machine
UNSETTLED = ("PENDING", "CANCELLING")


@dataclass
class Figures:
    """What the load saw."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    connection_errors: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)  # closed kept-alive connection, sent again
    orders: list[tuple[str, str]] = field(default_factory=list)  # (order id, customer token)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + len(self.connection_errors) + len(self.timeouts)

    def summary(self) -> str:
        return (
            f"{self.requests} requests, {dict(sorted(self.statuses.items()))}, "
            f"{len(self.connection_errors)} connection errors, {len(self.timeouts)} timeouts, "
            f"{len(self.replayed)} replayed, {len(self.orders)} orders"
        )

    @property
    def unexpected(self) -> dict[int, int]:
        return {
            status: count
            for status, count in self.statuses.items()
            if not (200 <= status < 300 or 400 <= status < 500 or status == 503)
        }


class DrillFailed(Exception):
    pass


# A request that went out and met the connection's close instead of an answer.
CLOSED_UNDER_REQUEST = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def replayable(method: str, headers: dict[str, str]) -> bool:
    """Go's rule (``Request.isReplayable``): safe to send twice, or deduplicated by a key."""
    return method == "GET" or "Idempotency-Key" in headers


class Exchange:
    """What httpcore's trace says of one request: was a connection opened for it, and did
    any of the answer arrive."""

    def __init__(self) -> None:
        self.connected = False
        self.answered = False

    async def trace(self, event: str, info: dict[str, object]) -> None:
        if event == "connection.connect_tcp.complete":
            self.connected = True
        elif event == "http11.receive_response_headers.complete":
            self.answered = True

    def met_a_closed_kept_alive_connection(self) -> bool:
        return not self.connected and not self.answered


def say(line: str) -> None:
    print(f"==> {line}", flush=True)


def stack_env(run_dir: Path) -> dict[str, str]:
    """What both releases' scripts/stack.sh read: one private stack (STACK=e2e settings)."""
    return {
        **os.environ,
        "STACK": "e2e",
        "MODE": "local",
        "REPLICAS": str(REPLICAS),
        "RUN_DIR": str(run_dir),
    }


def stack(tree: Path, env: dict[str, str], *args: str, check: bool = True) -> None:
    subprocess.run(  # noqa: S603 - our own script
        ["bash", "scripts/stack.sh", *args],  # noqa: S607
        cwd=tree,
        env=env,
        check=check,
        timeout=STEP_TIMEOUT_SECONDS,
    )


async def unsettled_orders() -> int:
    """Orders of the drill whose saga has not finished (one query, however many orders)."""
    connection = await asyncpg.connect(
        os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://"), timeout=10
    )
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM orders.orders WHERE status = ANY($1::text[])", list(UNSETTLED)
        )
    finally:
        await connection.close()
    return int(count)


async def wait_settled(within: float) -> int:
    """Poll until every saga has settled or ``within`` passed; how many are still open."""
    deadline = time.monotonic() + within
    while True:
        open_sagas = await unsettled_orders()
        if not open_sagas or time.monotonic() > deadline:
            return open_sagas
        await asyncio.sleep(1)


def probes(worker_port_base: int) -> list[str]:
    """Every API's /readyz and every worker slot's /healthz (as scripts/stack.sh waits)."""
    urls = [f"{url(service)}/readyz" for service in SERVICES]
    for index, _ in enumerate(SERVICES, start=1):
        for slot in range(REPLICAS):
            urls.append(f"http://127.0.0.1:{worker_port_base + index + 10 * slot}/healthz")
    return urls


def wait_ready(urls: list[str]) -> None:
    subprocess.run(  # noqa: S603 - our script
        [sys.executable, "scripts/wait_ready.py", "--timeout", str(READY_TIMEOUT_SECONDS), *urls],
        cwd=ROOT,
        check=True,
        timeout=READY_TIMEOUT_SECONDS + 10,
    )


def wait_for_new_api(service: str) -> None:
    """Until a fresh connection to the shared port reaches a process of this release (its
    /readyz names the version; the previous release's does not)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            with httpx.Client(timeout=2) as client:  # a new connection each time
                body = client.get(f"{url(service)}/readyz").json()
            if body.get("version") == VERSION:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise DrillFailed(f"no {service} API of release {VERSION} became ready")


def invariants_hold() -> bool:
    return (
        subprocess.run(  # noqa: S603 - our script
            [sys.executable, "scripts/check_invariants.py", os.environ["DATABASE_URL"]],
            cwd=ROOT,
            check=False,
            timeout=STEP_TIMEOUT_SECONDS,
        ).returncode
        == 0
    )


def url(service: str) -> str:
    return os.environ[f"{service.upper()}_URL"]


class Load:
    """CUSTOMERS loops of: sign up, sign in, place orders, read them."""

    def __init__(self) -> None:
        self.figures = Figures()
        self.stopping = asyncio.Event()
        self.client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS)

    async def call(
        self, method: str, target: str, headers: dict[str, str] | None = None, **kwargs: object
    ) -> httpx.Response | None:
        headers = headers or {}
        for attempt in (1, 2):
            exchange = Exchange()
            try:
                response = await self.client.request(
                    method,
                    target,
                    headers=headers,
                    extensions={"trace": exchange.trace},
                    **kwargs,  # type: ignore[arg-type]
                )
            except httpx.TimeoutException as exc:  # no answer in time: a failure, not a drop
                self.figures.timeouts.append(f"{method} {target}: {exc!r}")
                return None
            except CLOSED_UNDER_REQUEST as exc:
                if (
                    attempt == 1
                    and replayable(method, headers)
                    and exchange.met_a_closed_kept_alive_connection()
                ):
                    self.figures.replayed.append(f"{method} {target}: {exc!r}")
                    continue
                self.figures.connection_errors.append(f"{method} {target}: {exc!r}")
                return None
            except httpx.HTTPError as exc:
                self.figures.connection_errors.append(f"{method} {target}: {exc!r}")
                return None
            self.figures.statuses[response.status_code] += 1
            return response
        return None  # unreachable: the second attempt returns or records

    async def customer(self) -> None:
        while not self.stopping.is_set():
            email = f"drill-{uuid.uuid4().hex[:12]}@example.com"
            body = {"email": email, "password": "drill password 1", "name": "Drill"}
            created = await self.call(
                "POST", f"{url('users')}/users", json={**body, "credit_limit_cents": 50_000}
            )
            if created is None or created.status_code != 201:
                await asyncio.sleep(0.2)
                continue
            session = await self.call(
                "POST",
                f"{url('users')}/users/sessions",
                json={"email": email, "password": body["password"]},
            )
            if session is None or session.status_code != 201:
                continue
            token = session.json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            for cents in (1_000, 20_000, 40_000):  # the last one exceeds what is left
                item = {"sku": "drill", "quantity": 1, "unit_price_cents": cents}
                placed = await self.call(
                    "POST",
                    f"{url('orders')}/orders",
                    json={"items": [item]},
                    headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
                )
                if placed is not None and placed.status_code in (201, 202):
                    self.figures.orders.append((placed.json()["id"], token))
                await self.call("GET", f"{url('orders')}/orders", headers=auth)
                if self.stopping.is_set():
                    break

    async def run(self) -> None:
        await asyncio.gather(*(self.customer() for _ in range(CUSTOMERS)))


def replace_processes(old: Path, old_env: dict[str, str], new_env: dict[str, str]) -> list[str]:
    """Every old process replaced by the new release's, one at a time; returns the timeline."""
    timeline: list[str] = []
    started = time.monotonic()
    for service in SERVICES:
        for slot in range(1, REPLICAS + 1):
            suffix = "" if slot == 1 else f"-{slot}"
            api, worker = f"{service}-api{suffix}", f"{service}-worker{suffix}"
            stack(ROOT, new_env, "start", api)  # the successor shares the port first
            wait_for_new_api(service)
            stack(old, old_env, "stop", api)  # then the old one drains and exits
            stack(old, old_env, "stop", worker)  # stops reading, finishes in-flight work
            stack(ROOT, new_env, "start", worker)  # same consumer name: re-reads its pending
            index = SERVICES.index(service) + 1
            port = int(new_env["WORKER_PORT_BASE"]) + index + 10 * (slot - 1)
            wait_ready([f"http://127.0.0.1:{port}/healthz"])
            timeline.append(f"{time.monotonic() - started:6.1f}s  {api}, {worker} replaced")
    return timeline


def run_old_suites(old: Path) -> int:
    """The previous release's own e2e contract suites, against its processes, new schema."""
    return subprocess.run(  # noqa: S603 - the old release's pytest, its own tests
        [str(old / ".venv" / "bin" / "pytest"), "-q", "-p", "no:cacheprovider", *OLD_SUITES],
        cwd=old,
        env={**os.environ, "VIRTUAL_ENV": str(old / ".venv")},
        timeout=SUITE_TIMEOUT_SECONDS,
        check=False,
    ).returncode


async def dead_letter_count() -> int:
    redis = Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    try:
        return len(await list_dead_letters(redis, prefix="bus:"))
    finally:
        await redis.aclose()


async def drill(old: Path) -> int:
    old_env = stack_env(old / ".run" / "upgrade-drill")
    new_env = {**stack_env(ROOT / ".run" / "upgrade-drill"), "AUTOSTART": "false"}
    new_env["WORKER_PORT_BASE"] = str(int(os.environ["WORKER_PORT_BASE"]) + 100)
    load = Load()
    problems: list[str] = []
    timeline: list[str] = []
    unsettled = -1
    began = time.monotonic()
    try:
        # The old stack.sh waits 60 s for readiness; a cold start on a busy machine may not.
        await asyncio.to_thread(stack, old, old_env, "up", check=False)
        await asyncio.to_thread(wait_ready, probes(int(old_env["WORKER_PORT_BASE"])))
        running = asyncio.create_task(load.run())
        await asyncio.sleep(LOAD_BEFORE_SECONDS)  # steady load on the old release
        await asyncio.to_thread(stack, ROOT, new_env, "up")  # migrate; configure, start none
        say("the previous release's e2e suites on the new schema")
        if await asyncio.to_thread(run_old_suites, old) != 0:
            problems.append("the previous release's e2e suites failed on the new schema")
        say(f"replacing processes one by one; load so far: {load.figures.summary()}")
        timeline = await asyncio.to_thread(replace_processes, old, old_env, new_env)
        await asyncio.to_thread(stack, old, old_env, "down")  # the old ones gone
        say(f"every process replaced; load so far: {load.figures.summary()}")
        await asyncio.sleep(LOAD_AFTER_SECONDS)
        load.stopping.set()
        await running
        say("load stopped; waiting for every saga to settle")
        unsettled = await wait_settled(SETTLE_TIMEOUT_SECONDS)
        if unsettled:
            problems.append(f"{unsettled} sagas unsettled after {SETTLE_TIMEOUT_SECONDS}s")
        if not await asyncio.to_thread(invariants_hold):
            problems.append("invariants broken (scripts/check_invariants.py)")
        if dead := await dead_letter_count():
            problems.append(f"{dead} dead letters")
    finally:
        load.stopping.set()
        await load.client.aclose()
        await asyncio.to_thread(stack, old, old_env, "down", check=False)
        await asyncio.to_thread(stack, ROOT, new_env, "down", check=False)
    figures = load.figures
    if figures.unexpected:
        problems.append(f"unexpected statuses {figures.unexpected}")
    if figures.connection_errors:
        problems.append(f"{len(figures.connection_errors)} connection errors")
    if figures.timeouts:
        problems.append(
            f"{len(figures.timeouts)} requests unanswered in {REQUEST_TIMEOUT_SECONDS}s"
        )
    print("\n==> upgrade drill figures")
    print(f"  duration            {time.monotonic() - began:.1f}s")
    print(f"  requests            {figures.requests}")
    print(f"  statuses            {dict(sorted(figures.statuses.items()))}")
    print(f"  connection errors   {len(figures.connection_errors)}")
    for error in figures.connection_errors[:10]:
        print(f"    {error}")
    print(
        f"  timeouts            {len(figures.timeouts)} (no answer in {REQUEST_TIMEOUT_SECONDS}s)"
    )
    print(
        f"  replayed            {len(figures.replayed)} (a kept-alive connection closed under "
        "a replayable request, sent once more)"
    )
    for replay in figures.replayed[:10]:
        print(f"    {replay}")
    print(f"  orders placed       {len(figures.orders)} (sagas left open: {unsettled})")
    for line in timeline:
        print(f"  {line}")
    if problems:
        print("upgrade-drill: FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    print("upgrade-drill: passed")
    return 0


def main() -> int:
    previous = previous_release.last_release()
    print(f"==> previous release {previous.version} ({previous.commit[:12]}): worktree, .venv")
    old = previous_release.worktree(previous.commit, previous.version)
    return asyncio.run(drill(old))


if __name__ == "__main__":
    sys.exit(main())
