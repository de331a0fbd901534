"""Private PostgreSQL and Redis servers, started from the installed binaries.

Fault drills stop, restart and empty the database and the broker; they must never touch the
machine's own servers. Everything that needs a server of its own uses these two classes:
``scripts/infra.py`` (the e2e and soak stacks' pair), and :mod:`common.testing.cluster` (a
Postgres primary with a streaming replica, a Redis Cluster).

Postgres refuses to run as root: when we are root, its tools run as the unprivileged
``postgres`` user (``INFRA_PG_USER`` names another), and its data directory must be one that
user can enter: :func:`private_directory` makes one in the system's temporary directory,
never under the checkout (which may sit under a private home, mode 700).
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT = 60.0
# A throwaway cluster: durability is not what the drills test (a restart is a clean shutdown
# or a crash of the server process, never of the machine), speed is.
FAST_POSTGRES = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


class ServerError(RuntimeError):
    """A server did not come up, did not stop, or its port is taken."""


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def wait_until(what: str, check: Callable[[], bool], timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ServerError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def private_directory(name: str) -> Path:
    """A fresh directory for a private server's data, in the system's temporary directory,
    owned by the user Postgres runs as (which cannot enter a checkout under a private home)."""
    path = Path(tempfile.mkdtemp(prefix=f"shop-{name}-"))
    if (user := postgres_user()) is not None:
        account = pwd.getpwnam(user)
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def postgres_user() -> str | None:
    """Who runs Postgres's tools: ourselves, or ``postgres`` (``INFRA_PG_USER``) as root."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("INFRA_PG_USER", "postgres")
    try:
        pwd.getpwnam(user)
    except KeyError as exc:
        raise ServerError(f"running as root and there is no user {user!r} to run Postgres") from exc
    return user


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory (``PG_BIN`` overrides); on Debian
    ``initdb`` and ``pg_ctl`` are not on PATH."""
    if explicit := os.environ.get("PG_BIN"):
        return Path(explicit)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    if on_path := shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise ServerError("no PostgreSQL binaries found (set PG_BIN to the directory of pg_ctl)")


def run_postgres_tool(args: Sequence[str], *, timeout: float = STARTUP_TIMEOUT) -> None:
    """Run ``initdb``, ``pg_ctl``, ``pg_basebackup``... as the user Postgres runs as."""
    user = postgres_user()
    account = pwd.getpwnam(user) if user else None
    result = subprocess.run(  # noqa: S603 - the installed Postgres binaries, our arguments
        [str(postgres_bin() / args[0]), *args[1:]],
        user=account.pw_uid if account else None,
        group=account.pw_gid if account else None,
        extra_groups=[] if account else None,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise ServerError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


@dataclass(frozen=True)
class PostgresServer:
    """One private Postgres: its data directory and its port (its socket in the data dir)."""

    data: Path
    port: int

    @property
    def log(self) -> Path:
        return self.data.parent / f"postgres-{self.port}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def initialise(self, settings: Mapping[str, str] = FAST_POSTGRES) -> None:
        """A new cluster: superuser ``postgres``, trust on 127.0.0.1, UTF-8, ``settings``."""
        run_postgres_tool(
            ["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--locale=C", "--no-sync"]
        )  # fmt: skip
        self.configure(settings)

    def configure(self, settings: Mapping[str, str]) -> None:
        """Append ``settings`` (and this server's port and socket) to postgresql.conf."""
        lines = {**settings, "port": str(self.port), "unix_socket_directories": f"'{self.data}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in lines.items())

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        if port_open(self.port):
            raise ServerError(f"port {self.port} is already taken; is another server on it?")
        self._pg_ctl("start", "-l", str(self.log))
        wait_until(f"Postgres answering on {self.port}", lambda: port_open(self.port))

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast``: sessions are cut, the server shuts down cleanly."""
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", mode)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``, what an operator's restart does to every session."""
        self._pg_ctl("restart", "-m", "fast", "-l", str(self.log))
        wait_until(f"Postgres answering on {self.port}", lambda: port_open(self.port))

    def _pg_ctl(self, action: str, *options: str) -> None:
        wait = str(int(STARTUP_TIMEOUT))
        run_postgres_tool(["pg_ctl", "-D", str(self.data), "-w", "-t", wait, action, *options])


@dataclass(frozen=True)
class RedisServer:
    """One private Redis that keeps nothing on disk, so a restart comes back empty."""

    directory: Path
    port: int

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    def start(self, **options: str) -> None:
        """Start it daemonized (``options`` are extra ``redis-server --name value`` pairs)."""
        if port_open(self.port):
            raise ServerError(f"port {self.port} is already taken; is another server on it?")
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = {
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "daemonize": "yes",
            "port": str(self.port),
            "dir": str(self.directory),
            "pidfile": str(self.pidfile),
            "logfile": str(self.directory / "redis.log"),
            **options,
        }
        arguments = [part for name, value in settings.items() for part in (f"--{name}", value)]
        server = shutil.which("redis-server") or "redis-server"
        subprocess.run([server, *arguments], check=True, timeout=STARTUP_TIMEOUT)  # noqa: S603
        wait_until(f"Redis answering on {self.port}", self.pings)

    def pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1.0) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """``SHUTDOWN NOSAVE``: every key, stream and group is gone."""
        if not port_open(self.port):
            return
        try:
            with socket.create_connection(("127.0.0.1", self.port), 5.0) as connection:
                connection.sendall(b"SHUTDOWN NOSAVE\r\n")
                connection.recv(64)  # the server closes the connection as it exits
        except OSError:
            pass
        wait_until(f"Redis gone from {self.port}", lambda: not port_open(self.port))

    def restart(self) -> None:
        """Restarted empty on the same port, as a broker without persistence comes back."""
        self.stop()
        self.start()
