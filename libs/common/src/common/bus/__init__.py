"""The event bus: Redis Streams with consumer groups, a transactional outbox and an inbox.

What a service uses:

* models.py: ``outbox = add_outbox_table(Base.metadata)``, ``inbox = add_inbox_table(...)``
* business code: ``uow.publish(message)`` inside a unit of work (``common.db.UnitOfWork``)
* the API lifespan (common.http) and the worker runtime (common.worker) run the service's
  :class:`Outbox`; ``worker.py`` declares the service's consumers (common.worker)

See docs/design.md section 3 for the guarantees and the traps this package designs out.
"""

from common.bus.consumer import Consumer, Handler, Handlers, Locks, OneStatement, Only
from common.bus.deadletters import DeadLetter, list_dead_letters, replay
from common.bus.envelope import Envelope, UnknownMessageType, WrongMessageType
from common.bus.inbox import add_inbox_table
from common.bus.outbox import Outbox, Outgoing, add_outbox_table, envelope_for
from common.bus.periodic import Idle, Periodic
from common.bus.streams import StreamTrimmer, dead_letter_key, ensure_group, stream_key

__all__ = [
    "Consumer",
    "DeadLetter",
    "Envelope",
    "Handler",
    "Handlers",
    "Idle",
    "Locks",
    "OneStatement",
    "Only",
    "Outbox",
    "Outgoing",
    "Periodic",
    "StreamTrimmer",
    "UnknownMessageType",
    "WrongMessageType",
    "add_inbox_table",
    "add_outbox_table",
    "dead_letter_key",
    "ensure_group",
    "envelope_for",
    "list_dead_letters",
    "replay",
    "stream_key",
]
