"""POST/GET/DELETE /notifications/webhooks and .../deliveries: the HTTP contract."""

import base64
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from common.settings import with_changes
from common.testing.plugin import asgi_client
from notifications.context import NOTIFICATIONS
from notifications.main import create_app
from notifications.secretbox import MissingSecretKey, SecretBox

pytestmark = pytest.mark.integration


def problem_fields(response: httpx.Response, status: int) -> set[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return {error["field"] for error in body.get("errors", [])}


async def test_register_list_and_delete_a_webhook(client, new_user, clean_webhooks):
    user = await new_user()
    created = await client.post(
        "/notifications/webhooks",
        json={"url": "http://127.0.0.1:9/hooks"},
        headers=user.auth,
    )
    assert created.status_code == 201, created.text
    webhook = created.json()
    assert set(webhook) == {"id", "url", "created_at", "previous_secret_expires_at", "secret"}
    secret = webhook["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created.headers["location"] == f"/notifications/webhooks/{webhook['id']}"
    assert created.headers["cache-control"] == "no-store"

    second = await client.post(
        "/notifications/webhooks",
        json={"url": "https://127.0.0.1:9/other"},
        headers=user.auth,
    )
    assert second.status_code == 201
    first_page = await client.get("/notifications/webhooks?limit=1", headers=user.auth)
    assert first_page.status_code == 200
    assert [w["id"] for w in first_page.json()["items"]] == [second.json()["id"]]  # newest first
    assert "secret" not in first_page.json()["items"][0]  # shown once, never listed
    assert second.json()["secret"] != secret  # generated, never reused
    next_page = await client.get(
        "/notifications/webhooks",
        params={"limit": 1, "cursor": first_page.json()["next_cursor"]},
        headers=user.auth,
    )
    assert [w["id"] for w in next_page.json()["items"]] == [webhook["id"]]
    assert next_page.json()["next_cursor"] is None

    deleted = await client.delete(f"/notifications/webhooks/{webhook['id']}", headers=user.auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    listed = await client.get("/notifications/webhooks", headers=user.auth)
    assert [w["id"] for w in listed.json()["items"]] == [second.json()["id"]]
    assert "whsec_" not in listed.text
    again = await client.delete(f"/notifications/webhooks/{webhook['id']}", headers=user.auth)
    assert problem_fields(again, 404) == set()


async def test_another_users_webhook_is_404(client, new_user, clean_webhooks):
    owner, stranger = await new_user(), await new_user()
    created = await client.post(
        "/notifications/webhooks",
        json={"url": "http://127.0.0.1:9/hooks"},
        headers=owner.auth,
    )
    webhook_id = created.json()["id"]

    listed = await client.get("/notifications/webhooks", headers=stranger.auth)
    assert listed.json()["items"] == []
    deliveries = await client.get(
        f"/notifications/webhooks/{webhook_id}/deliveries", headers=stranger.auth
    )
    problem_fields(deliveries, 404)
    deleted = await client.delete(f"/notifications/webhooks/{webhook_id}", headers=stranger.auth)
    problem_fields(deleted, 404)
    rotated = await client.post(
        f"/notifications/webhooks/{webhook_id}/rotate-secret", headers=stranger.auth
    )
    problem_fields(rotated, 404)
    unknown = await client.get(
        f"/notifications/webhooks/{uuid.uuid4()}/deliveries", headers=owner.auth
    )
    problem_fields(unknown, 404)
    still = await client.get(f"/notifications/webhooks/{webhook_id}/deliveries", headers=owner.auth)
    assert still.status_code == 200
    assert still.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # The server generates secrets: one in the request is refused, not silently ignored.
        ({"url": "http://127.0.0.1:9/hooks", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZI"}, "secret"),
        ({"url": "ftp://127.0.0.1/hooks"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/hooks"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://"}, "url"),
        ({}, "url"),
    ],
)
async def test_invalid_webhooks_are_422_naming_the_field(client, new_user, body, field):
    user = await new_user()
    response = await client.post("/notifications/webhooks", json=body, headers=user.auth)
    assert problem_fields(response, 422) == {field}


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://a..b/", "empty label"),
        ("http://.example.com/", "empty label"),
        ("http://xn--/", "hyphen"),
        ("http://xn--a/", "IDNA"),
        (f"http://{'a' * 64}.example.com/", "longer than 63"),
        (f"http://{'a.' * 127}com/", "longer than 253"),
        ("http://a\u00adb.example.com/", "IDNA"),  # a soft hyphen
        ("http://-a.example.com/", "hyphen"),
        ("http://a!b.example.com/", "character"),
    ],
)
async def test_an_unusable_host_is_a_422_naming_the_rule_on_a_live_connection(
    client, new_user, url, rule
):
    """Defect 5: these were a 500 and a reset keep-alive connection."""
    user = await new_user()
    response = await client.post("/notifications/webhooks", json={"url": url}, headers=user.auth)
    assert problem_fields(response, 422) == {"url"}
    assert rule in response.json()["errors"][0]["message"]
    # The same keep-alive connection still answers.
    assert (await client.get("/notifications/webhooks", headers=user.auth)).status_code == 200


async def test_a_refused_internal_name_does_not_tell_its_address(notifications_settings, new_user):
    settings = with_changes(notifications_settings, webhook={"allow_private_targets": False})
    user = await new_user()
    async with asgi_client(create_app(settings)) as strict:
        response = await strict.post(
            "/notifications/webhooks", json={"url": "http://localhost/x"}, headers=user.auth
        )
    assert problem_fields(response, 422) == {"url"}
    assert "127.0.0.1" not in response.text
    assert "::1" not in response.text


async def test_webhooks_need_a_token(client):
    response = await client.post("/notifications/webhooks", json={"url": "http://127.0.0.1:9/"})
    problem_fields(response, 401)
    problem_fields(await client.get("/notifications/webhooks"), 401)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://localhost:8080/hooks",
        "https://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://172.16.5.4/hooks",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata: link-local
        "http://100.64.0.1/hooks",  # carrier-grade NAT
        "http://[::1]/hooks",
        "http://[fe80::1]/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::1]/hooks",  # 6to4 of 127.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/hooks",  # Teredo, client 10.0.0.1
        "http://[::a00:1]/hooks",  # IPv4-compatible 10.0.0.1
        "http://0.0.0.0/hooks",
        "http://does-not-resolve.invalid/hooks",
    ],
)
async def test_private_loopback_and_link_local_targets_are_refused_unless_allowed(
    notifications_settings, new_user, url
):
    settings = with_changes(notifications_settings, webhook={"allow_private_targets": False})
    user = await new_user()
    async with asgi_client(create_app(settings)) as strict:
        response = await strict.post(
            "/notifications/webhooks", json={"url": url}, headers=user.auth
        )
    assert problem_fields(response, 422) == {"url"}
    assert "url" in response.json()["detail"]


async def test_a_user_has_a_bounded_number_of_webhooks(notifications_settings, new_user):
    settings = with_changes(notifications_settings, webhook={"max_per_user": 2})
    user = await new_user()
    async with asgi_client(create_app(settings)) as limited:
        statuses = [
            (
                await limited.post(
                    "/notifications/webhooks",
                    json={"url": f"http://127.0.0.1:9/{n}"},
                    headers=user.auth,
                )
            ).status_code
            for n in range(3)
        ]
    assert statuses == [201, 201, 409]


async def test_secrets_are_stored_encrypted_and_rotation_answers_a_new_one_once(
    client, new_user, clean_webhooks, database, api
):
    user = await new_user()
    created = (
        await client.post(
            "/notifications/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=user.auth
        )
    ).json()
    secret = created["secret"]

    async def stored() -> dict[str, Any]:
        async with database.session() as session:
            row = await session.execute(
                text("SELECT * FROM notifications.webhooks WHERE id = :id"), {"id": created["id"]}
            )
            return dict(row.mappings().one())

    row = await stored()
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    for value in row.values():
        text_value = str(value)
        assert secret not in text_value
        assert secret.removeprefix("whsec_") not in text_value
        assert raw.hex() not in text_value
    box: SecretBox = NOTIFICATIONS.of(api.app).secret_box
    assert box.decrypt(row["secret_ciphertext"]) == secret
    assert row["previous_secret_ciphertext"] is None

    rotated = await client.post(
        f"/notifications/webhooks/{created['id']}/rotate-secret", headers=user.auth
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    body = rotated.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != secret
    row = await stored()
    assert box.decrypt(row["secret_ciphertext"]) == body["secret"]
    assert box.decrypt(row["previous_secret_ciphertext"]) == secret
    assert row["previous_secret_expires_at"] is not None
    listed = await client.get("/notifications/webhooks", headers=user.auth)
    [shown] = listed.json()["items"]
    assert "secret" not in shown
    assert shown["previous_secret_expires_at"] == body["previous_secret_expires_at"]

    unknown = await client.post(
        f"/notifications/webhooks/{uuid.uuid4()}/rotate-secret", headers=user.auth
    )
    problem_fields(unknown, 404)


async def test_the_api_refuses_to_start_without_a_webhook_key(notifications_settings):
    """Defect 11: without a key it started, encrypting with the key in this repository."""
    settings = with_changes(notifications_settings, webhook={"secret_key": None})
    with pytest.raises(MissingSecretKey):
        async with asgi_client(create_app(settings)):
            pass
