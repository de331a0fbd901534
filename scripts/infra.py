"""A private PostgreSQL and Redis for one stack (`make test`'s e2e stack, `make soak`).

Fault drills stop, restart and empty the database and the broker; they must never touch the
machine's own servers (other checkouts and developers use them). So the harness starts its own
pair from the installed binaries, each with a throwaway data directory and a port derived
from the stack's ``PORT_BASE`` (Postgres at +32, Redis at +79), so two checkouts with
different bases never collide. ``down`` removes everything, and ``run`` wraps a command so
that happens even when the command fails or is interrupted.

The servers themselves are :mod:`common.testing.servers` (as root, Postgres runs as the
``postgres`` user, on data in a temporary directory that user owns); this script gives one
stack its pair and records where in ``.run/<stack>/infra.json``, which every later command
reads.

Usage (``STACK``, ``PORT_BASE``, ``DB_NAME`` and ``REDIS_DB`` from the environment, as
``scripts/stack.sh`` reads them, or as options):

    python scripts/infra.py up | down | status | env
    python scripts/infra.py run -- COMMAND...      # up, COMMAND with the env below, down
    python scripts/infra.py pg-stop | pg-start | pg-restart | pg-outage SECONDS
    python scripts/infra.py redis-stop | redis-start | redis-restart

``env`` and ``run`` give ``DATABASE_URL``, ``REDIS_URL``, ``PG_PORT``, ``REDIS_PORT`` (which
``scripts/stack.sh`` honours) and ``E2E_PG_PORT``, ``E2E_PG_DATA``, ``E2E_REDIS_PORT``,
``E2E_INFRA_STATE`` (for the tests' drills).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from common.testing.servers import (
    PostgresServer,
    RedisServer,
    ServerError,
    port_open,
    postgres_user,
    private_directory,
)

ROOT = Path(__file__).resolve().parents[1]
PG_PORT_OFFSET = 32
REDIS_PORT_OFFSET = 79


InfraError = ServerError  # what the harness reports: a server missing, busy, or not up


@dataclass(frozen=True)
class Infra:
    """Where one stack's private Postgres and Redis live; saved as ``.run/<stack>/infra.json``."""

    stack: str
    pg_port: int
    redis_port: int
    home: str  # the throwaway directory holding both servers' data and logs

    @property
    def postgres(self) -> PostgresServer:
        return PostgresServer(Path(self.home) / "pg", self.pg_port)

    @property
    def redis(self) -> RedisServer:
        return RedisServer(Path(self.home) / "redis", self.redis_port)

    def database_url(self, db_name: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.pg_port}/{db_name}"

    def redis_url(self, redis_db: int) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{redis_db}"

    def env(self, db_name: str, redis_db: int) -> dict[str, str]:
        """What a stack (scripts/stack.sh) and the tests need to find these servers."""
        return {
            "DATABASE_URL": self.database_url(db_name),
            "REDIS_URL": self.redis_url(redis_db),
            "PG_HOST": "127.0.0.1",
            "PG_PORT": str(self.pg_port),
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.redis_port),
            "E2E_PG_PORT": str(self.pg_port),
            "E2E_PG_DATA": str(self.postgres.data),
            "E2E_REDIS_PORT": str(self.redis_port),
            "E2E_INFRA_STATE": str(state_file(self.stack)),
        }


def state_file(stack: str) -> Path:
    return ROOT / ".run" / stack / "infra.json"


def load(stack: str) -> Infra | None:
    path = state_file(stack)
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    # A file an older version wrote may carry fields this one no longer has.
    return Infra(**{name: saved[name] for name in Infra.__dataclass_fields__})


def _save(infra: Infra) -> None:
    path = state_file(infra.stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(infra), indent=2) + "\n")


def postgres_outage(infra: Infra, seconds: float) -> None:
    """Postgres stopped for ``seconds`` (connections refused), then started again."""
    infra.postgres.stop()
    time.sleep(seconds)  # the outage itself: nothing to poll for
    infra.postgres.start()


def up(stack: str, port_base: int) -> Infra:
    """Fresh Postgres and Redis for ``stack``; whatever an earlier run left is removed first."""
    if (stale := load(stack)) is not None:
        down(stale)
    postgres_user()  # as root without a user to run Postgres: say so before anything starts
    infra = Infra(
        stack=stack,
        pg_port=port_base + PG_PORT_OFFSET,
        redis_port=port_base + REDIS_PORT_OFFSET,
        home=str(private_directory(f"{stack}-infra")),
    )
    _save(infra)
    try:
        infra.postgres.initialise()
        infra.postgres.start()
        infra.redis.start()
    except BaseException:
        down(infra)
        raise
    return infra


def down(infra: Infra) -> None:
    """Stop both servers (whatever state they are in) and remove their data."""
    try:
        infra.postgres.stop(mode="immediate")
    except (InfraError, subprocess.SubprocessError) as exc:
        print(f"infra: Postgres did not stop cleanly: {exc}", file=sys.stderr)
    try:
        infra.redis.stop()
    except (InfraError, OSError) as exc:
        print(f"infra: Redis did not stop cleanly: {exc}", file=sys.stderr)
    if infra.redis.pidfile.exists():  # it did not answer: make sure it is gone
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(infra.redis.pidfile.read_text().strip()), signal.SIGKILL)
    shutil.rmtree(infra.home, ignore_errors=True)
    state_file(infra.stack).unlink(missing_ok=True)


def _on_sigterm(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM (CI cancelling the job) is passed on to ``child``, then unwinds like Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(stack: str, port_base: int, db_name: str, redis_db: int, command: list[str]) -> int:
    """``up``, then ``command`` with the servers' coordinates in its env, then ``down``."""
    infra = up(stack, port_base)
    print(
        f"infra: Postgres on 127.0.0.1:{infra.pg_port}, Redis on 127.0.0.1:{infra.redis_port}"
        f" (data in {infra.home})",
        flush=True,
    )
    try:
        child = subprocess.Popen(  # noqa: S603 - the caller's command, on purpose
            command, env={**os.environ, **infra.env(db_name, redis_db)}
        )
        _on_sigterm(child)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                # The child got the same signal; let it run its own cleanup (the stack's
                # `down`) before the servers it talks to disappear.
                try:
                    return child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    raise
    finally:
        down(infra)
        print("infra: Postgres and Redis stopped, data removed", flush=True)


def _required(stack: str) -> Infra:
    infra = load(stack)
    if infra is None:
        raise InfraError(f"no private infra for stack {stack!r} ({state_file(stack)} missing)")
    return infra


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stack", default=os.environ.get("STACK", "e2e"))
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("PORT_BASE", 18000)))
    parser.add_argument("--db-name", default=os.environ.get("DB_NAME", "app_e2e"))
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("REDIS_DB", 0)))
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb in ("up", "down", "status", "env", "pg-stop", "pg-start", "pg-restart"):
        verbs.add_parser(verb)
    for verb in ("redis-stop", "redis-start", "redis-restart"):
        verbs.add_parser(verb)
    outage = verbs.add_parser("pg-outage", help="Postgres stopped for SECONDS, then started")
    outage.add_argument("seconds", type=float)
    running = verbs.add_parser("run", help="up, run COMMAND with the env, down (always)")
    running.add_argument("command", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except InfraError as exc:
        print(f"infra: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    stack: str = args.stack
    if args.verb == "run":
        command: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            raise InfraError("run needs a command: infra.py run -- COMMAND...")
        return run(stack, args.port_base, args.db_name, args.redis_db, command)
    if args.verb == "up":
        infra = up(stack, args.port_base)
        print(f"Postgres 127.0.0.1:{infra.pg_port}, Redis 127.0.0.1:{infra.redis_port}")
        return 0
    if args.verb == "down":
        if (existing := load(stack)) is not None:
            down(existing)
        return 0
    infra = _required(stack)
    if args.verb == "status":
        print(f"postgres 127.0.0.1:{infra.pg_port} {'up' if port_open(infra.pg_port) else 'DOWN'}")
        print(f"redis    127.0.0.1:{infra.redis_port} {'up' if infra.redis.pings() else 'DOWN'}")
        return 0
    if args.verb == "env":
        for name, value in infra.env(args.db_name, args.redis_db).items():
            print(f"export {name}={value}")
        return 0
    actions = {
        "pg-stop": infra.postgres.stop,
        "pg-start": infra.postgres.start,
        "pg-restart": infra.postgres.restart,
        "pg-outage": lambda: postgres_outage(infra, args.seconds),
        "redis-stop": infra.redis.stop,
        "redis-start": infra.redis.start,
        "redis-restart": infra.redis.restart,
    }
    actions[args.verb]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
