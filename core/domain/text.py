"""Which characters a submitted text may hold (issue 26, finding 4).

JSON Schema's ``string`` accepts any code point, but an agency's SOAP service cannot take
a C0 control character in XML 1.0 ("All strings must be XML compatible"), so a bundle with
one was accepted (202) and then failed at that agency for good: a dead letter no replay can
fix.  Every text field is therefore refused at submission when it holds:

- a control character other than tab, line feed and carriage return (C0, DEL and C1);
- a Unicode noncharacter (U+FDD0..U+FDEF, and U+xFFFE/U+xFFFF of every plane);

and names and references (keys containing ``name``, and ``reference``) also when they hold
bidirectional overrides or isolates, or zero-width characters, which make one name look
like another on a screen ("Trojan source" spoofing).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_NONCHARACTER = re.compile("[\ufdd0-\ufdef\ufffe\uffff"
                           + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(1, 17))
                           + "]")
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")

NAMES = re.compile(r"name|reference", re.IGNORECASE)


def text_problem(text: str, *, name_like: bool = False) -> str | None:
    """Why ``text`` may not be submitted, or None; the message names the code point, never the text."""
    for pattern, what in ((_CONTROL, "a control character"), (_NONCHARACTER, "a Unicode noncharacter")):
        found = pattern.search(text)
        if found:
            return f"must not contain {what} (U+{ord(found.group()):04X})"
    if name_like:
        found = _INVISIBLE.search(text)
        if found:
            return f"must not contain an invisible or direction-changing character (U+{ord(found.group()):04X})"
    return None


def _pointer_part(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def text_problems(value: Any, path: str = "", *, name_like: bool = False) -> Iterator[dict[str, str]]:
    """``{path, message}`` for every text in ``value`` (keys included) that may not be submitted."""
    if isinstance(value, str):
        problem = text_problem(value, name_like=name_like)
        if problem:
            yield {"path": path or "/", "message": problem}
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}/{_pointer_part(str(key))}"
            problem = text_problem(str(key))
            if problem:
                yield {"path": where, "message": "a key " + problem}
                continue
            yield from text_problems(item, where, name_like=bool(NAMES.search(str(key))))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from text_problems(item, f"{path}/{index}", name_like=name_like)
