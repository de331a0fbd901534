"""A check every service's tests run: its worker handles what the contracts say it consumes.

``Message.CONSUMERS`` is what the bus trusts (it creates those groups before trimming, see
common.bus.streams) and what the event catalogue documents, so it must match the handler
map the worker really runs, in both directions.
"""

from collections.abc import Mapping

from common.contracts import ALL_MESSAGES, Message


def assert_handles_what_contracts_name(
    group: str, handlers: Mapping[type[Message], object]
) -> None:
    handled = {message.TYPE for message in handlers}
    named = {message.TYPE for message in ALL_MESSAGES if group in message.CONSUMERS}
    assert handled == named, (
        f"group {group!r} handles {sorted(handled)}, "
        f"but the contracts' CONSUMERS name it for {sorted(named)}"
    )
