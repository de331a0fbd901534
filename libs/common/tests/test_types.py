"""The constrained text types: what they refuse, what they let through."""

import pytest
from pydantic import BaseModel, ValidationError

from common.types import MultilineText, Text


class Form(BaseModel):
    line: Text = ""
    note: MultilineText = ""


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("\x00", "U+0000 at position 0"),
        ("a\x01b", "U+0001 at position 1"),
        ("tab\there", "U+0009 at position 3"),
        ("new\nline", "U+000A at position 3"),
        ("\r", "U+000D"),
        ("\x7f", "U+007F"),
        ("\x85", "U+0085"),
        ("\x9f", "U+009F"),
        ("ok\ud800", "a lone surrogate (U+D800 at position 2)"),
    ],
)
def test_a_single_line_refuses_every_control_character_and_lone_surrogate(value: str, named: str):
    with pytest.raises(ValidationError) as refused:
        Form(line=value)

    (error,) = refused.value.errors()
    assert error["loc"] == ("line",)
    assert error["type"] == "text_forbidden_character"
    assert named in error["msg"]


def test_free_text_keeps_tab_and_line_breaks_but_refuses_the_rest():
    assert Form(note="one\ttwo\r\nthree\n").note == "one\ttwo\r\nthree\n"
    for value in ["\x00", "bell\x07", "\x1b[2J", "\ud83d"]:
        with pytest.raises(ValidationError):
            Form(note=value)


@pytest.mark.parametrize("value", ["", "Ada Lovelace", "Zoë 李 🚀", "\u00a0nbsp", "a\u200db"])
def test_printable_text_and_format_characters_pass(value: str):
    assert Form(line=value, note=value).line == value
