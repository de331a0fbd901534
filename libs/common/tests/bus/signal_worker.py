"""A minimal worker process for ``test_worker.test_run_worker_exits_0_on_sigterm``.

Run as a script: settings come from the environment the test sets.
"""

from typing import ClassVar

from common.bus import Envelope, add_inbox_table, add_outbox_table
from common.contracts import Message
from common.db import UnitOfWork, schema_metadata
from common.settings import ServiceSettings
from common.worker import WorkerSpec, run_worker


class Nothing(Message):
    TYPE: ClassVar[str] = "bustest.Nothing"
    STREAM: ClassVar[str] = "bustest.nothing"


async def ignore(uow: UnitOfWork, envelope: Envelope, message: Nothing) -> None:
    """Nothing is ever sent: the test only starts the worker and stops it."""


metadata = schema_metadata("bustest")
outbox, inbox = add_outbox_table(metadata), add_inbox_table(metadata)

if __name__ == "__main__":
    run_worker(
        ServiceSettings(),
        WorkerSpec(
            group="signal-test",
            handlers=lambda _: {Nothing: ignore},
            inbox_table=inbox,
            outbox_table=outbox,
        ),
    )
    print("clean exit")
