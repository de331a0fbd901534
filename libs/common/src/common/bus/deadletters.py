"""The dead-letter stream and its operator tool.

A message that cannot be handled (it failed ``bus.max_attempts`` times, or its entry cannot
even be decoded) is copied to ``bus:dead-letters`` with where it came from and why, and only
then acknowledged in its group, atomically: never silently dropped. Operators look and
replay::

    python -m common.bus list [--limit N]        (make dead-letters)
    python -m common.bus replay <dead-letter-id> | --all   (make replay-dead-letters)

Replay re-adds the original envelope to its original stream and removes the dead letter.
The inbox makes replaying an already-handled message harmless. Redis is ``BUS_REDIS_URL``
or ``--redis-url``; the key prefix ``BUS_STREAM_PREFIX`` or ``--prefix`` (default ``bus:``).
The orders service's operator API (``/admin/dead-letters``) lists, inspects and redrives
dead letters with the functions below.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from common.bus.envelope import ENVELOPE_FIELD
from common.bus.streams import dead_letter_key, text
from common.redis import create_redis
from common.settings import ServiceSettings

MAX_ERROR_LENGTH = 4_000


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    id: str
    stream: str
    group: str
    entry_id: str
    type: str
    attempts: int
    error: str
    consumer: str
    dead_lettered_at: str
    envelope: str

    @classmethod
    def from_entry(cls, entry_id: str, fields: Mapping[Any, Any]) -> "DeadLetter":
        values = {text(key): text(value) for key, value in fields.items()}
        return cls(
            id=entry_id,
            stream=values.get("stream", ""),
            group=values.get("group", ""),
            entry_id=values.get("entry_id", ""),
            type=values.get("type", ""),
            attempts=int(values.get("attempts", "0") or 0),
            error=values.get("error", ""),
            consumer=values.get("consumer", ""),
            dead_lettered_at=values.get("dead_lettered_at", ""),
            envelope=values.get(ENVELOPE_FIELD, ""),
        )

    def line(self) -> str:
        error = " ".join(self.error.split())
        return "\t".join(
            (self.id, self.stream, self.group, self.type or "?", str(self.attempts), error)
        )


async def dead_letter(
    redis: Redis,
    *,
    prefix: str,
    stream: str,
    group: str,
    entry_id: str,
    consumer: str,
    message_type: str,
    attempts: int,
    error: str,
    envelope: str,
) -> str:
    """Copy an entry to the dead-letter stream and acknowledge it, in one MULTI/EXEC."""
    fields: dict[FieldT, EncodableT] = {
        "stream": stream,
        "group": group,
        "entry_id": entry_id,
        "consumer": consumer,
        "type": message_type,
        "attempts": str(attempts),
        "error": error[:MAX_ERROR_LENGTH],
        "dead_lettered_at": datetime.now(UTC).isoformat(),
        ENVELOPE_FIELD: envelope,
    }
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(dead_letter_key(prefix), fields)
    pipe.xack(stream, group, entry_id)
    added, _ = await pipe.execute()
    return text(added)


async def list_dead_letters(redis: Redis, *, prefix: str, limit: int = 100) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters."""
    entries = await redis.xrange(dead_letter_key(prefix), count=limit) or []
    return [DeadLetter.from_entry(text(entry_id), fields or {}) for entry_id, fields in entries]


async def get_dead_letter(redis: Redis, dead_letter_id: str, *, prefix: str) -> DeadLetter | None:
    """One dead letter by id; None when there is none (replayed, or never was)."""
    entries = await redis.xrange(
        dead_letter_key(prefix), min=dead_letter_id, max=dead_letter_id, count=1
    )
    if not entries:
        return None
    return DeadLetter.from_entry(text(entries[0][0]), entries[0][1] or {})


async def scan_dead_letters(
    redis: Redis,
    *,
    prefix: str,
    limit: int,
    before: str | None = None,
    match: Callable[[DeadLetter], bool] | None = None,
    batch: int = 200,
) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, newest first, older than ``before`` (an id, exclusive),
    that ``match`` accepts: a filtered page of the stream (the operator API's lists)."""
    key = dead_letter_key(prefix)
    found: list[DeadLetter] = []
    upper = f"({before}" if before else "+"
    while len(found) < limit:
        entries = await redis.xrevrange(key, max=upper, min="-", count=batch) or []
        for entry_id, fields in entries:
            letter = DeadLetter.from_entry(text(entry_id), fields or {})
            if match is None or match(letter):
                found.append(letter)
                if len(found) == limit:
                    break
        if len(entries) < batch:
            break
        upper = f"({text(entries[-1][0])}"
    return found


async def replay(redis: Redis, dead_letter_id: str, *, prefix: str) -> str | None:
    """Put the original envelope back on its stream; returns the new entry id.

    None when there is no such dead letter (already replayed, or a typo).
    """
    key = dead_letter_key(prefix)
    entries = await redis.xrange(key, min=dead_letter_id, max=dead_letter_id, count=1)
    if not entries:
        return None
    letter = DeadLetter.from_entry(text(entries[0][0]), entries[0][1] or {})
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(letter.stream, {ENVELOPE_FIELD: letter.envelope})
    pipe.xdel(key, letter.id)
    added, _ = await pipe.execute()
    return text(added)


async def replay_all(redis: Redis, *, prefix: str, batch: int = 100) -> list[str]:
    """Replay every dead letter present now; returns the new entry ids."""
    replayed: list[str] = []
    for letter in await list_dead_letters(redis, prefix=prefix, limit=batch):
        new_id = await replay(redis, letter.id, prefix=prefix)
        if new_id is not None:
            replayed.append(new_id)
    if len(replayed) == batch:
        replayed += await replay_all(redis, prefix=prefix, batch=batch)
    return replayed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.bus", description="List and replay dead letters."
    )
    parser.add_argument("--redis-url", default=os.environ.get("BUS_REDIS_URL"))
    parser.add_argument(
        "--cluster-nodes",
        default=os.environ.get("BUS_REDIS_CLUSTER_NODES"),
        help="a Redis Cluster's seed nodes, host:port,host:port (instead of --redis-url)",
    )
    parser.add_argument("--prefix", default=os.environ.get("BUS_STREAM_PREFIX", "bus:"))
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="one line per dead letter")
    listing.add_argument("--limit", type=int, default=100)
    replaying = commands.add_parser("replay", help="put messages back on their stream")
    which = replaying.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="the dead letter's id (first column of list)")
    which.add_argument("--all", action="store_true", help="every dead letter")
    return parser


async def cli(argv: Sequence[str] | None = None) -> int:
    """The command line, for callers already inside an event loop (tests)."""
    args = _parser().parse_args(argv)
    if not args.redis_url and not args.cluster_nodes:
        print("set BUS_REDIS_URL or pass --redis-url (or --cluster-nodes)", file=sys.stderr)
        return 2
    if args.cluster_nodes:
        redis = create_redis(ServiceSettings(redis={"cluster_nodes": args.cluster_nodes}))
    else:
        redis = Redis.from_url(args.redis_url, decode_responses=True)
    try:
        if args.command == "list":
            letters = await list_dead_letters(redis, prefix=args.prefix, limit=args.limit)
            for letter in letters:
                print(letter.line())
            return 0
        if args.all:
            replayed = await replay_all(redis, prefix=args.prefix)
            print(f"replayed {len(replayed)}")
            return 0
        new_id = await replay(redis, args.id, prefix=args.prefix)
        if new_id is None:
            print(f"no dead letter {args.id}", file=sys.stderr)
            return 1
        print(f"replayed {args.id} as {new_id}")
        return 0
    finally:
        await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(cli(argv))
