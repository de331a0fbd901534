"""PgBouncer in the pooled deployments: its entry point, its configuration, and how overlays/scale
(components/pgbouncer) wires it between the services and Postgres.

The entry point (deploy/pgbouncer/entrypoint.sh) runs here with ``cat`` in place of PgBouncer, so
what it would start PgBouncer with is printed; no PgBouncer and no Postgres are needed. That
PgBouncer 1.24.1 accepts the result and serves the services' engine through it (prepared
statements, the statement timeout from connect_query) was checked by hand against a private
Postgres (deploy/README.md, "PgBouncer").
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import ServiceSettings
from common.testing.scripts import load_script

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
    ],
)
def test_what_it_refuses_is_named(tmp_path: Path, env: dict[str, str], problem: str) -> None:
    result = start(tmp_path, PGBOUNCER_SERVER_TLS_CA_FILE=str(tmp_path / "no-ca.pem"), **env)
    assert result.returncode == 1, result.stdout
    assert problem in result.stderr


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
