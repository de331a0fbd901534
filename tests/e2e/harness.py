"""Fault drills' machinery: a careful client, bursts of orders, the faults, the final checks.

Shared by ``test_drills.py`` (one fault each, in CI) and ``soak.py`` (minutes of mixed load
with a random fault every 15 s). A drill is judged as a customer would judge the system:

- the client retries a 503 or a dropped connection with the same ``Idempotency-Key`` and logs
  in again on a 401 (Redis restarted empty loses every session), as a well-behaved client does;
- any answer but 2xx/4xx/503 is a violation, and so is a dropped connection, unless the API it
  went to was down on purpose at that moment;
- afterwards (polled, with deadlines): every accepted order final and its saga settled, each
  user's orders exactly those accepted (a retry never doubles one), no ``timeout`` rejection
  of an order its user could pay for, each user's reserved credit equal to their APPROVED
  total, exactly one notification per outcome (and one welcome per user), and
  ``scripts/stack.sh check-invariants`` clean.

Faults go through ``scripts/infra.py`` (the stack's private Postgres and Redis) and
``scripts/stack.sh`` (its processes), with the ``STACK`` and ports of the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
BASE_URLS = {
    "users": os.environ.get("USERS_URL", "http://127.0.0.1:8001"),
    "orders": os.environ.get("ORDERS_URL", "http://127.0.0.1:8002"),
    "notifications": os.environ.get("NOTIFICATIONS_URL", "http://127.0.0.1:8003"),
}
# Customers' calls go through the gateway; BASE_URLS stay for each API's own /readyz.
GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000")
WORKER_URLS = {
    service: os.environ.get(f"{service.upper()}_WORKER_URL", f"http://127.0.0.1:{port}")
    for service, port in (("users", 9001), ("orders", 9002), ("notifications", 9003))
}
PROCESSES = (
    "users-api",
    "users-worker",
    "orders-api",
    "orders-worker",
    "notifications-api",
    "notifications-worker",
)
FINAL = {"APPROVED", "REJECTED", "CANCELLED"}
OUTCOME_KIND = {
    "APPROVED": "order_approved",
    "REJECTED": "order_rejected",
    "CANCELLED": "order_cancelled",
}
PASSWORD = "drill password 1"
# How long a request may stay unanswered before it counts as hung (no 503, no answer).
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
# A dropped connection this long after an API came back still counts as its downtime.
DOWNTIME_GRACE_SECONDS = 1.0
POLL_INTERVAL_SECONDS = 0.5


def infra_available() -> bool:
    """Whether this stack runs on a private Postgres and Redis (``scripts/infra.py run``)."""
    return bool(os.environ.get("E2E_INFRA_STATE"))


def stack_control_allowed() -> bool:
    return os.environ.get("STACK_CONTROL", "1") != "0"


# --- figures ------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one drill (or the soak) saw: the numbers the closing note quotes, and violations."""

    drill: str
    seed: int = 0
    users: int = 0
    orders_placed: int = 0  # accepted (202)
    cancels_requested: int = 0
    final: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0  # REJECTED with reason "timeout"
    status_503: int = 0
    connection_errors: int = 0  # all of them, expected or not
    connection_errors_while_down: int = 0  # to an API that was down on purpose
    hung_requests: int = 0  # no answer within the client's timeout
    relogins: int = 0
    responses: dict[str, int] = field(default_factory=dict)
    fault_seconds: float = 0.0
    settle_seconds: float | None = None  # from the fault's end to every saga settled
    dead_letters: int | None = None  # added to the bus's dead-letter stream meanwhile
    faults: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def violation(self, text: str) -> None:
        self.violations.append(text)

    def summary(self) -> str:
        settle = "never" if self.settle_seconds is None else f"{self.settle_seconds:.1f}s"
        return (
            f"{self.drill}: {self.orders_placed} orders from {self.users} users"
            f" ({', '.join(f'{k} {v}' for k, v in sorted(self.final.items()))}),"
            f" 503s {self.status_503}, connection errors {self.connection_errors}"
            f" ({self.connection_errors_while_down} to a process down), hung {self.hung_requests},"
            f" relogins {self.relogins}, fault {self.fault_seconds:.1f}s, settled in {settle},"
            f" timeouts {self.timeouts}, dead letters {self.dead_letters},"
            f" violations {len(self.violations)}"
        )


RESULTS: list[Figures] = []


def write_results(path: Path | None = None) -> Path:
    """Every drill's figures as JSON under ``.run/<stack>/drills.json``, for the closing note."""
    target = path or ROOT / ".run" / os.environ.get("STACK", "e2e") / "drills.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps([asdict(f) for f in RESULTS], indent=2) + "\n")
    return target


# --- the client ---------------------------------------------------------------------------


class Downtime:
    """When each API was down on purpose: the only time a dropped connection is acceptable."""

    def __init__(self) -> None:
        self._windows: dict[str, list[tuple[float, float]]] = {}
        self._open: dict[str, float] = {}

    def begin(self, service: str) -> None:
        self._open[service] = time.monotonic()

    def end(self, service: str) -> None:
        started = self._open.pop(service)
        self._windows.setdefault(service, []).append((started, time.monotonic()))

    def covers(self, service: str, moment: float) -> bool:
        if service in self._open and moment >= self._open[service]:
            return True
        return any(
            start <= moment <= end + DOWNTIME_GRACE_SECONDS
            for start, end in self._windows.get(service, [])
        )


class GaveUp(Exception):
    """The client's patience ran out: only 503s, dropped connections or timeouts."""


@dataclass
class Shopper:
    """A customer: credentials, and the token the client renews when a 401 says it is gone."""

    email: str
    password: str
    credit_limit_cents: int
    id: str = ""
    token: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Placed:
    shopper: Shopper
    id: str
    total_cents: int


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", "1"))
    except ValueError:
        return 1.0


class Client:
    """Talks to the three APIs as a careful client, counting everything it sees."""

    def __init__(self, figures: Figures, downtime: Downtime, *, patience: float = 150.0) -> None:
        self.figures = figures
        self.downtime = downtime
        self.patience = patience
        self.http = {
            service: httpx.AsyncClient(base_url=GATEWAY_URL, timeout=REQUEST_TIMEOUT)
            for service in BASE_URLS
        }

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in self.http.values():
            await client.aclose()

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        shopper: Shopper | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One logical request, retried until it gets an answer that is not a 503/401/429.

        Returns the final 2xx/4xx response; a 5xx other than 503 is recorded as a violation
        (and retried, so the load goes on). Raises ``GaveUp`` after ``patience`` seconds.
        """
        deadline = time.monotonic() + self.patience
        backoff = 0.1
        while True:
            token = shopper.token if shopper else None
            wait = backoff
            try:
                response = await self.http[service].request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers={**(shopper.auth if shopper else {}), **(headers or {})},
                )
            except httpx.TimeoutException as exc:
                self.figures.hung_requests += 1
                if not self.downtime.covers(service, time.monotonic()):
                    self.figures.violation(f"{method} {service}{path} hung: {exc!r}")
            except httpx.TransportError as exc:
                self._dropped(service, f"{method} {path}", exc)
            else:
                status = response.status_code
                self.figures.responses[str(status)] = self.figures.responses.get(str(status), 0) + 1
                if status == 504:  # the gateway's word for a request that hung behind it
                    self.figures.hung_requests += 1
                    if not self.downtime.covers(service, time.monotonic()):
                        self.figures.violation(f"{method} {service}{path} hung: 504")
                elif status == 503:
                    self.figures.status_503 += 1
                    wait = min(_retry_after(response), 1.0)
                elif status == 401 and shopper is not None:
                    await self.relogin(shopper, stale_token=token)
                    wait = 0.0
                elif status == 429:
                    wait = min(_retry_after(response), 2.0)
                elif 200 <= status < 300 or 400 <= status < 500:
                    return response
                else:
                    self.figures.violation(
                        f"{method} {service}{path} answered {status}: {response.text[:300]}"
                    )
            if time.monotonic() > deadline:
                raise GaveUp(f"{method} {service}{path}: no usable answer in {self.patience} s")
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, 1.0)

    def _dropped(self, service: str, what: str, exc: Exception) -> None:
        self.figures.connection_errors += 1
        if self.downtime.covers(service, time.monotonic()):
            self.figures.connection_errors_while_down += 1
        else:
            self.figures.violation(
                f"{what} on {service}: connection error while it was up: {exc!r}"
            )

    async def relogin(self, shopper: Shopper, stale_token: str | None) -> None:
        """A new session, once per lost token however many requests noticed it."""
        async with shopper.lock:
            if shopper.token != stale_token:
                return
            await self.login(shopper)
            self.figures.relogins += 1

    async def login(self, shopper: Shopper) -> None:
        credentials = {"email": shopper.email, "password": shopper.password}
        response = await self.call("users", "POST", "/users/sessions", json=credentials)
        if response.status_code != 201:
            raise GaveUp(f"login of {shopper.email}: {response.status_code} {response.text}")
        session = response.json()
        shopper.token, shopper.id = session["token"], session["user_id"]

    async def sign_up(self, credit_limit_cents: int) -> Shopper:
        """A new user, logged in. A 409 means an earlier attempt of this very call went through."""
        shopper = Shopper(
            f"drill-{uuid.uuid4().hex[:12]}@example.com", PASSWORD, credit_limit_cents
        )
        body = {
            "email": shopper.email,
            "password": shopper.password,
            "name": "Drill",
            "credit_limit_cents": credit_limit_cents,
        }
        created = await self.call("users", "POST", "/users", json=body)
        if created.status_code not in (201, 409):
            raise GaveUp(f"sign-up: {created.status_code} {created.text}")
        await self.login(shopper)
        return shopper

    async def place(self, shopper: Shopper, prices: Sequence[int]) -> Placed | None:
        """POST /orders with one Idempotency-Key for every retry of it."""
        body = {
            "items": [
                {"sku": f"drill-{i}", "quantity": 1, "unit_price_cents": price}
                for i, price in enumerate(prices)
            ]
        }
        key = uuid.uuid4().hex
        try:
            response = await self.call(
                "orders",
                "POST",
                "/orders",
                shopper=shopper,
                json=body,
                headers={"Idempotency-Key": key},
            )
        except GaveUp as exc:
            self.figures.violation(f"order not accepted: {exc}")
            return None
        if response.status_code != 202:
            self.figures.violation(f"POST /orders answered {response.status_code}: {response.text}")
            return None
        self.figures.orders_placed += 1
        return Placed(shopper, response.json()["id"], sum(prices))

    async def cancel(self, placed: Placed) -> None:
        """Cancel; a 409 (already final, or an earlier attempt went through) is fine."""
        self.figures.cancels_requested += 1
        response = await self.call(
            "orders", "POST", f"/orders/{placed.id}/cancel", shopper=placed.shopper
        )
        if response.status_code not in (202, 409):
            self.figures.violation(f"cancel answered {response.status_code}: {response.text}")

    async def browse(self, shopper: Shopper, turn: int) -> None:
        """What a customer reads between orders, so every API carries load: one read a turn."""
        service, path = (
            ("users", "/users/me"),
            ("orders", "/orders"),
            ("notifications", "/notifications"),
        )[turn % 3]
        try:
            await self.call(service, "GET", path, shopper=shopper, params={"limit": 5})
        except GaveUp as exc:
            self.figures.violation(f"read failed: {exc}")

    async def pages(self, service: str, path: str, shopper: Shopper) -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            response = await self.call(service, "GET", path, shopper=shopper, params=params)
            if response.status_code != 200:
                raise GaveUp(f"GET {service}{path}: {response.status_code} {response.text}")
            page = response.json()
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return items


# --- load ---------------------------------------------------------------------------------


class Progress:
    """How many orders were accepted so far; a drill fires its fault part-way through."""

    def __init__(self) -> None:
        self.accepted = 0
        self._changed = asyncio.Condition()

    async def tick(self) -> None:
        async with self._changed:
            self.accepted += 1
            self._changed.notify_all()

    async def reached(self, count: int, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.accepted >= count)


@dataclass(frozen=True)
class Plan:
    """Who orders what: drawn from a seed, so a failing drill can be replayed."""

    prices: dict[int, list[list[int]]]  # shopper index -> its orders' item prices
    limits: dict[int, int]  # shopper index -> credit limit

    @classmethod
    def draw(cls, rng: random.Random, shoppers: int, orders_each: int) -> Plan:
        """Most shoppers can pay for everything; the last one for about half of it."""
        prices = {
            s: [
                [rng.randint(100, 2_000) for _ in range(rng.randint(1, 2))]
                for _ in range(orders_each)
            ]
            for s in range(shoppers)
        }
        limits = {s: sum(map(sum, orders)) + 1_000 for s, orders in prices.items()}
        limits[shoppers - 1] //= 2
        return cls(prices, limits)


async def burst(
    client: Client,
    shoppers: Sequence[Shopper],
    plan: Plan,
    progress: Progress,
    *,
    cancel_every: int = 0,
) -> list[Placed]:
    """Every shopper places its orders one after another, all shoppers at once.

    Every ``cancel_every``-th order is cancelled right after it is accepted (while PENDING,
    or APPROVED if the saga was quicker), so releases are in flight too.
    """

    async def one(index: int, shopper: Shopper) -> list[Placed]:
        placed: list[Placed] = []
        for number, prices in enumerate(plan.prices[index], start=1):
            order = await client.place(shopper, prices)
            if order is None:
                continue
            placed.append(order)
            await progress.tick()
            if cancel_every and number % cancel_every == 0:
                await client.cancel(order)
            await client.browse(shopper, number)
        return placed

    per_shopper = await asyncio.gather(*(one(i, s) for i, s in enumerate(shoppers)))
    return [order for orders in per_shopper for order in orders]


# --- faults -------------------------------------------------------------------------------


async def _run(command: list[str], timeout: float = 120.0) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)}: {result.returncode}\n{result.stdout}{result.stderr}"
        )


async def infra(verb: str, *args: str) -> None:
    """``scripts/infra.py VERB`` on this stack's private Postgres and Redis."""
    await _run([sys.executable, str(ROOT / "scripts" / "infra.py"), verb, *args])


async def stack_sh(verb: str, process: str) -> None:
    await _run([str(ROOT / "scripts" / "stack.sh"), verb, process])


async def wait_ready(process: str, timeout: float = 60.0) -> None:
    """Poll the process's probe (an API's /readyz, a worker's /healthz) until it answers 200."""
    service, kind = process.rsplit("-", 1)
    url = f"{BASE_URLS[service]}/readyz" if kind == "api" else f"{WORKER_URLS[service]}/healthz"
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process} not ready within {timeout} s after its start")
            await asyncio.sleep(0.1)


Fault = Callable[[Downtime], Awaitable[None]]


def redis_restarted_empty() -> Fault:
    async def fault(downtime: Downtime) -> None:
        await infra("redis-restart")

    return fault


def postgres_restarted() -> Fault:
    async def fault(downtime: Downtime) -> None:
        await infra("pg-restart")

    return fault


def postgres_outage(seconds: float) -> Fault:
    async def fault(downtime: Downtime) -> None:
        await infra("pg-outage", str(seconds))

    return fault


def process_killed(process: str, down_for: float = 2.0) -> Fault:
    """SIGKILL, ``down_for`` seconds with the process gone, then started and ready again."""
    service, kind = process.rsplit("-", 1)

    async def fault(downtime: Downtime) -> None:
        if kind == "api":
            downtime.begin(service)
        try:
            await stack_sh("kill", process)
            await asyncio.sleep(down_for)  # the outage itself: nothing to poll for
            await stack_sh("start", process)
            await wait_ready(process)
        finally:
            if kind == "api":
                downtime.end(service)

    return fault


# --- after the fault ----------------------------------------------------------------------


@dataclass
class Final:
    order: dict[str, Any]
    saga: dict[str, Any]


async def settle(client: Client, placed: Sequence[Placed], timeout: float) -> dict[str, Final]:
    """Poll until every accepted order is final and its saga settled; what was seen last."""
    by_shopper: dict[str, list[Placed]] = {}
    for order in placed:
        by_shopper.setdefault(order.shopper.id, []).append(order)
    finals: dict[str, Final] = {}
    deadline = time.monotonic() + timeout
    while True:
        for orders in by_shopper.values():
            shopper = orders[0].shopper
            statuses = {o["id"]: o for o in await client.pages("orders", "/orders", shopper)}
            for order in orders:
                if order.id in finals and finals[order.id].saga.get("state") == "settled":
                    continue
                current = statuses.get(order.id, {"id": order.id, "status": "MISSING"})
                saga: dict[str, Any] = {}
                if current["status"] in FINAL:
                    response = await client.call(
                        "orders", "GET", f"/orders/{order.id}/saga", shopper=shopper
                    )
                    saga = response.json()
                finals[order.id] = Final(current, saga)
        pending = [f for f in finals.values() if f.saga.get("state") != "settled"]
        if not pending or time.monotonic() > deadline:
            for stuck in pending[:10]:
                client.figures.violation(
                    f"order {stuck.order['id']} not settled within {timeout:.0f} s:"
                    f" {stuck.order['status']}, saga {stuck.saga.get('state')}"
                )
            if len(pending) > 10:
                client.figures.violation(f"... and {len(pending) - 10} more orders not settled")
            return finals
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


def _expected_notifications(finals: dict[str, Final]) -> Counter[tuple[str, str]]:
    """One notification for each outcome the order went through (its saga's notify steps)."""
    expected: Counter[tuple[str, str]] = Counter()
    for order_id, final in finals.items():
        kinds = {
            step.get("detail")
            for step in final.saga.get("steps", [])
            if step["name"] == "notify" and step["status"] == "started"
        }
        kinds.add(OUTCOME_KIND.get(final.order["status"]))
        for kind in kinds - {None}:
            expected[(order_id, str(kind))] = 1
    return expected


async def check_notifications(
    client: Client, shoppers: Sequence[Shopper], finals: dict[str, Final], timeout: float = 15.0
) -> None:
    """Exactly one notification per outcome and one welcome per user; waits for stragglers."""
    expected = _expected_notifications(finals)
    deadline = time.monotonic() + timeout
    while True:
        seen: Counter[tuple[str, str]] = Counter()
        welcomes: Counter[str] = Counter()
        for shopper in shoppers:
            for item in await client.pages("notifications", "/notifications", shopper):
                if item["kind"] == "welcome":
                    welcomes[shopper.id] += 1
                else:
                    seen[(item["order_id"], item["kind"])] += 1
        complete = seen == expected and all(welcomes[s.id] == 1 for s in shoppers)
        if complete or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_INTERVAL_SECONDS)
    missing, doubled = expected - seen, seen - expected
    if missing:
        client.figures.violation(
            f"{len(missing)} outcomes never notified, e.g. {list(missing)[:3]}"
        )
    if doubled:
        client.figures.violation(
            f"{sum(doubled.values())} extra notifications: {list(doubled)[:3]}"
        )
    for shopper in shoppers:
        if welcomes[shopper.id] != 1:
            client.figures.violation(f"user {shopper.id}: {welcomes[shopper.id]} welcomes, not 1")


async def check_credit(
    client: Client, shoppers: Sequence[Shopper], finals: dict[str, Final]
) -> None:
    """Reserved credit equals APPROVED totals; no ``timeout`` for an order the user could pay."""
    approved: Counter[str] = Counter()
    for final in finals.values():
        if final.order["status"] == "APPROVED":
            approved[final.order["user_id"]] += final.order["total_cents"]
    for shopper in shoppers:
        me = (await client.call("users", "GET", "/users/me", shopper=shopper)).json()
        reserved = me["credit_limit_cents"] - me["credit_available_cents"]
        if reserved != approved[shopper.id]:
            client.figures.violation(
                f"user {shopper.id}: credit reserved {reserved} != approved {approved[shopper.id]}"
            )
    for final in finals.values():
        order = final.order
        if order["status"] != "REJECTED" or order.get("rejection_reason") != "timeout":
            continue
        client.figures.timeouts += 1
        owner = next(s for s in shoppers if s.id == order["user_id"])
        headroom = owner.credit_limit_cents - approved[owner.id]
        if order["total_cents"] <= headroom:
            client.figures.violation(
                f"order {order['id']} REJECTED (timeout) though its user had credit for it"
                f" ({order['total_cents']} <= {headroom} available)"
            )


async def check_orders_are_those_accepted(
    client: Client, shoppers: Sequence[Shopper], placed: Sequence[Placed]
) -> None:
    """No order doubled by a retry, none lost: each user's orders are exactly those accepted."""
    for shopper in shoppers:
        listed = {o["id"] for o in await client.pages("orders", "/orders", shopper)}
        accepted = {p.id for p in placed if p.shopper is shopper}
        if listed - accepted:
            client.figures.violation(
                f"user {shopper.id}: orders never accepted {listed - accepted}"
            )
        if accepted - listed:
            client.figures.violation(
                f"user {shopper.id}: accepted orders missing {accepted - listed}"
            )


async def check_invariants(figures: Figures, ids: set[str], timeout: float = 30.0) -> None:
    """``scripts/stack.sh check-invariants``, polled until clean of every id in ``ids``.

    Only violations naming one of this drill's users or orders count: drills share a stack,
    and one drill's leak must fail that drill, not every drill after it (the final
    ``check-invariants`` of ``make test`` still judges the whole database).
    """
    command = [str(ROOT / "scripts" / "stack.sh"), "check-invariants"]
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
        )
        ours = [
            line
            for line in result.stdout.splitlines()
            if line.startswith("VIOLATION") and any(i in line for i in ids)
        ]
        ran = "invariants:" in result.stdout
        if ran and not ours:
            return
        if time.monotonic() > deadline:
            complaint = ours or (result.stdout + result.stderr).strip().splitlines()[-6:]
            figures.violation(f"check-invariants: {' | '.join(complaint[:6])}")
            return
        await asyncio.sleep(1.0)


async def count_dead_letters() -> int | None:
    """Entries on the bus's dead-letter stream, when the stack's Redis is known."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    from redis.asyncio import Redis

    redis = Redis.from_url(url, socket_timeout=5)
    try:
        return int(await redis.xlen("bus:dead-letters"))
    except OSError:
        return None
    finally:
        await redis.aclose()


async def verify(
    client: Client,
    shoppers: Sequence[Shopper],
    placed: Sequence[Placed],
    *,
    settle_timeout: float,
    settle_from: float,
) -> None:
    """Every check of a drill, in order; violations land in ``client.figures``."""
    figures = client.figures
    finals = await settle(client, placed, settle_timeout)
    if all(f.saga.get("state") == "settled" for f in finals.values()):
        figures.settle_seconds = round(time.monotonic() - settle_from, 1)
    figures.final = dict(Counter(f.order["status"] for f in finals.values()))
    await check_orders_are_those_accepted(client, shoppers, placed)
    await check_credit(client, shoppers, finals)
    await check_notifications(client, shoppers, finals)
    await check_invariants(figures, {s.id for s in shoppers} | {p.id for p in placed})
    dead_letters = await count_dead_letters()
    if dead_letters is None:
        figures.dead_letters = None
    elif figures.dead_letters is not None:
        # A Redis restart empties the stream: then everything on it now is new.
        added = dead_letters - figures.dead_letters
        figures.dead_letters = added if added >= 0 else dead_letters


# --- one drill ----------------------------------------------------------------------------


async def run_drill(
    name: str,
    fault: Fault,
    *,
    shoppers: int = 5,
    orders_each: int = 12,
    fire_at: float = 0.3,
    cancel_every: int = 6,
    settle_timeout: float = 90.0,
    seed: int | None = None,
) -> Figures:
    """Sign up ``shoppers``, start their burst, fire ``fault`` part-way, then check it all."""
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 30)
    figures = Figures(name, seed=seed, users=shoppers)
    RESULTS.append(figures)
    downtime = Downtime()
    plan = Plan.draw(random.Random(seed), shoppers, orders_each)
    figures.dead_letters = await count_dead_letters()  # the baseline; verify takes the delta
    async with Client(figures, downtime) as client:
        customers = [await client.sign_up(plan.limits[i]) for i in range(shoppers)]
        progress = Progress()
        load = asyncio.create_task(
            burst(client, customers, plan, progress, cancel_every=cancel_every)
        )
        try:
            await progress.reached(max(1, int(fire_at * shoppers * orders_each)))
            started = time.monotonic()
            await fault(downtime)
            recovered = time.monotonic()
            figures.fault_seconds = round(recovered - started, 1)
            placed = await load
        finally:
            if not load.done():
                load.cancel()
        await verify(
            client, customers, placed, settle_timeout=settle_timeout, settle_from=recovered
        )
    return figures
