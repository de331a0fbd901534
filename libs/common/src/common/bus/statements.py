"""The bus's own hot-path SQL, run as asyncpg prepared statements (common.db.UnitOfWork.connection).

Every message costs an inbox row on the consuming side and an outbox row (later deleted) on
the publishing side. Written once here, as plain SQL over arrays so that one prepared
statement serves any batch size; SQLAlchemy's :class:`~sqlalchemy.Table` objects stay the
source of the table names (and of migrations). When a table's shape changes (e.g. the inbox
partitioned by time), this is the one module to adapt.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table

from common.db import DriverConnection, InboxClaim

if TYPE_CHECKING:  # the outbox builds on this module
    from common.bus.outbox import Outgoing

LEGACY_OCCURRED_AT = "-infinity"  # the previous release's inbox rows (common.bus.inbox)


def qualified(table: Table) -> str:
    """``"schema"."name"`` of a table, quoted."""
    if table.schema:
        return f'"{table.schema}"."{table.name}"'
    return f'"{table.name}"'


class InboxStatements:
    """Record a batch of messages ``(envelope id, envelope occurred_at)`` as handled by a
    group: the ids that were new.

    The inbox is partitioned by ``occurred_at`` (common.bus.inbox explains the key); the
    ``NOT EXISTS`` looks in the ``inbox_legacy`` partition (the planner prunes to it), where
    the previous release's rows are, so a message an old replica handled is skipped here.
    """

    def __init__(self, table: Table) -> None:
        name = qualified(table)
        self.record_many = (
            f"INSERT INTO {name} (message_id, consumer_group, occurred_at) "  # noqa: S608 - names from models
            "SELECT m.id, $3::varchar, m.at "
            "FROM unnest($1::uuid[], $2::timestamptz[]) AS m(id, at) "
            f"WHERE NOT EXISTS (SELECT 1 FROM {name} legacy WHERE legacy.message_id = m.id "
            "AND legacy.consumer_group = $3::varchar "
            f"AND legacy.occurred_at = '{LEGACY_OCCURRED_AT}') "
            "ON CONFLICT DO NOTHING RETURNING message_id"
        )

    async def record(
        self,
        connection: DriverConnection,
        messages: Sequence[tuple[uuid.UUID, datetime]],
        group: str,
    ) -> set[uuid.UUID]:
        rows = await connection.fetch(
            self.record_many,
            [message_id for message_id, _ in messages],
            [occurred_at for _, occurred_at in messages],
            group,
        )
        return {uuid.UUID(bytes=row[0].bytes) for row in rows}


class InboxRow:
    """A handled message's inbox row, written by the handler's own statement: what
    :class:`InboxStatements` records for a batch in a transaction, for a unit of work with
    none (``Database.single_statement``), where the record and the effect can only agree by
    being one statement.

    Its parameters, at ``$first`` onwards (:meth:`params`), are the unit of work's
    ``inbox_claim``: the message id, the group and the envelope's ``occurred_at``. Outside
    the bus (a timer, an operator, a request) there is no claim: they are NULL, and then no
    row is written and every condition below holds. In a statement:

    * :attr:`cte` writes the row, if ``when`` (an SQL condition) holds, and unless the group
      handled the message already (also in the previous release's ``-infinity`` partition,
      see common.bus.inbox);
    * :attr:`first_time`: true when :attr:`cte` wrote the row. An effect that must happen
      once (a reservation, a notification) is written only if it holds;
    * :attr:`unseen`: true unless the group handled the message already, read before the
      statement. For an effect already guarded by a condition of its own that a duplicate
      cannot meet twice (the saga's optimistic lock), which then writes the row
      (``when``: the effect happened), as :attr:`cte` with :attr:`first_time` cannot;
    * :attr:`seen`, its opposite, for a read before the statement: a handler that finds its
      message handled has nothing to decide.
    """

    def __init__(self, table: Table, first: int, *, name: str = "handled", when: str = "") -> None:
        inbox = qualified(table)
        message_id, group, occurred_at = (
            f"${first}::uuid",
            f"${first + 1}::varchar",
            f"${first + 2}::timestamptz",
        )
        handled = (
            f"EXISTS (SELECT 1 FROM {inbox} seen WHERE seen.message_id = {message_id} "  # noqa: S608 - names from models
            f"AND seen.consumer_group = {group} "
            f"AND seen.occurred_at IN ({occurred_at}, '{LEGACY_OCCURRED_AT}'))"
        )
        self.seen = f"({message_id} IS NOT NULL AND {handled})"
        condition = f" AND {when}" if when else ""
        self.cte = (
            f"{name} AS (INSERT INTO {inbox} (message_id, consumer_group, occurred_at) "
            f"SELECT {message_id}, {group}, {occurred_at} "
            f"WHERE {message_id} IS NOT NULL{condition} AND NOT {handled} "
            "ON CONFLICT DO NOTHING RETURNING message_id)"
        )
        self.first_time = f"({message_id} IS NULL OR EXISTS (SELECT 1 FROM {name}))"  # noqa: S608
        self.unseen = f"({message_id} IS NULL OR NOT {handled})"

    @staticmethod
    def params(claim: InboxClaim | None) -> tuple[uuid.UUID | None, str | None, datetime | None]:
        if claim is None:
            return None, None, None
        return claim.message_id, claim.group, claim.occurred_at


class OutboxRows:
    """The outbox rows of a unit of work's messages, as one CTE of a bigger statement.

    A handler's last statement can write its messages' outbox rows itself (one round trip
    less than :class:`OutboxStatements`' own INSERT): put :attr:`cte` in its ``WITH``, pass
    :meth:`params` at ``$first`` onwards, select :attr:`ids` in its result, and hand
    :meth:`written` to ``UnitOfWork.written`` so that the rows are sent once it commits.
    ``when``: an SQL condition (e.g. ``EXISTS (SELECT 1 FROM moved)``) without which no row
    is written.
    """

    def __init__(self, table: Table, first: int, *, name: str = "outboxed", when: str = "") -> None:
        where = f" WHERE {when}" if when else ""
        self.cte = (
            f"{name} AS (INSERT INTO {qualified(table)} (message_id, stream, envelope) "  # noqa: S608 - names from models
            f"SELECT m, s, e::jsonb FROM unnest(${first}::uuid[], ${first + 1}::text[], "
            f"${first + 2}::text[]) AS u(m, s, e){where} RETURNING id, message_id)"
        )
        self.ids = (
            f"ARRAY(SELECT id FROM {name} ORDER BY id) AS outbox_ids, "  # noqa: S608
            f"ARRAY(SELECT message_id FROM {name} ORDER BY id) AS outbox_message_ids"
        )

    @staticmethod
    def params(outgoing: Sequence["Outgoing"]) -> tuple[list[uuid.UUID], list[str], list[str]]:
        return (
            [item.envelope.id for item in outgoing],
            [item.stream for item in outgoing],
            [item.json for item in outgoing],
        )

    @staticmethod
    def written(row: Any, outgoing: Sequence["Outgoing"]) -> list[tuple[int, "Outgoing"]]:
        """The rows ``row`` (the statement's result) says were written, with their messages."""
        by_message = {item.envelope.id: item for item in outgoing}
        return [
            (int(row_id), by_message[uuid.UUID(bytes=message_id.bytes)])
            for row_id, message_id in zip(row["outbox_ids"], row["outbox_message_ids"], strict=True)
        ]


class OutboxStatements:
    """Insert a unit of work's outbox rows (:class:`OutboxRows` on its own); delete sent
    rows by id."""

    def __init__(self, table: Table) -> None:
        rows = OutboxRows(table, 1)
        self.insert = f"WITH {rows.cte} SELECT {rows.ids}"
        self.delete = f"DELETE FROM {qualified(table)} WHERE id = ANY($1::bigint[])"  # noqa: S608 - names from models

    async def write(
        self, connection: DriverConnection, outgoing: Sequence["Outgoing"]
    ) -> list[tuple[int, "Outgoing"]]:
        """The new rows, each with its message."""
        row = await connection.fetchrow(self.insert, *OutboxRows.params(outgoing))
        return OutboxRows.written(row, outgoing)

    async def delete_ids(self, connection: DriverConnection, ids: Sequence[int]) -> None:
        await connection.execute(self.delete, list(ids))
