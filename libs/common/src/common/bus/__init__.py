"""The event bus: Redis Streams with consumer groups, a transactional outbox and an inbox.

What a service uses:

* models.py: ``outbox = add_outbox_table(Base.metadata)``, ``inbox = add_inbox_table(...)``
* business code: ``await bus.publish(session, message)`` inside a unit of work
* API lifespan: ``async with OutboxRelay(db, redis, outbox, settings=settings): yield``
* worker.py: ``common.worker.run_worker(...)`` with a :class:`Consumer` per group

See DESIGN.md section 3 for the guarantees and the traps this package designs out.
"""

from common.bus.consumer import Consumer, Handler
from common.bus.deadletters import DeadLetter, list_dead_letters, replay
from common.bus.envelope import Envelope, UnknownMessageType, WrongMessageType
from common.bus.inbox import add_inbox_table
from common.bus.outbox import (
    OutboxNotBound,
    OutboxRelay,
    add_outbox_table,
    bind_outbox,
    envelope_for,
    publish,
)
from common.bus.periodic import Periodic
from common.bus.streams import StreamTrimmer, dead_letter_key, ensure_group, stream_key

__all__ = [
    "Consumer",
    "DeadLetter",
    "Envelope",
    "Handler",
    "OutboxNotBound",
    "OutboxRelay",
    "Periodic",
    "StreamTrimmer",
    "UnknownMessageType",
    "WrongMessageType",
    "add_inbox_table",
    "add_outbox_table",
    "bind_outbox",
    "dead_letter_key",
    "ensure_group",
    "envelope_for",
    "list_dead_letters",
    "publish",
    "replay",
    "stream_key",
]
