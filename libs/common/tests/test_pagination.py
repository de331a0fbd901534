"""Cursors: what the API issues comes back intact; anything else is a 400, never a 500."""

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.errors import Problem
from common.pagination import decode_cursor, encode_cursor


def forged(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def test_an_issued_cursor_decodes_to_its_key():
    at = datetime(2026, 11, 30, 23, 0, 1, 123456, tzinfo=UTC)
    item = uuid.uuid4()

    assert decode_cursor(encode_cursor(at, item)) == (at, item)


def test_an_offset_is_kept_as_the_same_instant_in_utc():
    at = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))

    decoded, _ = decode_cursor(forged(f"{at.isoformat()}|{uuid.uuid4()}"))

    assert decoded == at
    assert decoded.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "raw",
    [
        "9999-12-31T23:59:59-14:00|{id}",  # year 10000 in UTC: PostgreSQL refuses it
        "0001-01-01T00:00:00+14:00|{id}",  # year 0 in UTC
        "2026-01-01T00:00:00|{id}",  # no offset
        "yesterday|{id}",
        "2026-01-01T00:00:00+00:00|not-a-uuid",
        "\x00|\x00",
    ],
)
def test_a_cursor_this_api_did_not_issue_is_a_400(raw: str):
    with pytest.raises(Problem) as refused:
        decode_cursor(forged(raw.format(id=uuid.uuid4())))

    assert refused.value.status == 400


def test_text_that_is_not_base64_is_a_400():
    with pytest.raises(Problem):
        decode_cursor("%%%")
