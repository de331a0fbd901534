"""The operator API over HTTP against real Postgres and Redis: who may call it, the saga list's
filters and pages, retry and compensate, dead letters listed and redriven, the audit log."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update

from common.auth import create_session, hash_token
from common.bus.deadletters import dead_letter, list_dead_letters
from common.bus.envelope import Envelope
from common.bus.held import hold, newer_than_known
from common.bus.streams import ensure_group, stream_key
from common.contracts import NotificationKind, ReserveCredit
from common.db import Database
from common.logging import event_id_var
from common.settings import with_changes
from common.testing.plugin import asgi_client
from common.testing.replies import credit_reserved, notification_recorded
from orders import saga, service
from orders.main import create_app
from orders.models import OperatorAudit, Saga
from orders.schemas import OrderCreate, OrderItem
from orders.settings import Settings

pytestmark = pytest.mark.integration

TOKEN = "operator-token-for-tests-" + "x" * 20
PREFIX = "admin-api-test:"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def admin_settings(orders_settings: Settings) -> Settings:
    return with_changes(
        orders_settings,
        operator={
            "tokens": f"tester:{hash_token(TOKEN)},other:{hash_token('other-token')}",
            "cookie_secure": False,
        },
        bus={"stream_prefix": PREFIX},
        rate_limit={"enabled": False},
    )


@pytest.fixture(scope="module")
async def client(admin_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(admin_settings)) as http:
        yield http


@pytest.fixture(scope="module")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def place(db: Database, settings: Settings, cents: int = 100) -> uuid.UUID:
    body = OrderCreate(items=[OrderItem(sku="sku", quantity=1, unit_price_cents=cents)])
    async with db.transaction() as uow:
        placed = await service.place_order(uow, settings, uuid.uuid4(), body, None)
    return placed.order.id


async def time_out(db: Database, settings: Settings, order_id: uuid.UUID) -> None:
    """Let the order's credit deadline pass, its re-sends spent: the saga compensates it
    (reason timeout) and waits for the release."""
    settings = with_changes(settings, saga={"max_resends": 0})
    async with db.transaction() as uow:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await uow.session.execute(
            update(Saga).where(Saga.order_id == order_id).values(deadline_at=past)
        )
    async with db.transaction() as uow:
        await service.handle_event(uow, settings, order_id, saga.DeadlinePassed())


async def age(db: Database, order_id: uuid.UUID, seconds: int) -> None:
    async with db.transaction() as uow:
        then = datetime.now(UTC) - timedelta(seconds=seconds)
        await uow.session.execute(
            update(Saga).where(Saga.order_id == order_id).values(created_at=then)
        )


async def audit_rows(db: Database, target: str) -> list[OperatorAudit]:
    async with db.session() as session:
        statement = (
            select(OperatorAudit).where(OperatorAudit.target == target).order_by(OperatorAudit.at)
        )
        return list((await session.scalars(statement)).all())


async def all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(path, params=query, headers=OPERATOR)).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination never ended")


# -- who may call it ------------------------------------------------------------------------

# Fixed, so that test ids are the same in every process (pytest-xdist compares them).
UNKNOWN_ORDER = uuid.UUID("00000000-0000-4000-8000-000000000404")

ADMIN_CALLS = [
    ("GET", "/admin/sagas"),
    ("GET", f"/admin/sagas/{UNKNOWN_ORDER}"),
    ("POST", f"/admin/sagas/{UNKNOWN_ORDER}/retry"),
    ("POST", f"/admin/sagas/{UNKNOWN_ORDER}/compensate"),
    ("GET", "/admin/dead-letters"),
    ("GET", "/admin/dead-letters/1-0"),
    ("POST", "/admin/dead-letters/redrive"),
    ("GET", "/admin/held-messages"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/"),
    ("GET", "/admin/ui/audit"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
async def test_a_customer_token_is_forbidden_everywhere_under_admin(
    client: httpx.AsyncClient, redis: Redis, method: str, path: str
):
    customer = await create_session(redis, uuid.uuid4(), ttl_seconds=600)
    response = await client.request(
        method, path, headers={"Authorization": f"Bearer {customer.token}"}, json={"ids": ["1-0"]}
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("method", "path"), [c for c in ADMIN_CALLS if "/ui" not in c[1]][:-1])
async def test_no_token_or_an_unknown_one_is_401_problem(
    client: httpx.AsyncClient, method: str, path: str
):
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = await client.request(method, path, headers=headers, json={"ids": ["1-0"]})
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 401


async def test_the_console_sends_a_visitor_without_a_session_to_its_login_page(
    client: httpx.AsyncClient,
):
    response = await client.get("/admin/ui/audit?cursor=x", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=%2Fadmin%2Fui%2Faudit%3Fcursor%3Dx"
    login = await client.get(response.headers["location"])
    assert login.status_code == 200
    assert 'name="token"' in login.text


def test_operator_tokens_are_configured_as_hashes_only():
    with pytest.raises(ValueError, match="name:<64 hex digits>"):
        Settings(operator={"tokens": "alice:plaintext-token"})
    assert Settings(operator={"tokens": f" a:{'0' * 64}, b.c:{'f' * 64} "}).operator_hashes() == {
        "a": "0" * 64,
        "b.c": "f" * 64,
    }
    assert Settings().operator.cookie_secure  # secure by default


# -- sagas ----------------------------------------------------------------------------------


async def test_sagas_are_filtered_by_state_reason_and_age(
    client: httpx.AsyncClient, orders_db: Database, orders_settings: Settings
):
    timed_out = await place(orders_db, orders_settings)
    await time_out(orders_db, orders_settings, timed_out)
    fresh = await place(orders_db, orders_settings)
    old = await place(orders_db, orders_settings)
    await age(orders_db, old, 3600)

    by_reason = await all_pages(client, "/admin/sagas", reason="timeout", limit=100)
    assert timed_out in {uuid.UUID(s["order_id"]) for s in by_reason}
    assert {(s["order_status"], s["rejection_reason"]) for s in by_reason} == {
        ("REJECTED", "timeout")
    }

    waiting = {
        uuid.UUID(s["order_id"])
        for s in await all_pages(client, "/admin/sagas", state="awaiting_credit", limit=100)
    }
    assert {fresh, old} <= waiting
    assert timed_out not in waiting

    older = {
        uuid.UUID(s["order_id"])
        for s in await all_pages(client, "/admin/sagas", older_than_seconds=1800, limit=100)
    }
    assert old in older
    assert fresh not in older
    assert timed_out not in older


async def test_saga_pages_walk_every_saga_once_newest_first(
    client: httpx.AsyncClient, orders_db: Database, orders_settings: Settings
):
    placed = [await place(orders_db, orders_settings) for _ in range(5)]
    walked = await all_pages(client, "/admin/sagas", state="awaiting_credit", limit=2)
    ids = [uuid.UUID(s["order_id"]) for s in walked]
    assert len(ids) == len(set(ids))
    assert set(placed) <= set(ids)
    keys = [(s["created_at"], s["order_id"]) for s in walked]
    assert keys == sorted(keys, reverse=True)
    first = (await client.get("/admin/sagas?limit=2", headers=OPERATOR)).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]

    bad = await client.get("/admin/sagas?cursor=garbage", headers=OPERATOR)
    assert bad.status_code == 400
    bad = await client.get("/admin/sagas?state=lost", headers=OPERATOR)
    assert bad.status_code == 422
    bad = await client.get("/admin/sagas", params={"reason": "time\x00out"}, headers=OPERATOR)
    assert bad.status_code == 422


async def test_the_timeline_shows_steps_message_ids_deadline_and_late_replies(
    client: httpx.AsyncClient, orders_db: Database, orders_settings: Settings
):
    order_id = await place(orders_db, orders_settings)
    await time_out(orders_db, orders_settings, order_id)
    reply_id = str(uuid.uuid4())
    token = event_id_var.set(reply_id)  # as the consumer sets it while handling the reply
    try:
        async with orders_db.transaction() as uow:  # the credit reply comes after all
            await service.handle_event(uow, orders_settings, order_id, credit_reserved(order_id))
    finally:
        event_id_var.reset(token)

    response = await client.get(f"/admin/sagas/{order_id}", headers=OPERATOR)
    assert response.status_code == 200
    timeline = response.json()
    steps = [(s["name"], s["status"], s["message_type"]) for s in timeline["steps"]]
    assert steps == [
        ("reserve_credit", "started", "users.ReserveCredit"),
        ("reserve_credit", "timed_out", None),
        ("release_credit", "started", "users.ReleaseCredit"),
        ("reserve_credit", "late_reply_compensated", "users.ReleaseCredit"),
    ]
    sent = [s for s in timeline["steps"] if s["message_type"]]
    assert all(uuid.UUID(s["message_id"]) for s in sent)
    assert timeline["late_replies"] == 1
    assert [s["cause_id"] for s in timeline["steps"]] == [None, None, None, reply_id]
    assert timeline["state"] == "compensating"
    assert timeline["steps"][-1]["kind"] == "late_reply"
    assert timeline["deadline_at"] is not None
    assert (timeline["order_status"], timeline["rejection_reason"]) == ("REJECTED", "timeout")

    missing = await client.get(f"/admin/sagas/{uuid.uuid4()}", headers=OPERATOR)
    assert missing.status_code == 404


async def test_the_api_and_the_console_show_each_saga_s_definition_version(
    client: httpx.AsyncClient, orders_db: Database, orders_settings: Settings
):
    old = await place(orders_db, orders_settings)
    version_2 = with_changes(orders_settings, saga={"definition_version": 2})
    new = await place(orders_db, version_2)
    async with orders_db.transaction() as uow:  # a later release's worker handles the reply
        await service.handle_event(uow, version_2, new, credit_reserved(new))

    for order_id, version, waiting_for in ((old, 1, "reserve_credit"), (new, 2, "check_stock")):
        timeline = (await client.get(f"/admin/sagas/{order_id}", headers=OPERATOR)).json()
        assert (timeline["definition_version"], timeline["waiting_for"]) == (version, waiting_for)
        assert timeline["compensable"]  # a PENDING order on a forward step

    await client.post("/admin/login", data={"token": TOKEN})
    page = await client.get(f"/admin/ui/sagas/{new}")
    assert "waiting on <strong>check_stock</strong>" in page.text
    assert "<dt>Definition</dt><dd>version 2</dd>" in page.text
    listing = await client.get("/admin/", params={"state": "awaiting_stock"})
    assert str(new) in listing.text
    assert "<td>v2</td>" in listing.text
    assert str(old) not in listing.text


async def _on_stream(redis: Redis, stream: str, message_id: str) -> bool:
    for _, fields in await redis.xrange(stream) or []:
        if Envelope.from_fields(fields or {}).id == uuid.UUID(message_id):
            return True
    return False


async def test_retry_resends_the_current_command_restarts_the_deadline_and_is_audited(
    client: httpx.AsyncClient, orders_db: Database, orders_settings: Settings, redis: Redis
):
    order_id = await place(orders_db, orders_settings)
    before = (await client.get(f"/admin/sagas/{order_id}", headers=OPERATOR)).json()

    response = await client.post(f"/admin/sagas/{order_id}/retry", headers=OPERATOR)

    assert response.status_code == 200
    after = response.json()["saga"]
    last = after["steps"][-1]
    assert (last["name"], last["status"], last["detail"], last["kind"]) == (
        "reserve_credit",
        "retried",
        "operator",
        "resend",
    )
    assert after["resends"] == 1
    assert after["deadline_at"] > before["deadline_at"]
    # The relay of the API sent the command right after the commit, under its own id.
    stream = stream_key(PREFIX, ReserveCredit.STREAM)
    for _ in range(100):
        if await _on_stream(redis, stream, last["message_id"]):
            break
        await redis.xread({stream: "$"}, block=50)
    else:
        raise AssertionError("the re-sent ReserveCredit never reached its stream")
    [row] = await audit_rows(orders_db, f"order:{order_id}")
    assert (row.operator, row.action, row.outcome) == ("tester", "saga.retry", "ok")
    assert row.id == uuid.UUID(response.json()["audit_id"])


async def test_retrying_a_settled_saga_is_409_and_the_refusal_is_audited(
    client: httpx.AsyncClient, orders_db: Database, orders_settings: Settings
):
    order_id = await place(orders_db, orders_settings)
    async with orders_db.transaction() as uow:
        await service.handle_event(uow, orders_settings, order_id, credit_reserved(order_id))
        await service.handle_event(
            uow,
            orders_settings,
            order_id,
            notification_recorded(order_id, NotificationKind.ORDER_APPROVED),
        )

    response = await client.post(f"/admin/sagas/{order_id}/retry", headers=OPERATOR)

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    [row] = await audit_rows(orders_db, f"order:{order_id}")
    assert (row.action, row.outcome) == ("saga.retry", "refused")
    assert str(row.id) == response.json()["audit_id"]


async def test_compensation_rejects_a_pending_order_and_releases_its_credit_once(
    client: httpx.AsyncClient, orders_db: Database, orders_settings: Settings
):
    order_id = await place(orders_db, orders_settings)

    response = await client.post(f"/admin/sagas/{order_id}/compensate", headers=OPERATOR)

    assert response.status_code == 200
    timeline = response.json()["saga"]
    assert (timeline["order_status"], timeline["rejection_reason"]) == ("REJECTED", "operator")
    sent = [s["message_type"] for s in timeline["steps"] if s["message_type"]]
    assert sent == ["users.ReserveCredit", "users.ReleaseCredit"]  # the rejection, once released
    assert timeline["state"] == "compensating"

    again = await client.post(f"/admin/sagas/{order_id}/compensate", headers=OPERATOR)
    assert again.status_code == 409
    outcomes = [(r.action, r.outcome) for r in await audit_rows(orders_db, f"order:{order_id}")]
    assert outcomes == [("saga.compensate", "ok"), ("saga.compensate", "refused")]
    missing = await client.post(f"/admin/sagas/{uuid.uuid4()}/compensate", headers=OPERATOR)
    assert missing.status_code == 404


# -- dead letters ---------------------------------------------------------------------------


async def make_dead_letter(redis: Redis, message_type: str, stream: str = "orders.commands") -> str:
    envelope = {
        "id": str(uuid.uuid4()),
        "type": message_type,
        "source": "test",
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": "corr-" + uuid.uuid4().hex[:8],
        "payload": {},
    }
    return await dead_letter(
        redis,
        prefix=PREFIX,
        stream=stream_key(PREFIX, stream),
        group="test-group",
        entry_id="1-1",
        consumer="test-consumer",
        message_type=message_type,
        attempts=5,
        error="Traceback: it broke",
        envelope=json.dumps(envelope),
    )


async def test_dead_letters_are_listed_by_type_in_pages_and_inspected(
    client: httpx.AsyncClient, redis: Redis
):
    kind = f"test.Listed{uuid.uuid4().hex[:6]}"
    made = [await make_dead_letter(redis, kind) for _ in range(3)]
    await make_dead_letter(redis, "test.Other")

    walked = await all_pages(client, "/admin/dead-letters", type=kind, limit=2)
    assert [d["id"] for d in walked] == list(reversed(made))  # newest first, each once
    assert {d["type"] for d in walked} == {kind}

    detail = await client.get(f"/admin/dead-letters/{made[0]}", headers=OPERATOR)
    assert detail.status_code == 200
    body = detail.json()
    assert body["envelope"]["type"] == kind
    assert body["message_id"] == body["envelope"]["id"]
    assert body["error"] == "Traceback: it broke"
    assert (await client.get("/admin/dead-letters/1-0", headers=OPERATOR)).status_code == 404
    bad = await client.get("/admin/dead-letters?cursor=nope", headers=OPERATOR)
    assert bad.status_code == 400


async def test_redrive_by_ids_counts_what_was_redriven_and_says_why_the_rest_failed(
    client: httpx.AsyncClient, redis: Redis, orders_db: Database
):
    letter = await make_dead_letter(redis, "test.ById")
    response = await client.post(
        "/admin/dead-letters/redrive", json={"ids": [letter, "1-0"]}, headers=OPERATOR
    )
    assert response.status_code == 200
    result = response.json()
    assert (result["matched"], result["redriven"], result["failed_count"]) == (2, 1, 1)
    assert result["failed"] == [
        {"id": "1-0", "reason": "not found (redriven already, or never was)"}
    ]
    [redriven] = result["redriven_ids"]
    entries = await redis.xrange(
        stream_key(PREFIX, "orders.commands"), min=redriven["new_entry_id"], max="+"
    )
    assert entries
    assert Envelope.from_fields(entries[0][1] or {}).type == "test.ById"
    assert letter not in {d.id for d in await list_dead_letters(redis, prefix=PREFIX)}

    async with orders_db.session() as session:
        row = await session.get(OperatorAudit, uuid.UUID(result["audit_id"]))
    assert row is not None
    assert (row.operator, row.action, row.outcome) == ("tester", "dead_letters.redrive", "partial")
    assert row.detail["redriven"] == 1

    again = await client.post(
        "/admin/dead-letters/redrive", json={"ids": [letter]}, headers=OPERATOR
    )
    assert (again.json()["redriven"], again.json()["failed_count"]) == (0, 1)


async def test_redrive_by_filter_takes_every_match_and_nothing_else(
    client: httpx.AsyncClient, redis: Redis
):
    kind = f"test.Bulk{uuid.uuid4().hex[:6]}"
    made = {await make_dead_letter(redis, kind) for _ in range(3)}
    other = await make_dead_letter(redis, "test.Kept")

    response = await client.post(
        "/admin/dead-letters/redrive", json={"filter": {"type": kind}}, headers=OPERATOR
    )
    result = response.json()
    assert (result["matched"], result["redriven"], result["failed"]) == (3, 3, [])
    assert {r["id"] for r in result["redriven_ids"]} == made
    left = {d.id for d in await list_dead_letters(redis, prefix=PREFIX, limit=1000)}
    assert other in left
    assert not made & left

    for body in ({}, {"ids": ["1-0"], "filter": {}}, {"ids": ["x"]}, {"filter": {"typo": 1}}):
        response = await client.post("/admin/dead-letters/redrive", json=body, headers=OPERATOR)
        assert response.status_code == 422, body


# -- audit ----------------------------------------------------------------------------------


async def test_the_audit_log_lists_every_action_newest_first_with_who(
    client: httpx.AsyncClient, redis: Redis
):
    letter = await make_dead_letter(redis, "test.Audited")
    other = {"Authorization": "Bearer other-token"}
    await client.post("/admin/dead-letters/redrive", json={"ids": [letter]}, headers=other)

    page = (await client.get("/admin/audit?limit=1", headers=OPERATOR)).json()
    [latest] = page["items"]
    assert (latest["operator"], latest["action"], latest["outcome"]) == (
        "other",
        "dead_letters.redrive",
        "ok",
    )
    assert page["next_cursor"]
    entries = await all_pages(client, "/admin/audit", limit=3)
    keys = [(e["at"], e["id"]) for e in entries]
    assert keys == sorted(keys, reverse=True)
    assert len({e["id"] for e in entries}) == len(entries)
    mine = await all_pages(client, "/admin/audit", operator="other")
    assert [e["target"] for e in mine] == [f"dead-letters:{letter}"]


async def test_the_database_view_lists_the_partitioned_tables_of_every_schema(
    client: httpx.AsyncClient,
):
    assert (await client.get("/admin/database")).status_code == 401
    tables = {t["table"]: t for t in (await client.get("/admin/database", headers=OPERATOR)).json()}
    assert {"orders.saga_steps", "orders.operator_audit", "orders.inbox"} <= set(tables)
    steps = tables["orders.saga_steps"]
    assert steps["partitions"] >= 2  # this month's and the default one
    assert steps["ahead_seconds"] > 86_400
    assert steps["default_rows"] == 0


# -- the console's forms --------------------------------------------------------------------


async def test_console_login_sets_a_strict_httponly_cookie_and_forms_need_the_csrf_token(
    client: httpx.AsyncClient, redis: Redis
):
    customer = await create_session(redis, uuid.uuid4(), ttl_seconds=600)
    refused = await client.post("/admin/login", data={"token": customer.token})
    assert refused.status_code == 401
    assert "set-cookie" not in refused.headers

    response = await client.post(
        "/admin/login", data={"token": TOKEN, "next": "//evil.example/"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/"  # never off-site
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/admin" in cookie
    assert TOKEN not in (await client.get("/admin/")).text  # the page never shows the token

    letter = await make_dead_letter(redis, "test.Csrf")
    forged = await client.post("/admin/ui/dead-letters/redrive", data={"id": letter})
    assert forged.status_code == 403
    cross_site = await client.post(
        "/admin/ui/dead-letters/redrive",
        data={"id": letter, "csrf_token": "whatever"},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert letter in {d.id for d in await list_dead_letters(redis, prefix=PREFIX, limit=1000)}
    client.cookies.clear()


async def test_a_message_held_for_a_newer_version_is_listed_until_it_is_handled(
    client: httpx.AsyncClient, redis: Redis
):
    key = stream_key(PREFIX, ReserveCredit.STREAM)
    group = f"held-{uuid.uuid4().hex[:8]}"
    await ensure_group(redis, key, group)
    message = ReserveCredit(order_id=uuid.uuid4(), user_id=uuid.uuid4(), amount_cents=1)
    newer = Envelope.wrap(message, source="next-release").model_copy(
        update={"schema_version": ReserveCredit.SCHEMA_VERSION + 1}
    )
    fields: dict[Any, Any] = dict(newer.to_fields())
    entry_id = str(await redis.xadd(key, fields))
    response: Any = await redis.xreadgroup(group, "old-1", {key: ">"})  # pending for old-1
    assert entry_id in [str(read) for _, entries in response for read, _ in entries]
    later = newer_than_known(newer, ReserveCredit)
    assert later is not None
    await hold(
        redis,
        prefix=PREFIX,
        group=group,
        consumer="old-1",
        stream=key,
        entry_id=entry_id,
        outcome=later,
    )

    listed = (await client.get("/admin/held-messages", headers=OPERATOR)).json()
    mine = [held for held in listed if held["group"] == group]
    assert [(h["entry_id"], h["type"], h["message_id"]) for h in mine] == [
        (entry_id, ReserveCredit.TYPE, str(newer.id))
    ]
    assert (mine[0]["schema_version"], mine[0]["known_version"]) == (
        ReserveCredit.SCHEMA_VERSION + 1,
        ReserveCredit.SCHEMA_VERSION,
    )
    signed_in = await client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    assert signed_in.status_code == 303
    page = await client.get("/admin/ui/dead-letters")
    assert page.status_code == 200
    assert entry_id in page.text

    await redis.xack(key, group, entry_id)  # a newer consumer handled it
    listed = (await client.get("/admin/held-messages", headers=OPERATOR)).json()
    assert [held for held in listed if held["group"] == group] == []
