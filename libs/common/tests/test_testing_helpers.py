"""The shared test helpers the notifications suite and tests/e2e both lean on: the SSE
reader (``common.testing.sse``) and the webhook receiver (``common.testing.webhooks``)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from standardwebhooks import Webhook

from common.testing.server import served
from common.testing.sse import SseReader
from common.testing.webhooks import Receiver, signature_is_valid

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64
OTHER_SECRET = "whsec_" + "A" * 32

STREAM = (
    "retry: 100\nid: start\n: connected\n\n"
    ": heartbeat\n\n"
    'id: 1\nevent: notification\ndata: {"kind": "a",\ndata:  "n": 1}\n\n'
    "\n"  # a stray blank line is no block
    'id: 2\nevent: notification\nfuture-field: ignored\ndata: {"kind": "b"}\n\n'
    ": heartbeat\n\n"
)


def stream_app() -> FastAPI:
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for line in STREAM.splitlines(keepends=True):
                yield line
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


async def test_the_sse_reader_reads_blocks_events_heartbeats_and_the_end():
    async with (
        served(stream_app()) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("GET", "/stream") as response,
    ):
        reader = SseReader(response)
        opening = await reader.block()
        first = await reader.event()
        rest = await reader.heartbeat()
        ended = await reader.ended(within=5)

    assert (opening.retry, opening.id, opening.comments) == (100, "start", ["connected"])
    assert (first.id, first.event, first.json) == ("1", "notification", {"kind": "a", "n": 1})
    assert [(event.id, event.json) for event in rest] == [("2", {"kind": "b"})]
    assert ended


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    when = datetime.now(UTC)
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_1", when, body.decode()),
        "content-type": "application/json",
    }


async def test_the_receiver_records_answers_as_scripted_and_checks_signatures():
    body = b'{"type": "notification.welcome"}'
    async with Receiver(answer=lambda n: 500 if n == 1 else 204) as receiver:
        receiver.secret = SECRET
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{receiver.port}") as http:
            failed = await http.post("/shop", content=body, headers=signed(body))
            accepted = await http.post("/shop", content=body, headers=signed(body))
            forged = await http.post(
                "/shop", content=body, headers=signed(body, "whsec_" + "A" * 32)
            )

    assert [failed.status_code, accepted.status_code, forged.status_code] == [500, 204, 401]
    assert [hit.status for hit in receiver.hits] == [500, 204, 401]
    assert receiver.successes() == [receiver.hits[1]]
    hit = receiver.hits[1]
    assert (hit.method, hit.path, hit.json) == ("POST", "/shop", {"type": "notification.welcome"})
    assert signature_is_valid(SECRET, hit)
    assert not signature_is_valid(SECRET, receiver.hits[2])
