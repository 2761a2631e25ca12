"""Texts an agency could never take are refused at submission (issue 26, finding 4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.text import text_problem, text_problems


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\ufffe", "\uffff", "\ufdd0",
                                  "\U0001fffe", "\U0010ffff"])
def test_control_characters_and_noncharacters_are_refused_anywhere(char):
    problem = text_problem(f"Jalan{char}Merdeka")
    assert problem and f"U+{ord(char):04X}" in problem


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\u200f"])
def test_direction_overrides_and_zero_width_characters_are_refused_in_names(char):
    assert text_problem(f"PT Maju{char}Jaya", name_like=True)
    assert text_problem(f"PT Maju{char}Jaya") is None  # in other texts they may be real (e.g. Arabic script)


def test_tabs_line_breaks_and_letters_of_every_script_are_kept():
    for text in ("Jl. Merdeka\nNo. 5", "a\tb\r\n", "Đặng Thị Ánh", "محمد", "王小明", "emoji 🙂"):
        assert text_problem(text, name_like=True) is None


def test_each_problem_names_its_field_as_a_json_pointer():
    data = {"company": {"name": "PT\u202eX", "address": {"street": "Jl.\x00"}}, "owners": [{"note": "ok"}, "\x1b"],
            "a/b": "\uffff"}
    found = {p["path"]: p["message"] for p in text_problems(data, "/data")}
    assert set(found) == {"/data/company/name", "/data/company/address/street", "/data/owners/1", "/data/a~1b"}
    assert "Jl." not in " ".join(found.values())  # never the text itself


@given(st.text())
def test_whatever_is_accepted_is_xml_compatible(text):
    from lxml import etree
    if text_problem(text) is None and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        etree.Element("x").text = text  # lxml raises ValueError for anything XML 1.0 cannot hold
