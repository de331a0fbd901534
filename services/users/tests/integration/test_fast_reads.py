"""GET /users/me and /users/{id} answered from the caller's one Redis call (common.fastread):
the same response as the route's, counted once, and every other case left to the route."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY

from common.settings import with_changes
from common.testing.plugin import asgi_client
from users.main import create_app
from users.settings import Settings

from .test_users_api import assert_problem, bearer, register_and_login

pytestmark = pytest.mark.integration


def an_address() -> str:
    """A client address of its own: sign-ups and logins are limited per address."""
    return f"198.51.100.{uuid.uuid4().int % 250 + 1}"


@pytest.fixture(scope="module")
async def client(users_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(users_settings), client_address=an_address()) as client:
        yield client


def requests_served(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def cache_lookups(result: str) -> float:
    return REGISTRY.get_sample_value("users_cache_requests_total", {"result": result}) or 0.0


@pytest.mark.parametrize("path", ["/users/me", "/users/{id}"])
async def test_a_cached_view_is_sent_as_the_route_sends_it(
    client: httpx.AsyncClient, path: str
) -> None:
    user, token = await register_and_login(client)
    url = path.format(id=user["id"])
    hits = cache_lookups("hit")
    served = requests_served(path.replace("{id}", "{user_id}"), "200")

    from_the_route = await client.get(url, headers=bearer(token))  # a miss: Postgres
    from_the_cache = await client.get(url, headers=bearer(token))

    assert cache_lookups("hit") - hits == 1
    assert (from_the_route.status_code, from_the_cache.status_code) == (200, 200)
    assert from_the_cache.content == from_the_route.content
    for name in ("content-type", "content-length"):
        assert from_the_cache.headers[name] == from_the_route.headers[name]
    assert from_the_cache.headers["x-request-id"] != from_the_route.headers["x-request-id"]
    # Both under the route's own metrics label, not "unmatched".
    assert requests_served(path.replace("{id}", "{user_id}"), "200") - served == 2


async def test_each_request_is_counted_once_whichever_way_it_is_answered(
    users_settings: Settings,
) -> None:
    limited = with_changes(users_settings, rate_limit={"read": "5/hour"})
    async with asgi_client(create_app(limited), client_address=an_address()) as client:
        user, token = await register_and_login(client)
        me, someone_else = f"/users/{user['id']}", f"/users/{uuid.uuid4()}"
        answers = [
            (await client.get(path, headers=bearer(token))).status_code
            # a miss (the route), a hit (the fast path), someone else's id (the route's
            # 404), a hit, the uppercase form of the caller's id (the route parses it).
            for path in (me, me, someone_else, me, me.upper().replace("/USERS/", "/users/"))
        ]
        assert answers == [200, 200, 404, 200, 200]

        refused = await client.get(me, headers=bearer(token))
        problem = assert_problem(refused, 429)
        assert "read" in problem["detail"]
        assert int(refused.headers["Retry-After"]) >= 1


async def test_a_logged_out_token_is_refused_though_its_view_is_cached(
    client: httpx.AsyncClient,
) -> None:
    _, token = await register_and_login(client)
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 200
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 200

    logout = await client.delete("/users/sessions/current", headers=bearer(token))
    assert logout.status_code == 204

    assert_problem(await client.get("/users/me", headers=bearer(token)), 401)


async def test_redis_down_is_a_503_to_retry_not_a_500(users_settings: Settings) -> None:
    unreachable = with_changes(
        users_settings,
        redis={"url": "redis://127.0.0.1:9/0", "cluster_nodes": "", "timeout_seconds": 0.5},
    )
    user_id = uuid.uuid4()
    token = f"{user_id}.secret-of-a-session-nobody-can-check"
    async with asgi_client(create_app(unreachable)) as client:
        for path in ("/users/me", f"/users/{user_id}"):
            response = await client.get(path, headers=bearer(token))
            assert_problem(response, 503)
            assert response.headers["Retry-After"] == "1"
