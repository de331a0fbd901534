"""Merging the services' documents: paths kept whole, components deduplicated or renamed
with their references, one security scheme."""

from typing import Any

from gateway.openapi import merge_documents


def problem(detail_type: str = "string") -> dict[str, Any]:
    return {"type": "object", "properties": {"detail": {"type": detail_type}}}


def document(path: str, schema: str, schemas: dict[str, Any], tag: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": tag, "version": "1"},
        "paths": {
            path: {
                "get": {
                    "operationId": f"{tag}_get",
                    "tags": [tag],
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": f"#/components/schemas/{schema}"}
                                }
                            }
                        }
                    },
                }
            },
            "/healthz": {"get": {"operationId": f"{tag}_healthz", "responses": {}}},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": f"{tag} token"}
            },
        },
    }


def test_identical_components_are_kept_once_and_differing_ones_renamed_with_their_refs():
    users = document(
        "/users/me", "User", {"User": {"type": "object"}, "Problem": problem()}, "users"
    )
    orders = document(
        "/orders",
        "Page",
        {
            "Page": {
                "type": "object",
                "properties": {"p": {"$ref": "#/components/schemas/Problem"}},
            },
            "Problem": problem("integer"),  # same name, another shape
        },
        "orders",
    )
    notifications = document("/notifications", "Problem", {"Problem": problem()}, "notifications")
    gateway = {"openapi": "3.1.0", "info": {"version": "1"}, "paths": {}, "components": {}}

    merged = merge_documents(
        gateway, {"users": users, "orders": orders, "notifications": notifications}
    )

    schemas = merged["components"]["schemas"]
    assert schemas["Problem"] == problem()
    assert schemas["OrdersProblem"] == problem("integer")
    # Page (no conflict, its name kept) refers to the renamed Problem.
    assert schemas["Page"]["properties"]["p"]["$ref"] == "#/components/schemas/OrdersProblem"
    ref = merged["paths"]["/orders"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ref["schema"]["$ref"] == "#/components/schemas/Page"
    # notifications' Problem is users' Problem: kept once, referred to by its own name.
    notes = merged["paths"]["/notifications"]["get"]["responses"]["200"]
    assert notes["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Problem"


def test_a_component_equal_by_name_and_shape_but_referring_to_a_renamed_one_is_renamed():
    page = {"type": "object", "properties": {"p": {"$ref": "#/components/schemas/Problem"}}}
    users = document("/users/me", "Page", {"Page": page, "Problem": problem()}, "users")
    orders = document("/orders", "Page", {"Page": page, "Problem": problem("integer")}, "orders")

    merged = merge_documents({"paths": {}}, {"users": users, "orders": orders})

    schemas = merged["components"]["schemas"]
    assert schemas["OrdersPage"]["properties"]["p"]["$ref"] == "#/components/schemas/OrdersProblem"
    assert schemas["Page"]["properties"]["p"]["$ref"] == "#/components/schemas/Problem"
    ref = merged["paths"]["/orders"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ref["schema"]["$ref"] == "#/components/schemas/OrdersPage"


def test_one_security_scheme_paths_intact_and_probes_left_out():
    users = document("/users/me", "User", {"User": {"type": "object"}}, "users")
    orders = document("/orders", "Order", {"Order": {"type": "object"}}, "orders")
    gateway = {
        "openapi": "3.1.0",
        "info": {"version": "1"},
        "paths": {"/me/overview": {"get": {"operationId": "gateway_overview", "responses": {}}}},
    }

    merged = merge_documents(gateway, {"users": users, "orders": orders})

    assert list(merged["components"]["securitySchemes"]) == ["bearer"]
    assert set(merged["paths"]) == {"/me/overview", "/users/me", "/orders"}
    assert merged["paths"]["/orders"]["get"]["operationId"] == "orders_get"
    assert merged["paths"]["/orders"]["get"]["security"] == [{"bearer": []}]
    assert {"users", "orders", "gateway"} <= {tag["name"] for tag in merged["tags"]}


def test_admin_paths_belong_to_orders():
    orders = document("/admin/sagas", "Saga", {"Saga": {"type": "object"}}, "admin")
    users = document("/admin/other", "User", {"User": {"type": "object"}}, "users")
    merged = merge_documents({"paths": {}}, {"orders": orders, "users": users})
    assert merged["paths"]["/admin/sagas"]["get"]["operationId"] == "admin_get"
    assert "/admin/other" not in merged["paths"]  # the users service does not own /admin
