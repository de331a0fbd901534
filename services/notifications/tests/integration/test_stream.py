"""GET /notifications/stream: live server-sent events, resumable with Last-Event-ID."""

import asyncio
import time
import uuid
from datetime import datetime

import httpx
import pytest
from sqlalchemy import text

from common.auth import AuthenticatedUser, claimed_user, create_session, revoke_session
from common.contracts import NotificationKind
from common.pagination import decode_cursor, encode_cursor
from common.settings import with_changes
from common.testing.polling import eventually
from notifications import service
from notifications.context import NOTIFICATIONS
from notifications.live import StreamSlots

pytestmark = pytest.mark.integration


async def test_a_notification_recorded_after_subscribing_arrives_on_the_stream(
    open_stream, new_user, record
):
    user = await new_user()
    async with open_stream(user) as stream:
        opening = await stream.block()
        assert opening.retry == 100
        assert "connected" in opening.comments
        assert opening.id is not None  # resumable from the very start

        recorded = await record(user.id, "order_approved")
        event = await stream.event(within=2)

    assert event.event == "notification"
    assert event.id == encode_cursor(recorded.created_at, recorded.id)
    body = event.json
    assert datetime.fromisoformat(body.pop("created_at")) == recorded.created_at
    assert body == {
        "id": str(recorded.id),
        "kind": "order_approved",
        "order_id": str(recorded.order_id),
        "read": False,
    }


async def test_reconnect_with_last_event_id_replays_what_was_missed_exactly_once(
    open_stream, new_user, record
):
    user = await new_user()
    async with open_stream(user) as stream:
        await stream.block()
        first = await record(user.id)
        seen = await stream.event(within=2)
        assert seen.json["id"] == str(first.id)

    missed = [await record(user.id) for _ in range(3)]  # while disconnected

    async with open_stream(user, last_event_id=seen.id) as stream:
        await stream.block()  # retry + connected
        replayed = [await stream.event(within=2) for _ in missed]
        live = await record(user.id)
        after = await stream.heartbeat(within=3)  # every event up to a quiet moment
        after += await stream.heartbeat(within=3)

    assert [e.json["id"] for e in replayed] == [str(n.id) for n in missed]
    assert [e.json["id"] for e in after] == [str(live.id)]  # no duplicate, nothing missing


async def test_the_opening_id_resumes_a_stream_that_saw_no_event(open_stream, new_user, record):
    user = await new_user()
    earlier = await record(user.id)
    async with open_stream(user) as stream:
        opening = await stream.block()
    assert opening.id == encode_cursor(earlier.created_at, earlier.id)

    missed = await record(user.id)
    async with open_stream(user, last_event_id=opening.id) as stream:
        await stream.block()
        event = await stream.event(within=2)
    assert event.json["id"] == str(missed.id)


async def test_another_users_notifications_never_appear(open_stream, new_user, record):
    user, other = await new_user(), await new_user()
    async with open_stream(user) as stream:
        await stream.block()
        for _ in range(3):
            await record(other.id)
        mine = await record(user.id)
        events = await stream.heartbeat(within=3)
        events += await stream.heartbeat(within=3)
    assert [e.json["id"] for e in events] == [str(mine.id)]


async def test_concurrent_notifications_of_one_user_arrive_once_each_in_cursor_order(
    open_stream, new_user, record
):
    user = await new_user()
    async with open_stream(user) as stream:
        opening = await stream.block()
        recorded = await asyncio.gather(*(record(user.id) for _ in range(20)))
        events = [await stream.event(within=3) for _ in recorded]
        events += await stream.heartbeat(within=3)
        events += await stream.heartbeat(within=3)

    assert sorted(e.json["id"] for e in events) == sorted(str(n.id) for n in recorded)
    cursors = [decode_cursor(e.id) for e in events if e.id]
    assert cursors == sorted(cursors)
    assert opening.id is not None
    assert cursors[0] > decode_cursor(opening.id)


async def test_heartbeats_are_comment_lines(open_stream, new_user):
    user = await new_user()
    async with open_stream(user) as stream:
        await stream.block()
        assert await stream.heartbeat(within=2) == []


async def test_a_session_gone_without_announcement_ends_the_stream_at_the_next_heartbeat(
    open_stream, new_user, redis
):
    """The fallback when a logout's PUBLISH is lost: the heartbeat's session check."""
    user = await new_user()
    async with open_stream(user) as stream:
        await stream.block()
        await redis.delete(_session(user.token).session_key)  # expired, or PUBLISH lost
        assert await stream.ended(within=5)  # the server ends the response


async def test_logout_ends_the_tokens_streams_at_once_and_no_other(
    notifications_settings, serve_api, open_stream, new_user, record, redis
):
    """What ``DELETE /users/sessions/current`` calls. Heartbeats are 60 s apart here, so only
    the revocation message can end the streams within the poll's few seconds."""
    settings = with_changes(notifications_settings, stream={"heartbeat_seconds": 60.0})
    user = await new_user()
    other_session = await create_session(redis, user.id, 3600)  # the same user, another device
    other_device = type(user)(user.id, other_session.token)
    async with (
        serve_api(settings) as own_api,
        open_stream(user, base_url=own_api.url) as first,
        open_stream(user, base_url=own_api.url) as second,
        open_stream(other_device, base_url=own_api.url) as kept,
    ):
        for stream in (first, second, kept):
            await stream.block()
        started = time.monotonic()
        await revoke_session(redis, _session(user.token))
        assert await first.ended(within=3)
        assert await second.ended(within=3)
        assert time.monotonic() - started < settings.stream.heartbeat_seconds
        notification = await record(user.id)  # the other device's stream is still live
        assert (await kept.event(within=5)).json["id"] == str(notification.id)


async def test_streams_per_user_are_capped_across_the_api_and_a_closed_one_frees_its_slot(
    notifications_settings, serve_api, open_stream, new_user
):
    settings = with_changes(notifications_settings, stream={"max_per_user": 2})
    user, other = await new_user(), await new_user()
    async with (
        serve_api(settings) as own_api,
        serve_api(settings) as replica,
        httpx.AsyncClient(timeout=10) as http,
    ):

        async def third_attempt(base_url: str) -> httpx.Response:
            """The answer's head only (read whole, a 200 stream would never end)."""
            url = f"{base_url}/notifications/stream"
            async with http.stream("GET", url, headers=user.auth) as response:
                if response.status_code != 200:
                    await response.aread()
                return response

        async with (
            open_stream(user, base_url=own_api.url) as one,
            open_stream(user, base_url=replica.url) as two,  # counted across replicas
        ):
            await one.block()
            await two.block()
            refused = await third_attempt(own_api.url)
            assert refused.status_code == 429
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert int(refused.headers["retry-after"]) >= 1
            assert "2" in refused.json()["detail"]
            assert (await third_attempt(replica.url)).status_code == 429
            async with open_stream(other, base_url=own_api.url) as others:
                await others.block()  # another user is not affected

        async def a_slot_is_free() -> bool:
            async with http.stream(
                "GET", f"{own_api.url}/notifications/stream", headers=user.auth
            ) as response:
                return response.status_code == 200

        await eventually(a_slot_is_free, timeout=5)


async def test_the_slot_of_a_stream_never_closed_expires_with_its_lease(redis):
    """A process killed mid-stream never releases; its slot's lease runs out."""
    slots = StreamSlots(redis, cap=1, lease_seconds=0.3)
    user_id = uuid.uuid4()
    assert await slots.acquire(user_id, "crashed-process-stream")
    assert not await slots.acquire(user_id, "new-stream")

    async def taken() -> bool:
        return await slots.acquire(user_id, "new-stream")

    await eventually(taken, timeout=5)
    await slots.renew(user_id, "new-stream")
    assert not await slots.acquire(user_id, "third")
    await slots.release(user_id, "new-stream")
    assert await slots.acquire(user_id, "third")
    assert 0 < await redis.pttl(slots.key(user_id)) <= 300


async def test_the_stream_needs_a_token(client: httpx.AsyncClient):
    response = await client.get("/notifications/stream")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_malformed_last_event_id_is_400_naming_the_header(client, new_user):
    user = await new_user()
    response = await client.get(
        "/notifications/stream", headers={**user.auth, "Last-Event-ID": "not-a-cursor!"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "Last-Event-ID"


async def test_streams_end_cleanly_on_shutdown(
    notifications_settings, serve_api, open_stream, new_user, record
):
    user = await new_user()
    async with (
        serve_api(notifications_settings) as own_api,
        open_stream(user, base_url=own_api.url) as stream,
    ):
        await stream.block()
        NOTIFICATIONS.of(own_api.app).live_hub.shutdown()  # what SIGTERM does
        assert await stream.ended(within=5)


async def test_a_notification_committing_after_a_newer_one_is_not_skipped(
    open_stream, new_user, record, database, fanout
):
    """T1 records and stays open; T2 records for the same user. If T2 could commit first
    with a later cursor, a stream that sent T2 would never send T1. The user lock makes T2
    wait for T1, so the cursor order is the commit order."""
    user = await new_user()

    async def waiting_on_the_user_lock() -> bool:
        async with database.session() as session:
            waiting = await session.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND NOT granted AND classid = :namespace AND objsubid = 2"
                    " AND database = (SELECT oid FROM pg_database"
                    "                 WHERE datname = current_database())"
                ),
                {"namespace": 0x4E4F5449},
            )
            return bool(waiting.scalar_one())

    async with open_stream(user) as stream:
        await stream.block()
        async with database.transaction() as uow:
            slow = await service.record(
                uow,
                fanout,
                user_id=user.id,
                kind=NotificationKind.ORDER_APPROVED,
                order_id=uuid.uuid4(),
            )
            fast_task = asyncio.create_task(record(user.id))

            async def fast_is_blocked_or_done() -> bool:
                return fast_task.done() or await waiting_on_the_user_lock()

            await eventually(fast_is_blocked_or_done, timeout=5)
            # Without the lock, T2 has committed and its event is out before T1 commits.
            early = [await stream.event(within=2)] if fast_task.done() else []
        fast = await fast_task
        events = early + [await stream.event(within=2) for _ in range(2 - len(early))]

    assert [e.json["id"] for e in events] == [str(slow.id), str(fast.id)]


def _session(token: str) -> AuthenticatedUser:
    user = claimed_user(token)
    assert user is not None
    return user
