"""Messages of a newer schema version than this consumer knows: held, retried, shown.

During a rolling upgrade a new release's producer may publish version n+1 of a message while
a consumer of the previous release, which knows only n, still reads the stream. That message
is not the handler's failure and must not be lost or dead-lettered for ever: the consumer that
cannot read it *holds* it.

* It is not acknowledged: it stays pending in the group, so the next reclaim
  (``XAUTOCLAIM`` after ``bus.reclaim_idle_ms``, by any consumer of the group, a new
  release's included) tries it again. That is the backoff: one look per reclaim cycle,
  never a busy loop.
* Its delivery count is reset (``XCLAIM ... RETRYCOUNT 0 JUSTID``), so the holds never add
  up to ``bus.max_attempts`` and the dead-letter stream: the consumer that knows the version
  handles it as a first delivery.
* It is counted (``bus_messages_held_total``) and recorded in one Redis hash, which the
  operators' ``/admin/held-messages`` and console list (:func:`list_held`, which forgets
  the entries that are no longer pending, i.e. were handled since).

The decision itself is :func:`newer_than_known`, a pure function returning a
:class:`RetryLater` outcome, so it fits a consumer that settles every entry in one place.
"""

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common.bus import metrics
from common.bus.envelope import Envelope
from common.bus.streams import text
from common.contracts import Message

MAX_LISTED = 500


@dataclass(frozen=True)
class RetryLater:
    """Leave the entry pending, unacknowledged and uncounted; a later reclaim tries it again.

    The consumer's settle point turns it into a retry-later outcome that is not counted
    toward ``bus.max_attempts`` and not retried in-process (it would block its batch for
    nothing: this process cannot read that version); :func:`hold` does the rest.
    """

    reason: str
    envelope: Envelope
    known: type[Message]


def newer_than_known(envelope: Envelope, known: type[Message]) -> RetryLater | None:
    """RetryLater when ``envelope`` carries a schema version above the one ``known`` declares.

    The current and every older version are read (the tolerant reader: unknown fields are
    ignored, a missing new field takes its default); only a newer one is held.
    """
    if envelope.schema_version <= known.SCHEMA_VERSION:
        return None
    return RetryLater(
        f"{envelope.type} v{envelope.schema_version} is newer than the v"
        f"{known.SCHEMA_VERSION} this consumer reads",
        envelope,
        known,
    )


@dataclass(frozen=True)
class HeldMessage:
    """One held entry, as operators see it (``GET /admin/held-messages`` serves it as is): a
    message of a newer schema version than its consumer group reads, pending, retried each
    reclaim cycle, handled once a consumer of the newer release reads it."""

    group: str
    stream: str
    entry_id: str
    type: str
    schema_version: int
    known_version: int
    message_id: str
    consumer: str
    reason: str
    held_at: str


def held_key(prefix: str) -> str:
    return f"{prefix}held"


def _field(group: str, stream: str, entry_id: str) -> str:
    return f"{group}|{stream}|{entry_id}"


async def hold(
    redis: Redis,
    *,
    prefix: str,
    group: str,
    consumer: str,
    stream: str,
    entry_id: str,
    outcome: RetryLater,
) -> None:
    """Keep the entry pending with its delivery count reset; count it and record it."""
    envelope, known = outcome.envelope, outcome.known
    await redis.xclaim(stream, group, consumer, 0, [entry_id], retrycount=0, justid=True)
    held = HeldMessage(
        group=group,
        stream=stream,
        entry_id=entry_id,
        type=envelope.type,
        schema_version=envelope.schema_version,
        known_version=known.SCHEMA_VERSION,
        message_id=str(envelope.id),
        consumer=consumer,
        reason=outcome.reason,
        held_at=datetime.now(UTC).isoformat(),
    )
    # HSETNX: the first hold stays, so operators see how long the message has waited.
    await redis.hsetnx(held_key(prefix), _field(group, stream, entry_id), json.dumps(asdict(held)))
    metrics.HELD.labels(group, envelope.type).inc()


async def list_held(redis: Redis, *, prefix: str, limit: int = MAX_LISTED) -> list[HeldMessage]:
    """The held entries still pending (oldest first); forgets those handled since."""
    raw = await redis.hgetall(held_key(prefix))
    records = sorted(
        (HeldMessage(**json.loads(text(value))) for value in raw.values()),
        key=lambda held: held.held_at,
    )
    still: list[HeldMessage] = []
    settled: list[str] = []
    for held in records:
        try:
            rows = await redis.xpending_range(
                held.stream, held.group, min=held.entry_id, max=held.entry_id, count=1
            )
        except ResponseError:  # the stream or its group is gone: nothing is held there
            rows = []
        if rows:
            if len(still) < limit:
                still.append(held)
        else:
            settled.append(_field(held.group, held.stream, held.entry_id))
    if settled:
        await redis.hdel(held_key(prefix), *settled)
    return still
