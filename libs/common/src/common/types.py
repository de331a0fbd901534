"""Constrained text for everything a client sends: bodies, headers, query strings.

PostgreSQL refuses ``\\u0000`` in ``text`` and cannot store a lone UTF-16 surrogate (nor can
any UTF-8 encoder), and control characters in names or keys end up in logs, e-mails and
terminals. So every string a request carries is checked where it is parsed: such a
character is a 422 naming the field, never a 500 from the database a moment later.

Two flavours, both refusing lone surrogates (category ``Cs``):

* :data:`Text`: one line. Refuses every control character (Unicode category ``Cc``: C0
  ``U+0000..U+001F``, DEL ``U+007F`` and C1 ``U+0080..U+009F``), tab and newlines
  included. Names, SKUs, e-mail addresses, passwords, URLs, header values and keys are
  single-line by nature; a tab or newline in one is a mistake or an injection attempt.
* :data:`MultilineText`: free text (a note, a message body). Tab, line feed and carriage
  return are allowed; every other control character is refused.

Lengths stay with the field (``name: Text = Field(min_length=1, max_length=100)``), so a
schema reads as before and its OpenAPI document keeps the limits.
"""

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Strict
from pydantic_core import PydanticCustomError

LINE_BREAKS_AND_TAB = frozenset("\t\n\r")


def _first_forbidden(value: str, allowed: frozenset[str]) -> tuple[int, str] | None:
    # A fast path: most text is printable ASCII and needs no per-character category lookup.
    if value.isascii() and value.isprintable():
        return None
    for position, char in enumerate(value):
        if char in allowed:
            continue
        if unicodedata.category(char) in {"Cc", "Cs"}:
            return position, char
    return None


def _refuse(value: str, allowed: frozenset[str]) -> str:
    found = _first_forbidden(value, allowed)
    if found is None:
        return value
    position, char = found
    kind = "a lone surrogate" if unicodedata.category(char) == "Cs" else "a control character"
    raise PydanticCustomError(
        "text_forbidden_character",
        "must not contain {kind} ({character} at position {position})",
        {"kind": kind, "character": f"U+{ord(char):04X}", "position": position},
    )


def refuse_control_characters(value: str) -> str:
    """The check of :data:`Text`: no control character at all, no lone surrogate."""
    return _refuse(value, frozenset())


def refuse_control_characters_but_line_breaks(value: str) -> str:
    """The check of :data:`MultilineText`: tab, CR and LF allowed; nothing else."""
    return _refuse(value, LINE_BREAKS_AND_TAB)


Text = Annotated[str, AfterValidator(refuse_control_characters)]
MultilineText = Annotated[str, AfterValidator(refuse_control_characters_but_line_breaks)]


def _refuse_if_text(value: object) -> object:
    # Runs before the wrapped type's own validation, so a non-string is left for it to refuse.
    return refuse_control_characters(value) if isinstance(value, str) else value


TextFirst = BeforeValidator(_refuse_if_text)
"""For a string type with its own validator (``Annotated[EmailStr, TextFirst]``): the same
check as :data:`Text`, run first, so the 422 says the same thing for every field."""


Integer = Annotated[int, Strict()]
"""A whole number as JSON writes one: ``true`` is not 1 and ``"3"`` or ``3.0`` not 3 (a 422
naming the field). Lax parsing would take a boolean as a quantity."""
