"""The webhook delivery worker: claims due deliveries from Postgres and POSTs them.

Queue: the ``webhook_deliveries`` table. Rows are inserted in the transaction that records
the notification, so a crash never loses one, and leased by any worker with ``FOR UPDATE
SKIP LOCKED`` in ``next_attempt_at`` order (see ``repository.claim_due_deliveries``), so a
restart loses nothing: a lease of a dead worker simply runs out.

Wake-up: notifications are recorded by this same worker process (its bus consumers), so a
commit listener wakes the dispatcher in-process the moment a unit of work that enqueued
deliveries commits; no Redis round trip is needed for that. Otherwise the dispatcher sleeps
until the earliest ``next_attempt_at`` (retries, deferrals, other workers' leftovers), at most
``webhook.poll_interval_seconds``; with none pending at all, ``webhook.idle_poll_seconds``
(the idle cost: only a replica that queued deliveries and died before claiming them leaves
work no wake-up announces).

Each attempt: circuit breaker (open: the delivery waits, no attempt is counted), DNS check of
the target (private addresses refused unless allowed), the secrets decrypted (the current
one, and the previous one during a rotation's grace period: two signatures), the signed POST
(Standard Webhooks) with a timeout, then
the breaker and the delivery's row are updated. Failures are retried with exponential
backoff and full jitter up to ``webhook.max_attempts``; a success is final, so a receiver
gets each delivery successfully once (``Webhook-Id`` lets it drop the rare duplicate after a
crash between its 2xx and our commit).
"""

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

import httpx
from prometheus_client import Counter, Histogram
from redis.asyncio import Redis

from common.backoff import exponential, full_jitter
from common.db import Database
from notifications import repository, webhooks
from notifications.breaker import CircuitBreaker
from notifications.repository import ClaimedDelivery
from notifications.secretbox import SecretBox, SecretUnreadable
from notifications.settings import Settings

logger = logging.getLogger(__name__)

DELIVERIES = Counter(
    "notifications_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (deferred: breaker open, no attempt made)",
    ["outcome"],
)
DELIVERY_DURATION = Histogram(
    "notifications_webhook_delivery_duration_seconds",
    "Time of one webhook attempt (DNS check and POST)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

MIN_SLEEP_SECONDS = 0.005
LEASE_MARGIN_SECONDS = 10.0


def retry_delay(attempt: int, settings: Settings) -> float:
    """After failed attempt ``attempt`` (1-based): full jitter over a doubling backoff from
    ``webhook.backoff_base_seconds`` up to ``webhook.backoff_max_seconds``. Full jitter, as
    a receiver that was down gets every webhook's retries at once otherwise."""
    return full_jitter(
        exponential(
            attempt - 1,
            base=settings.webhook.backoff_base_seconds,
            cap=settings.webhook.backoff_max_seconds,
        )
    )


class Dispatcher:
    """Runs in the notifications worker until ``stop`` is set; then finishes in-flight work."""

    def __init__(
        self,
        database: Database,
        redis: Redis,
        settings: Settings,
        *,
        wake: asyncio.Event | None = None,
        box: SecretBox | None = None,
    ) -> None:
        """``wake``: set it to have queued deliveries claimed now (after a commit queued some)."""
        self.database = database
        self.settings = settings
        self.box = box or settings.secret_box()
        attempt_seconds = settings.webhook.dns_timeout_seconds + settings.webhook.timeout_seconds
        self.lease_seconds = attempt_seconds + LEASE_MARGIN_SECONDS
        self.breaker = CircuitBreaker(
            redis,
            failure_threshold=settings.webhook.breaker_failure_threshold,
            cooldown_seconds=settings.webhook.breaker_cooldown_seconds,
            probe_lease_seconds=self.lease_seconds,
            probe_wait_seconds=min(1.0, settings.webhook.breaker_cooldown_seconds),
        )
        self._wake = wake or asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=self.settings.webhook.concurrency)
        async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
            while not stop.is_set():
                try:
                    claimed = await self._claim()
                    for delivery in claimed:
                        self._start(client, delivery)
                    if not claimed or self._full():
                        await self._sleep(stop)
                except Exception:
                    logger.exception("webhook dispatcher pass failed; retrying")
                    await self._pause(stop, self.settings.webhook.poll_interval_seconds)
            await self._finish_in_flight()

    def _full(self) -> bool:
        return len(self._in_flight) >= self.settings.webhook.concurrency

    async def _claim(self) -> list[ClaimedDelivery]:
        room = self.settings.webhook.concurrency - len(self._in_flight)
        if room <= 0:
            return []
        self._wake.clear()
        async with self.database.transaction() as uow:
            return await repository.claim_due_deliveries(
                uow.session, limit=room, lease_seconds=self.lease_seconds
            )

    def _start(self, client: httpx.AsyncClient, delivery: ClaimedDelivery) -> None:
        task = asyncio.create_task(self._deliver_logged(client, delivery))
        self._in_flight.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._in_flight.discard(done)
            self._wake.set()  # room for more

        task.add_done_callback(finished)

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until woken, until the earliest pending delivery is due, or the poll interval (the
        idle poll with none pending)."""
        if self._wake.is_set() and not self._full():
            return
        timeout = self.settings.webhook.poll_interval_seconds
        if not self._full():
            async with self.database.session() as session:
                due_in = await repository.seconds_until_next_due(session)
            if due_in is None:
                timeout = max(timeout, self.settings.webhook.idle_poll_seconds)
            else:
                timeout = max(MIN_SLEEP_SECONDS, min(timeout, due_in))
        stop_waiter = asyncio.ensure_future(stop.wait())
        wake_waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {stop_waiter, wake_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop_waiter.cancel()
            wake_waiter.cancel()

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()

    async def _finish_in_flight(self) -> None:
        """Shutdown: let attempts in progress end (each is bounded by its timeouts)."""
        if not self._in_flight:
            return
        _, unfinished = await asyncio.wait(
            set(self._in_flight), timeout=self.lease_seconds - LEASE_MARGIN_SECONDS + 1
        )
        for task in unfinished:
            task.cancel()  # the lease runs out and another worker retries it
        await asyncio.gather(*unfinished, return_exceptions=True)

    async def _deliver_logged(self, client: httpx.AsyncClient, delivery: ClaimedDelivery) -> None:
        try:
            await self.deliver(client, delivery)
        except Exception:
            # Redis or Postgres trouble: the lease runs out and the delivery is retried.
            logger.exception("webhook delivery failed", extra={"delivery_id": str(delivery.id)})

    async def deliver(self, client: httpx.AsyncClient, delivery: ClaimedDelivery) -> None:
        settings = self.settings
        admission = await self.breaker.admit(str(delivery.webhook_id))
        if not admission.allowed:
            async with self.database.transaction() as uow:
                await repository.defer_delivery(uow.session, delivery, seconds=admission.retry_in)
            DELIVERIES.labels("deferred").inc()
            return

        attempt = delivery.attempts + 1
        at = datetime.now(UTC)
        started = time.perf_counter()
        result = await self._attempt(client, delivery, attempt)
        elapsed = time.perf_counter() - started
        await self.breaker.record(
            str(delivery.webhook_id), success=result.ok, probe_token=admission.probe_token
        )

        if result.ok:
            outcome, retry_in = "succeeded", None
        elif attempt >= settings.webhook.max_attempts:
            outcome, retry_in = "gave_up", None
        else:
            outcome = "retrying"
            retry_in = retry_delay(attempt, settings)
        async with self.database.transaction() as uow:
            stored = await repository.record_attempt(
                uow.session,
                delivery,
                at=at,
                status_code=result.status_code,
                error=result.error,
                outcome=outcome,
                duration_ms=round(elapsed * 1000, 2),
                retry_in_seconds=retry_in,
            )
        if stored is None:
            logger.warning(
                "webhook attempt not recorded: lease lost or webhook deleted",
                extra={"delivery_id": str(delivery.id)},
            )
            return
        DELIVERIES.labels(outcome).inc()
        DELIVERY_DURATION.observe(elapsed)
        log = logger.info if result.ok else logger.warning
        log(
            "webhook attempt",
            extra={
                "delivery_id": str(delivery.id),
                "webhook_id": str(delivery.webhook_id),
                "notification_id": str(delivery.notification_id),
                "attempt": attempt,
                "outcome": outcome,
                "status_code": result.status_code,
                "error": result.error,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )

    async def _attempt(
        self, client: httpx.AsyncClient, delivery: ClaimedDelivery, attempt: int
    ) -> webhooks.PostResult:
        settings = self.settings
        try:
            target = await webhooks.resolve(
                delivery.url,
                dns_timeout=settings.webhook.dns_timeout_seconds,
                allow_private=settings.webhook.allow_private_targets,
            )
        except webhooks.TargetRefused as exc:
            return webhooks.PostResult(None, f"target refused: {exc}")
        body = webhooks.body_of(
            notification_id=delivery.notification_id,
            kind=delivery.kind,
            order_id=delivery.order_id,
            user_id=delivery.user_id,
            created_at=delivery.created_at,
        )
        try:
            secrets = [self.box.decrypt(c) for c in delivery.secret_ciphertexts]
        except SecretUnreadable as exc:
            logger.error(str(exc), extra={"webhook_id": str(delivery.webhook_id)})
            return webhooks.PostResult(None, f"not signed: {exc}")
        headers = webhooks.signed_headers(
            delivery_id=delivery.id, attempt=attempt, secrets=secrets, body=body
        )
        return await webhooks.post(
            client,
            target,
            body=body,
            headers=headers,
            total_timeout=settings.webhook.timeout_seconds,
        )
