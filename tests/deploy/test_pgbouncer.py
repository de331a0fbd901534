"""PgBouncer in the pooled deployments: its entry point, its configuration, and how overlays/scale
(components/pgbouncer) wires it between the services and Postgres.

The entry point (deploy/pgbouncer/entrypoint.sh) runs here with ``cat`` in place of PgBouncer, so
what it would start PgBouncer with is printed; no PgBouncer and no Postgres are needed. One test
then runs it for real: PgBouncer 1.24.1 (scripts/pgbouncer.py builds it into .run/tools/bin once,
about 15 s) started by the entry point on a free loopback port, in front of the machine's Postgres
(``TEST_POSTGRES_URL``) with a role and database of its own, serving asyncpg a prepared statement
across transactions and server connections and the statement timeout from connect_query, then
stopped with SIGINT, the image's stop signal. The image itself is built on an engine by hand
(deploy/README.md, "PgBouncer").
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
import yaml

from common.settings import ServiceSettings
from common.testing.plugin import as_admin, throwaway_database
from common.testing.polling import eventually
from common.testing.scripts import load_script
from common.testing.servers import port_open

REPO = Path(__file__).resolve().parents[2]
PGBOUNCER = REPO / "deploy" / "pgbouncer"
ENTRYPOINT = PGBOUNCER / "entrypoint.sh"
BASE_INI = PGBOUNCER / "pgbouncer.ini"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
BASH = shutil.which("bash") or "/bin/bash"
SERVICES = ("users", "orders", "notifications")
URL = "postgresql+asyncpg://{user}:{password}@{host}/app{query}"
Doc = dict[str, Any]


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The entry point with ``env`` alone (plus PATH), printing PgBouncer's configuration."""
    run_dir = tmp_path / "run"
    return subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [BASH, str(ENTRYPOINT)],
        env={
            "PATH": "/usr/bin:/bin",
            "PGBOUNCER_RUN_DIR": str(run_dir),
            "PGBOUNCER_BASE_CONFIG": str(BASE_INI),
            "PGBOUNCER_BIN": "cat",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def url(user: str = "app", password: str = "pw", host: str = "db:5432", query: str = "") -> str:  # noqa: S107 - a test URL
    return URL.format(user=user, password=password, host=host, query=query)


def settings(config: str) -> dict[str, str]:
    """The [pgbouncer] settings of a generated configuration, the last value of each winning."""
    section = config.split("[pgbouncer]", 1)[1]
    found: dict[str, str] = {}
    for line in section.splitlines():
        if "=" in line and not line.lstrip().startswith(";"):
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip()
    return found


# ---- the entry point --------------------------------------------------------------------------


def test_one_database_and_one_user_from_the_services_urls(tmp_path: Path) -> None:
    result = start(
        tmp_path,
        USERS_DATABASE_DIRECT_URL=url(password="p%40ss%2Fw%22rd"),
        ORDERS_DATABASE_DIRECT_URL=url(password="p%40ss%2Fw%22rd"),
        NOTIFICATIONS_DATABASE_DIRECT_URL=url(password="p%40ss%2Fw%22rd"),
        PGBOUNCER_MAX_DB_CONNECTIONS="12",
    )
    assert result.returncode == 0, result.stderr
    config = result.stdout
    assert (
        "app = host=db port=5432 dbname=app connect_query='SET statement_timeout = 10000'"
        in config.splitlines()
    )
    values = settings(config)
    assert values["max_db_connections"] == "12"  # the environment's, after the base's 25
    assert values["pool_mode"] == "transaction"
    auth_file = tmp_path / "run" / "userlist.txt"
    assert values["auth_file"] == str(auth_file)
    # Percent-decoded, a double quote doubled (the auth_file's escape); for its owner only.
    assert auth_file.read_text() == '"app" "p@ss/w""rd"\n'
    assert auth_file.stat().st_mode & 0o077 == 0
    assert "server_tls_sslmode" not in values


def test_several_users_tls_and_the_statement_timeout(tmp_path: Path) -> None:
    result = start(
        tmp_path,
        USERS_DATABASE_DIRECT_URL=url("users", "a", "db.internal", "?ssl=require"),
        ORDERS_DATABASE_DIRECT_URL=url("orders", "b", "db.internal:5432", "?sslmode=require"),
        PGBOUNCER_STATEMENT_TIMEOUT_MS="2500",
    )
    assert result.returncode == 0, result.stderr
    assert "connect_query='SET statement_timeout = 2500'" in result.stdout
    assert settings(result.stdout)["server_tls_sslmode"] == "require"
    lines = sorted((tmp_path / "run" / "userlist.txt").read_text().splitlines())
    assert lines == ['"orders" "b"', '"users" "a"']


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "no *_DATABASE_DIRECT_URL"),
        ({"USERS_DATABASE_DIRECT_URL": "postgresql://app@db/app"}, "has no password"),
        ({"USERS_DATABASE_DIRECT_URL": "redis://db:6379/0"}, "is not postgresql://"),
        (
            {"USERS_DATABASE_DIRECT_URL": url(), "ORDERS_DATABASE_DIRECT_URL": url(password="x")},
            "user app has different passwords",
        ),
        (
            {"USERS_DATABASE_DIRECT_URL": url(), "ORDERS_DATABASE_DIRECT_URL": url(host="db2")},
            "database app is on two servers",
        ),
        (
            {
                "USERS_DATABASE_DIRECT_URL": url(query="?ssl=require"),
                "ORDERS_DATABASE_DIRECT_URL": url(),
            },
            "different ssl modes",
        ),
        (
            {"USERS_DATABASE_DIRECT_URL": url(query="?ssl=verify-full")},
            "needs a CA bundle",
        ),
        ({"USERS_DATABASE_DIRECT_URL": url(user="a b")}, "has characters"),
        (
            {"USERS_DATABASE_DIRECT_URL": url(), "PGBOUNCER_MAX_CLIENT_CONN": "lots"},
            "PGBOUNCER_MAX_CLIENT_CONN is not a number",
        ),
        (
            {"USERS_DATABASE_DIRECT_URL": url(), "PGBOUNCER_LISTEN_PORT": "6432x"},
            "PGBOUNCER_LISTEN_PORT is not a number",
        ),
        (
            {"USERS_DATABASE_DIRECT_URL": url(), "PGBOUNCER_LISTEN_ADDR": "127.0.0.1\nx = 1"},
            "PGBOUNCER_LISTEN_ADDR has characters",
        ),
        (
            {"USERS_DATABASE_DIRECT_URL": url(), "PGBOUNCER_USER": "a b"},
            "PGBOUNCER_USER is not a user name",
        ),
    ],
)
def test_what_it_refuses_is_named(tmp_path: Path, env: dict[str, str], problem: str) -> None:
    result = start(tmp_path, PGBOUNCER_SERVER_TLS_CA_FILE=str(tmp_path / "no-ca.pem"), **env)
    assert result.returncode == 1, result.stdout
    assert problem in result.stderr


def test_where_it_listens_and_as_whom_come_from_the_environment(tmp_path: Path) -> None:
    result = start(
        tmp_path,
        USERS_DATABASE_DIRECT_URL=url(),
        PGBOUNCER_LISTEN_ADDR="127.0.0.1",
        PGBOUNCER_LISTEN_PORT="16432",
    )
    assert result.returncode == 0, result.stderr
    values = settings(result.stdout)
    assert (values["listen_addr"], values["listen_port"]) == ("127.0.0.1", "16432")
    unset = settings(start(tmp_path, USERS_DATABASE_DIRECT_URL=url()).stdout)
    assert (unset["listen_addr"], unset["listen_port"]) == ("*", "6432")  # the base's
    # Started as root, PgBouncer is told to switch user (its -u); echo shows its arguments.
    as_root = start(
        tmp_path, USERS_DATABASE_DIRECT_URL=url(), PGBOUNCER_USER="nobody", PGBOUNCER_BIN="echo"
    )
    assert as_root.stdout.split() == ["-u", "nobody", str(tmp_path / "run" / "pgbouncer.ini")]
    without = start(tmp_path, USERS_DATABASE_DIRECT_URL=url(), PGBOUNCER_BIN="echo")
    assert without.stdout.split() == [str(tmp_path / "run" / "pgbouncer.ini")]


# ---- the entry point running PgBouncer in front of Postgres -----------------------------------


@dataclass(frozen=True)
class Upstream:
    """A role with a password and a database of its own on the test Postgres."""

    user: str
    password: str
    host: str
    port: int
    database: str

    def direct_url(self) -> str:
        """As the services' <PREFIX>_DATABASE_DIRECT_URL: SQLAlchemy's scheme, encoded password."""
        return (
            f"postgresql+asyncpg://{self.user}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{self.database}"
        )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """The entry point demands a password in the URL, and the test Postgres' own user may have
    none (trust): a role of the test's, dropped after the database it can reach."""
    token = uuid.uuid4().hex[:10]
    user, password = f"pgbouncer_test_{token}", f"pw@{token}/x"
    await as_admin(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    try:
        async with throwaway_database() as database_url:
            where = urlsplit(database_url)
            yield Upstream(
                user,
                password,
                where.hostname or "127.0.0.1",
                where.port or 5432,
                where.path.lstrip("/"),
            )
    finally:
        await as_admin(f"DROP ROLE IF EXISTS {user}")


@pytest.fixture(scope="module")
def pgbouncer_binary() -> str:
    """scripts/pgbouncer.py's PgBouncer >= 1.21 (PGBOUNCER, PATH's, or .run/tools/bin's, built
    there once if missing). Skipped on a machine without the build's Debian packages (a fresh
    machine running the README's commands; CI installs them, .ci/run), as the browser tests
    are without Chromium; any other failure to build fails here."""
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(REPO / "scripts" / "pgbouncer.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    script = load_script(REPO / "scripts" / "pgbouncer.py", "pgbouncer_build")
    if result.returncode == script.NO_BUILD_TOOLS:
        pytest.skip(f"PgBouncer cannot be built here: {result.stderr.strip()}")
    if result.returncode != 0:
        pytest.fail(
            "PgBouncer >= 1.21 is needed, and scripts/pgbouncer.py could not build it "
            f"(Debian's archive, gcc, libevent's and OpenSSL's headers):\n{result.stderr.strip()}",
            pytrace=False,
        )
    return result.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.integration
async def test_pgbouncer_started_by_the_entry_point_serves_prepared_statements(
    tmp_path: Path, upstream: Upstream, pgbouncer_binary: str
) -> None:
    port, log_path = free_port(), tmp_path / "pgbouncer.log"
    env = {
        "PATH": "/usr/bin:/bin",
        "PGBOUNCER_RUN_DIR": str(tmp_path / "run"),
        "PGBOUNCER_BASE_CONFIG": str(BASE_INI),
        "PGBOUNCER_BIN": pgbouncer_binary,
        "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
        "PGBOUNCER_LISTEN_PORT": str(port),
        "PGBOUNCER_STATEMENT_TIMEOUT_MS": "4321",
        # Two services on one database with one user: one [databases] entry, one auth line.
        "USERS_DATABASE_DIRECT_URL": upstream.direct_url(),
        "ORDERS_DATABASE_DIRECT_URL": upstream.direct_url(),
    }
    if os.geteuid() == 0:  # PgBouncer refuses root; CI runs as root
        env["PGBOUNCER_USER"] = "nobody"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            BASH, str(ENTRYPOINT), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
    clients: list[asyncpg.Connection] = []

    def log_text() -> str:
        return log_path.read_text(errors="replace")

    async def listening() -> bool:
        assert process.returncode is None, f"PgBouncer exited:\n{log_text()}"
        return port_open(port)

    async def exited() -> int | None:
        return process.returncode

    try:
        await eventually(listening, timeout=10, what="PgBouncer listening")
        for _ in range(2):
            clients.append(
                await asyncpg.connect(
                    host="127.0.0.1",
                    port=port,
                    user=upstream.user,
                    password=upstream.password,  # SCRAM against the entry point's auth_file
                    database=upstream.database,
                    timeout=10,
                )
            )
        client, other = clients
        statement = await client.prepare("SELECT $1::int + 1 AS next, pg_backend_pid() AS pid")
        async with client.transaction():
            first = await statement.fetchrow(1)
        # The other client holds the one server connection the statement was prepared on, so
        # the second transaction gets a new one: PgBouncer prepares the statement there itself.
        async with other.transaction():
            held = await other.fetchval("SELECT pg_backend_pid()")
            async with client.transaction():
                second = await statement.fetchrow(2)
        assert (first["next"], second["next"]) == (2, 3)
        assert held == first["pid"] != second["pid"]
        # Each server connection ran connect_query.
        assert await client.fetchval("SHOW statement_timeout") == "4321ms"
        assert await other.fetchval("SHOW statement_timeout") == "4321ms"

        # SIGINT, the image's stop signal: it exits although both clients are still connected.
        process.send_signal(signal.SIGINT)
        code = await eventually(
            exited, lambda code: code is not None, timeout=10, what="PgBouncer exiting on SIGINT"
        )
        assert code == 0, log_text()
    finally:
        for connection in clients:
            connection.terminate()
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), timeout=10)


# ---- the configuration ------------------------------------------------------------------------


def test_the_base_configuration_pools_transactions_with_prepared_statements() -> None:
    parser = configparser.ConfigParser(comment_prefixes=(";",), interpolation=None)
    parser.read_string(BASE_INI.read_text())
    assert parser.sections() == ["pgbouncer"]  # the entry point appends to it
    base = parser["pgbouncer"]
    assert base["pool_mode"] == "transaction"
    assert int(base["max_prepared_statements"]) > 0
    assert base["server_reset_query"] == ""
    assert "statement_timeout" in [p.strip() for p in base["track_extra_parameters"].split(",")]
    assert base["listen_port"] == "6432"
    assert base["auth_type"] == "scram-sha-256"
    assert base["admin_users"] == ""
    assert base["stats_users"] == ""
    assert "auth_file" not in base  # the entry point's, in its run directory
    # Every client of every pod at the HPAs' and KEDA's maxima fits on one PgBouncer pod.
    defaults = ServiceSettings()
    api = defaults.db.pool_size + defaults.db.max_overflow
    worker = defaults.worker_db.pool_size + defaults.worker_db.max_overflow
    assert int(base["max_client_conn"]) >= len(SERVICES) * (6 * api + 10 * worker)


# ---- overlays/scale ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scale() -> list[Doc]:
    if not Path(KUBECTL).exists():
        pytest.fail("kubectl is needed to render the overlays (make k8s-check installs it)")
    result = subprocess.run(  # noqa: S603 - our own fixed command
        [KUBECTL, "kustomize", str(REPO / "deploy" / "k8s" / "overlays" / "scale")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = (d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    return found


def env_of(workload: Doc) -> dict[str, Doc]:
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def test_scale_runs_two_pgbouncers_behind_a_service(scale: list[Doc]) -> None:
    deployment = one(scale, "Deployment", "pgbouncer")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/shop/pgbouncer:0.1.0"
    assert container["ports"] == [{"name": "pgbouncer", "containerPort": 6432, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == "pgbouncer"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/run/pgbouncer" in mounts  # where the entry point writes (read-only root)
    service = one(scale, "Service", "pgbouncer")
    assert service["spec"]["ports"][0]["port"] == 6432
    assert one(scale, "PodDisruptionBudget", "pgbouncer")["spec"]["maxUnavailable"] == 1
    # Its upstreams: the services' own Secret keys.
    for service_name in SERVICES:
        key = f"{service_name.upper()}_DATABASE_DIRECT_URL"
        assert env_of(deployment)[key]["valueFrom"]["secretKeyRef"] == {
            "name": "app-credentials",
            "key": key,
        }


def test_scale_gives_every_workload_postgres_itself_for_sessions(scale: list[Doc]) -> None:
    for service_name in SERVICES:
        prefix = service_name.upper()
        for kind, name in (
            ("Deployment", f"{service_name}-api"),
            ("Deployment", f"{service_name}-worker"),
            ("Job", f"{service_name}-migrate"),
        ):
            env = env_of(one(scale, kind, name))
            assert f"{prefix}_DATABASE_URL" in env, name
            reference = env[f"{prefix}_DATABASE_DIRECT_URL"]["valueFrom"]["secretKeyRef"]
            assert reference == {"name": "app-credentials", "key": f"{prefix}_DATABASE_DIRECT_URL"}


def test_scale_statement_timeout_is_the_services_default(scale: list[Doc]) -> None:
    (config,) = (
        d
        for d in scale
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("pgbouncer-config-")
    )
    timeout = int(config["data"]["PGBOUNCER_STATEMENT_TIMEOUT_MS"])
    assert timeout == ServiceSettings().db.statement_timeout_ms
    checks = load_script(REPO / "scripts" / "deploy_checks.py", "deploy_checks")
    compose = checks.load_compose(
        [REPO / "deploy" / f for f in ("compose.yaml", "compose.pooled.yaml")]
    )
    pooled = compose["services"]["pgbouncer"]["environment"]
    assert int(pooled["PGBOUNCER_STATEMENT_TIMEOUT_MS"]) == timeout


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def test_scale_network_lets_the_services_reach_pgbouncer_and_it_postgres(
    scale: list[Doc],
) -> None:
    policies = [d for d in scale if d["kind"] == "NetworkPolicy"]
    pooler = one(scale, "Deployment", "pgbouncer")["spec"]["template"]["metadata"]["labels"]
    clients = [
        one(scale, "Deployment", f"{s}-{c}")["spec"]["template"]["metadata"]["labels"]
        for s in SERVICES
        for c in ("api", "worker")
    ]

    def allowed(direction: str, source: dict[str, str], port: int, peer: dict[str, str]) -> bool:
        for policy in policies:
            spec = policy["spec"]
            if direction.capitalize() not in spec.get("policyTypes", []):
                continue
            if not _selects(spec["podSelector"], source):
                continue
            for rule in spec.get(direction, []):
                peers = rule.get("to" if direction == "egress" else "from", [])
                ports = {p.get("port") for p in rule.get("ports", [])}
                hits = any(
                    "ipBlock" in p or _selects(p.get("podSelector", {}), peer) for p in peers
                )
                if hits and port in ports:
                    return True
        return False

    for client in clients:
        assert allowed("egress", client, 6432, pooler), client
        assert allowed("ingress", pooler, 6432, client), client
    assert allowed("egress", pooler, 5432, {})  # the managed Postgres (overlays/prod's ipBlock)
    migrate = one(scale, "Job", "users-migrate")["spec"]["template"]["metadata"]["labels"]
    assert not allowed("ingress", pooler, 6432, migrate)  # migrations go to Postgres itself


def _archive(path: Path, *members: tuple[str, str | None]) -> Path:
    """A .tar.gz of ``(name, link target or None for a small file)`` members."""
    with tarfile.open(path, "w:gz") as archive:
        for name, link in members:
            info = tarfile.TarInfo(name)
            if link is None:
                data = b"int main(void) { return 0; }\n"
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = tarfile.SYMTYPE, link
                archive.addfile(info)
    return path


@pytest.mark.parametrize("python_filter", [True, False], ids=["data-filter", "checked-by-hand"])
def test_the_source_is_unpacked_under_its_folder_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_filter: bool
) -> None:
    """With Python's ``data`` filter (3.11.4 and newer) and, where it is missing (Debian 12's
    3.11.2, what a fresh machine's uv picks), with the script's own checks: a source tree
    unpacks; a member or a link that leaves the folder is refused and nothing is written
    outside."""
    script = load_script(REPO / "scripts" / "pgbouncer.py", "pgbouncer_build")
    if not python_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = _archive(tmp_path / "good.tar.gz", ("src/main.c", None), ("src/link", "main.c"))
    with tarfile.open(good) as archive:
        script.extract(archive, tmp_path / "good")
    assert (tmp_path / "good" / "src" / "main.c").read_text().startswith("int main")

    escapes: dict[str, list[tuple[str, str | None]]] = {
        "parent": [("../escaped.c", None)],
        "link out": [("src/out", "../../..")],
    }
    for case, members in escapes.items():
        bad = _archive(tmp_path / "bad.tar.gz", *members)
        with tarfile.open(bad) as archive, pytest.raises(tarfile.TarError):
            script.extract(archive, tmp_path / case)
    assert not (tmp_path / "escaped.c").exists()
    # An absolute name is refused (by hand) or made relative (Python's filter): either way
    # nothing lands at that absolute path.
    absolute = _archive(tmp_path / "absolute.tar.gz", (str(tmp_path / "absolute.c"), None))
    with tarfile.open(absolute) as archive, contextlib.suppress(tarfile.TarError):
        script.extract(archive, tmp_path / "absolute")
    assert not (tmp_path / "absolute.c").exists()
