"""Alembic helpers: turn a plain table into a range-partitioned one, rows kept, and back.

One transaction (Alembic runs each revision in one): the old table is locked, renamed aside
(its indexes too: index names are unique per schema), the partitioned table is created under
the old name with partitions from the oldest row's interval to ``ahead_days`` from now plus a
default one, the rows are copied, and the old table is dropped. Readers and writers wait on
the lock for the copy's duration: fine for the sizes a rolling upgrade migrates here; the
procedure for a big table (attach the old table as one partition, no copy) is in
docs/partitioning.md.
"""

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

from common.bus.inbox import INBOX_PARTITION_STORAGE
from common.partitions import PartitionedTable, create_initial_partitions

ASIDE = "_unpartitioned"


def _rename_aside(bind: Connection, schema: str, name: str) -> str:
    """Rename ``schema.name`` and its indexes (constraints' included) out of the way."""
    aside = f"{name}{ASIDE}"
    indexes = bind.execute(
        text("SELECT indexname FROM pg_indexes WHERE schemaname = :s AND tablename = :t"),
        {"s": schema, "t": name},
    ).scalars()
    for index in list(indexes):
        bind.execute(text(f'ALTER INDEX "{schema}"."{index}" RENAME TO "{index[:48]}{ASIDE}"'))
    bind.execute(text(f'ALTER TABLE "{schema}"."{name}" RENAME TO "{aside}"'))
    return aside


def convert_to_partitioned(
    bind: Connection,
    table: PartitionedTable,
    *,
    create: Sequence[str],
    columns: str,
    oldest_from: str | None = None,
    after_create: Sequence[str] = (),
) -> int:
    """Swap ``table`` for a partitioned copy built by the ``create`` statements; rows kept.

    ``columns`` are copied by name; ``oldest_from`` is the column whose minimum decides the
    first partition (None: the rows all go to a partition of their own, made by
    ``after_create``). Returns the rows copied.
    """
    schema = table.schema
    bind.execute(text(f"LOCK TABLE {table.qualified} IN ACCESS EXCLUSIVE MODE"))
    aside = _rename_aside(bind, schema, table.name)
    for statement in create:
        bind.execute(text(statement))
    since = None
    if oldest_from is not None:
        since = bind.execute(text(f'SELECT min({oldest_from}) FROM "{schema}"."{aside}"')).scalar()  # noqa: S608 (identifiers from code, never input)
    create_initial_partitions(bind, table, since=since)
    for statement in after_create:
        bind.execute(text(statement))
    copied = bind.execute(
        text(
            f'INSERT INTO {table.qualified} ({columns}) SELECT {columns} FROM "{schema}"."{aside}"'  # noqa: S608 (identifiers from code, never input)
        )
    ).rowcount
    bind.execute(text(f'DROP TABLE "{schema}"."{aside}"'))
    return int(copied or 0)


def convert_to_plain(
    bind: Connection, schema: str, name: str, *, create: Sequence[str], columns: str
) -> None:
    """The downgrade: the rows of the partitioned ``schema.name`` back into a plain table."""
    bind.execute(text(f'LOCK TABLE "{schema}"."{name}" IN ACCESS EXCLUSIVE MODE'))
    aside = _rename_aside(bind, schema, name)
    for statement in create:
        bind.execute(text(statement))
    bind.execute(
        text(
            f'INSERT INTO "{schema}"."{name}" ({columns}) '  # noqa: S608 (identifiers from code, never input)
            f'SELECT {columns} FROM "{schema}"."{aside}" ON CONFLICT DO NOTHING'
        )
    )
    bind.execute(text(f'DROP TABLE "{schema}"."{aside}" CASCADE'))


# -- the bus inbox, the same in every schema ---------------------------------------------------

INBOX_RETENTION_DAYS = 7  # the settings' inbox.retention_hours default; the worker re-reads it


def inbox_plan(schema: str) -> PartitionedTable:
    return PartitionedTable(
        schema=schema,
        name="inbox",
        column="occurred_at",
        interval="day",
        retention_days=INBOX_RETENTION_DAYS,
        storage=INBOX_PARTITION_STORAGE,
    )


def convert_inbox(bind: Connection, schema: str) -> int:
    """The inbox, partitioned daily by the envelope's ``occurred_at`` (common.bus.inbox).

    Existing rows do not know their envelope's time: they keep ``-infinity`` and go to the
    ``inbox_legacy`` partition, with the previous release's writes, where the old key
    ``(message_id, consumer_group)`` stays unique.
    """
    plan = inbox_plan(schema)
    return convert_to_partitioned(
        bind,
        plan,
        create=[
            f"""CREATE TABLE {plan.qualified} (
                message_id uuid NOT NULL,
                consumer_group varchar(100) NOT NULL,
                occurred_at timestamptz NOT NULL DEFAULT '-infinity',
                handled_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT pk_inbox PRIMARY KEY (message_id, consumer_group, occurred_at)
            ) PARTITION BY RANGE (occurred_at)""",
            f'CREATE TABLE "{schema}".inbox_legacy PARTITION OF {plan.qualified} '
            "FOR VALUES FROM (MINVALUE) TO ('2000-01-01') WITH ("
            # Pruned row by row (prune_legacy) while the previous release runs: vacuum early.
            "autovacuum_vacuum_scale_factor = 0.02)",
            f'CREATE INDEX ix_inbox_legacy_handled_at ON "{schema}".inbox_legacy (handled_at)',
        ],
        columns="message_id, consumer_group, handled_at",
    )


def inbox_to_plain(bind: Connection, schema: str) -> None:
    convert_to_plain(
        bind,
        schema,
        "inbox",
        create=[
            f"""CREATE TABLE "{schema}".inbox (
                message_id uuid NOT NULL,
                consumer_group varchar(100) NOT NULL,
                handled_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT pk_inbox PRIMARY KEY (message_id, consumer_group)
            )""",
            f'CREATE INDEX ix_inbox_handled_at ON "{schema}".inbox (handled_at)',
        ],
        columns="message_id, consumer_group, handled_at",
    )


def set_storage(bind: Connection, qualified: str, settings: str) -> None:
    bind.execute(text(f"ALTER TABLE {qualified} SET ({settings})"))


def reset_storage(bind: Connection, qualified: str, names: Sequence[str]) -> None:
    bind.execute(text(f"ALTER TABLE {qualified} RESET ({', '.join(names)})"))


# The outbox: every row is inserted and deleted within about a second, so the table stays tiny
# while its dead tuples pile up at the commit rate. The default trigger (20% of a tiny table)
# fires constantly or, with a few live rows, lets dead ones dominate every sweep's scan; a
# fixed threshold and no cost delay keep it small and each vacuum short.
OUTBOX_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, "
    "autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0, "
    "autovacuum_analyze_threshold = 1000"
)
OUTBOX_AUTOVACUUM_NAMES = (
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_cost_delay",
    "autovacuum_analyze_scale_factor",
    "autovacuum_analyze_threshold",
)
