"""Which paths a fast read takes: its route's shape, with parameters in a narrow alphabet."""

import pytest

from common.fastread import FastRead


def read(path: str) -> FastRead:
    return FastRead(path, "read", lambda user_id: (), lambda found, params: None)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/users/me", {}),
        (
            "/users/0b7c2f8e-4a53-4c5e-9a0e-1f2d3c4b5a69",
            {"user_id": "0b7c2f8e-4a53-4c5e-9a0e-1f2d3c4b5a69"},
        ),
        ("/users/anything_else-1", {"user_id": "anything_else-1"}),
    ],
)
def test_a_route_shaped_path_is_taken_with_its_parameters(
    path: str, params: dict[str, str]
) -> None:
    fast = read("/users/me") if path == "/users/me" else read("/users/{user_id}")
    match = fast.pattern.match(path)
    assert match is not None
    assert match.groupdict() == params


@pytest.mark.parametrize(
    "path",
    [
        "/users/",  # an empty parameter
        "/users/a/b",  # more segments
        "/users/me/",  # a trailing slash (FastAPI redirects it)
        "/users/%7Bid%7D",  # escapes and braces are the route's to decode
        "/users/{user_id}",
        "/users/" + "a" * 65,  # longer than any id
    ],
)
def test_any_other_path_goes_to_the_route(path: str) -> None:
    assert read("/users/{user_id}").pattern.match(path) is None


def test_the_rest_of_the_declared_path_is_literal() -> None:
    assert read("/users.me").pattern.match("/users.me") is not None
    assert read("/users.me").pattern.match("/usersXme") is None
