"""One OpenAPI document from the gateway's own and the three services' documents.

Paths keep their operations intact (operation ids, security, responses); each service's
operations carry their tags, and a service's operation without a tag gets the service's name.
Components that are identical across documents are kept once; a component that differs
under the same name is renamed ``<Service><Name>`` in that service's part, with every
reference to it. Security schemes of the same name and kind are one scheme. A proxied operation also
declares the gateway's own answer when its service does not answer in time (504; a service
down is a 503, which every operation already declares).
"""

import copy
from typing import Any

from common.openapi import problem_response
from gateway.upstreams import ROUTES

Document = dict[str, Any]
GATEWAY_STATUSES = (504,)
REF_PREFIX = "#/components/"


def _refs(value: Any) -> set[str]:
    """Every ``#/components/<section>/<name>`` referenced inside ``value``."""
    found: set[str] = set()
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX) :])
        for item in value.values():
            found |= _refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= _refs(item)
    return found


def _rewrite_refs(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        rewritten = {key: _rewrite_refs(item, renames) for key, item in value.items()}
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            key = ref[len(REF_PREFIX) :]
            if key in renames:
                rewritten["$ref"] = REF_PREFIX + renames[key]
        return rewritten
    if isinstance(value, list):
        return [_rewrite_refs(item, renames) for item in value]
    return value


def _same_scheme(left: Any, right: Any) -> bool:
    keys = ("type", "scheme", "in", "name")
    return (
        isinstance(left, dict)
        and isinstance(right, dict)
        and all(left.get(key) == right.get(key) for key in keys)
    )


def _conflicts(merged: Document, components: Document, source: str) -> dict[str, str]:
    """``section/name`` -> ``section/<Source><name>`` for every component of ``source`` that
    cannot share the merged one's name: it differs, or it refers to a renamed one."""
    renames: dict[str, str] = {}
    prefix = source[:1].upper() + source[1:]
    changed = True
    while changed:
        changed = False
        for section, entries in components.items():
            existing = merged.get(section, {})
            for name, value in entries.items():
                key = f"{section}/{name}"
                if key in renames or name not in existing:
                    continue
                same = (
                    _same_scheme(existing[name], value)
                    if section == "securitySchemes"
                    else existing[name] == value
                )
                if not same or _refs(value) & renames.keys():
                    renames[key] = f"{section}/{prefix}{name}"
                    changed = True
    return renames


def _rename_security(operation: Any, renames: dict[str, str]) -> None:
    if not isinstance(operation, dict) or "security" not in operation:
        return
    operation["security"] = [
        {
            renames.get(f"securitySchemes/{name}", f"securitySchemes/{name}").split("/", 1)[
                1
            ]: scopes
            for name, scopes in requirement.items()
        }
        for requirement in operation["security"]
    ]


def _add(merged: Document, source: str, document: Document, own_paths: bool) -> None:
    document = copy.deepcopy(document)
    components = document.get("components", {})
    renames = _conflicts(merged["components"], components, source)
    document = _rewrite_refs(document, renames)
    for section, entries in document.get("components", {}).items():
        target = merged["components"].setdefault(section, {})
        for name, value in entries.items():
            new_name = renames.get(f"{section}/{name}", f"{section}/{name}").split("/", 1)[1]
            target.setdefault(new_name, value)
    for path, item in document.get("paths", {}).items():
        first = path[1:].partition("/")[0]
        if (ROUTES.get(first) != source) != own_paths or path in merged["paths"]:
            continue  # another service's path, or a probe/docs path of the service itself
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation.setdefault("tags", [source])
                _rename_security(operation, renames)
                if not own_paths:
                    for status in GATEWAY_STATUSES:
                        operation["responses"].setdefault(str(status), problem_response(status))
        merged["paths"][path] = item
    known = {tag["name"] for tag in merged["tags"]}
    for tag in document.get("tags", []):
        if tag.get("name") not in known:
            merged["tags"].append(tag)
            known.add(tag.get("name"))
    if source not in known:
        merged["tags"].append({"name": source, "description": f"the {source} service"})


def merge_documents(gateway: Document, services: dict[str, Document]) -> Document:
    """The gateway's document (its own paths) with the services' (their public paths)."""
    merged: Document = {
        "openapi": gateway.get("openapi", "3.1.0"),
        "info": {
            "title": "shop API",
            "version": gateway.get("info", {}).get("version", "0.1.0"),
            "description": "Every public operation of the users, orders and notifications "
            "services, reached through the gateway, and the gateway's own composite reads.",
        },
        "paths": {},
        "components": {},
        "tags": [],
    }
    _add(merged, "gateway", gateway, own_paths=True)
    for source, document in services.items():
        _add(merged, source, document, own_paths=False)
    return merged
