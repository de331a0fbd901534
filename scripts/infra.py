"""A private PostgreSQL and Redis for one stack (`make test`'s e2e stack, `make soak`).

Fault drills stop, restart and empty the database and the broker; they must never touch the
machine's own servers (other checkouts and developers use them). So the harness starts its own
pair from the installed binaries, each with a throwaway data directory and a port derived
from the stack's ``PORT_BASE`` (Postgres at +32, Redis at +79), so two checkouts with
different bases never collide. ``down`` removes everything, and ``run`` wraps a command so
that happens even when the command fails or is interrupted.

Postgres refuses to run as root: when we are root, it runs as the unprivileged ``postgres``
user (``INFRA_PG_USER`` names another). The data lives in a ``mktemp`` directory that user
owns; its path is recorded in ``.run/<stack>/infra.json``, which every later command reads.

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
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
PG_PORT_OFFSET = 32
REDIS_PORT_OFFSET = 79
STARTUP_TIMEOUT = 60.0
# A throwaway cluster: durability is not what the drills test (a restart is a clean
# shutdown or a crash of the server process, never of the machine), speed is.
PG_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    " -c full_page_writes=off -c max_connections=300"
)
# Nothing on disk, ever: a restart (SHUTDOWN NOSAVE, start) comes back empty.
REDIS_OPTIONS = {"bind": "127.0.0.1", "save": "", "appendonly": "no", "daemonize": "yes"}


class InfraError(RuntimeError):
    """Something the harness needs is missing, busy, or did not come up."""


@dataclass(frozen=True)
class Infra:
    """Where one stack's private Postgres and Redis live; saved as ``.run/<stack>/infra.json``."""

    stack: str
    pg_port: int
    redis_port: int
    home: str  # the throwaway directory holding both servers' data and logs
    pg_bin: str
    pg_user: str | None  # who runs Postgres, when we are root

    @property
    def pg_data(self) -> Path:
        return Path(self.home) / "pg"

    @property
    def pg_log(self) -> Path:
        return Path(self.home) / "postgres.log"

    @property
    def redis_dir(self) -> Path:
        return Path(self.home) / "redis"

    @property
    def redis_pidfile(self) -> Path:
        return self.redis_dir / "redis.pid"

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
            "E2E_PG_DATA": str(self.pg_data),
            "E2E_REDIS_PORT": str(self.redis_port),
            "E2E_INFRA_STATE": str(state_file(self.stack)),
        }


def state_file(stack: str) -> Path:
    return ROOT / ".run" / stack / "infra.json"


def load(stack: str) -> Infra | None:
    path = state_file(stack)
    if not path.exists():
        return None
    return Infra(**json.loads(path.read_text()))


def _save(infra: Infra) -> None:
    path = state_file(infra.stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(infra), indent=2) + "\n")


def find_pg_bin() -> str:
    """The newest installed PostgreSQL's bin directory (``PG_BIN`` overrides)."""
    if explicit := os.environ.get("PG_BIN"):
        return explicit
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1].parent)
    on_path = shutil.which("pg_ctl")
    if on_path:
        return str(Path(on_path).parent)
    raise InfraError("no PostgreSQL binaries found (set PG_BIN to the directory of pg_ctl)")


def answers(port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout):
            return True
    except OSError:
        return False


def _wait_until(
    condition: str, check: Callable[[], bool], timeout: float = STARTUP_TIMEOUT
) -> None:
    """Poll ``check`` until it holds; fail naming ``condition`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise InfraError(f"{condition} within {timeout:.0f} s")
        time.sleep(0.1)


def _as_pg_user(infra: Infra, command: list[str], timeout: float = STARTUP_TIMEOUT) -> None:
    """Run a Postgres tool, as the unprivileged user when we are root."""
    result = subprocess.run(  # noqa: S603 - the installed Postgres binaries, our arguments
        command,
        user=infra.pg_user,
        group=_group_of(infra.pg_user),
        cwd=infra.home,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise InfraError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


def _group_of(user: str | None) -> int | None:
    return pwd.getpwnam(user).pw_gid if user else None


# --- Postgres ---------------------------------------------------------------------------


def _pg_ctl(infra: Infra, *args: str, timeout: float = STARTUP_TIMEOUT) -> None:
    _as_pg_user(infra, [f"{infra.pg_bin}/pg_ctl", "-D", str(infra.pg_data), *args], timeout)


def init_postgres(infra: Infra) -> None:
    """A new cluster: superuser ``postgres``, trust on 127.0.0.1 only, UTF-8."""
    _as_pg_user(
        infra,
        [
            f"{infra.pg_bin}/initdb",
            "-D",
            str(infra.pg_data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
    )


def start_postgres(infra: Infra) -> None:
    """Start the cluster and wait until it accepts connections."""
    if answers(infra.pg_port):
        raise InfraError(f"port {infra.pg_port} is already taken; is another stack on it?")
    options = f"{PG_OPTIONS} -p {infra.pg_port} -k {infra.home}"
    wait = str(int(STARTUP_TIMEOUT))
    _pg_ctl(infra, "start", "-w", "-t", wait, "-l", str(infra.pg_log), "-o", options)
    _wait_until(f"Postgres did not answer on {infra.pg_port}", lambda: answers(infra.pg_port))


def stop_postgres(infra: Infra, mode: str = "fast") -> None:
    """``pg_ctl stop -m fast``: sessions are cut, the server shuts down cleanly."""
    if (infra.pg_data / "postmaster.pid").exists():
        _pg_ctl(infra, "stop", "-w", "-m", mode)


def restart_postgres(infra: Infra) -> None:
    """``pg_ctl restart -m fast``, what an operator's restart does to every open session."""
    _pg_ctl(infra, "restart", "-w", "-m", "fast", "-l", str(infra.pg_log))
    _wait_until(f"Postgres did not answer on {infra.pg_port}", lambda: answers(infra.pg_port))


def postgres_outage(infra: Infra, seconds: float) -> None:
    """Postgres stopped for ``seconds`` (connections refused), then started again."""
    stop_postgres(infra)
    time.sleep(seconds)  # the outage itself: nothing to poll for
    start_postgres(infra)


# --- Redis ------------------------------------------------------------------------------


def start_redis(infra: Infra) -> None:
    """A Redis that keeps nothing on disk, so a restart starts empty."""
    if answers(infra.redis_port):
        raise InfraError(f"port {infra.redis_port} is already taken; is another stack on it?")
    infra.redis_dir.mkdir(parents=True, exist_ok=True)
    options = {
        **REDIS_OPTIONS,
        "port": str(infra.redis_port),
        "dir": str(infra.redis_dir),
        "pidfile": str(infra.redis_pidfile),
        "logfile": str(infra.redis_dir / "redis.log"),
    }
    arguments = [part for name, value in options.items() for part in (f"--{name}", value)]
    redis_server = shutil.which("redis-server") or "redis-server"
    subprocess.run([redis_server, *arguments], check=True, timeout=STARTUP_TIMEOUT)  # noqa: S603
    _wait_until(f"Redis did not answer on {infra.redis_port}", lambda: _redis_pings(infra))


def _redis_pings(infra: Infra) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", infra.redis_port), 1.0) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def stop_redis(infra: Infra) -> None:
    """``SHUTDOWN NOSAVE``: every key, stream and group is gone."""
    if not answers(infra.redis_port):
        return
    try:
        with socket.create_connection(("127.0.0.1", infra.redis_port), 5.0) as connection:
            connection.sendall(b"SHUTDOWN NOSAVE\r\n")
            connection.recv(64)  # the server closes the connection as it exits
    except OSError:
        pass
    _wait_until(f"Redis still answers on {infra.redis_port}", lambda: not answers(infra.redis_port))


def restart_redis(infra: Infra) -> None:
    """Redis restarted empty on the same port, as a broker without persistence comes back."""
    stop_redis(infra)
    start_redis(infra)


# --- the pair ---------------------------------------------------------------------------


def _pg_user() -> str | None:
    if os.geteuid() != 0:
        return None
    user = os.environ.get("INFRA_PG_USER", "postgres")
    try:
        pwd.getpwnam(user)
    except KeyError as exc:
        raise InfraError(f"running as root and there is no user {user!r} to run Postgres") from exc
    return user


def up(stack: str, port_base: int) -> Infra:
    """Fresh Postgres and Redis for ``stack``; whatever an earlier run left is removed first."""
    if (stale := load(stack)) is not None:
        down(stale)
    pg_user = _pg_user()
    home = tempfile.mkdtemp(prefix=f"shop-{stack}-infra-")
    infra = Infra(
        stack=stack,
        pg_port=port_base + PG_PORT_OFFSET,
        redis_port=port_base + REDIS_PORT_OFFSET,
        home=home,
        pg_bin=find_pg_bin(),
        pg_user=pg_user,
    )
    _save(infra)
    if pg_user:
        entry = pwd.getpwnam(pg_user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    try:
        init_postgres(infra)
        start_postgres(infra)
        start_redis(infra)
    except BaseException:
        down(infra)
        raise
    return infra


def down(infra: Infra) -> None:
    """Stop both servers (whatever state they are in) and remove their data."""
    try:
        stop_postgres(infra, mode="immediate")
    except (InfraError, subprocess.SubprocessError) as exc:
        print(f"infra: Postgres did not stop cleanly: {exc}", file=sys.stderr)
    try:
        stop_redis(infra)
    except (InfraError, OSError) as exc:
        print(f"infra: Redis did not stop cleanly: {exc}", file=sys.stderr)
    if infra.redis_pidfile.exists():  # it did not answer: make sure it is gone
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(infra.redis_pidfile.read_text().strip()), signal.SIGKILL)
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
        print(f"postgres 127.0.0.1:{infra.pg_port} {'up' if answers(infra.pg_port) else 'DOWN'}")
        print(f"redis    127.0.0.1:{infra.redis_port} {'up' if _redis_pings(infra) else 'DOWN'}")
        return 0
    if args.verb == "env":
        for name, value in infra.env(args.db_name, args.redis_db).items():
            print(f"export {name}={value}")
        return 0
    actions = {
        "pg-stop": lambda: stop_postgres(infra),
        "pg-start": lambda: start_postgres(infra),
        "pg-restart": lambda: restart_postgres(infra),
        "pg-outage": lambda: postgres_outage(infra, args.seconds),
        "redis-stop": lambda: stop_redis(infra),
        "redis-start": lambda: start_redis(infra),
        "redis-restart": lambda: restart_redis(infra),
    }
    actions[args.verb]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
