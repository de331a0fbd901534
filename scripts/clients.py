"""``make clients``: a typed Python client generated from the API's OpenAPI documents.

What a client team would do, done in the build so the documents cannot drift from what a
generated client needs: ``openapi-python-client`` (pinned in the workspace's dev group) turns
each document into a package under ``clients/`` (git-ignored, excluded from ruff; mypy reads
it only to check the code that uses it). tests/e2e drives orders through them and asserts on
their typed error objects.

The documents come from the apps themselves (no stack needed): the gateway's merged
document, built by the gateway's own merge from the four apps' documents, into one package
``api_client``; :data:`SOURCES` can name one package per service instead (one line).

Usage: python scripts/clients.py [OUTPUT_DIR]
"""

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from gateway.main import create_app as gateway_app
from gateway.openapi import merge_documents
from notifications.main import create_app as notifications_app
from orders.main import create_app as orders_app
from users.main import create_app as users_app

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = Path(sys.executable).parent / "openapi-python-client"

Document = Callable[[], dict[str, Any]]


def _service_documents() -> dict[str, Document]:
    """One client package per service: ``users_client``, ``orders_client``, ..."""
    return {
        "users_client": lambda: users_app().openapi(),
        "orders_client": lambda: orders_app().openapi(),
        "notifications_client": lambda: notifications_app().openapi(),
    }


def _gateway_document() -> dict[str, Document]:
    """The one document clients see through the gateway: ``api_client``."""
    services: dict[str, Callable[[], FastAPI]] = {
        "users": users_app,
        "orders": orders_app,
        "notifications": notifications_app,
    }

    def merged() -> dict[str, Any]:
        documents = {name: app().openapi() for name, app in services.items()}
        return merge_documents(gateway_app().openapi(), documents)

    return {"api_client": merged}


SOURCES: dict[str, Document] = _gateway_document()  # or _service_documents()


def generate(package: str, document: dict[str, Any], output: Path) -> None:
    """One package from one document; the generator's own formatting hooks are off (the
    folder is not linted, and they would run the repository's ruff settings on it)."""
    with tempfile.TemporaryDirectory() as scratch:
        spec = Path(scratch) / "openapi.json"
        spec.write_text(json.dumps(document))
        config = Path(scratch) / "config.json"
        config.write_text(json.dumps({"package_name_override": package, "post_hooks": []}))
        subprocess.run(  # noqa: S603 - the workspace's own generator, fixed arguments
            [
                str(GENERATOR),
                "generate",
                "--path",
                str(spec),
                "--config",
                str(config),
                "--meta",
                "none",
                "--output-path",
                str(output / package),
                "--overwrite",
                "--fail-on-warning",
            ],
            check=True,
            timeout=300,
        )


def main(argv: list[str]) -> int:
    output = Path(argv[0]) if argv else ROOT / "clients"
    output.mkdir(parents=True, exist_ok=True)
    for package, document in SOURCES.items():
        generate(package, document(), output)
        print(f"  {output / package}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
