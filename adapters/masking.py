"""Masking of personal data in what adapters log or keep of an agency's answer.

A 16-digit NIK (Indonesian national identity number) keeps its first and last four
digits (``3171********0123``); the text of XML elements or JSON fields whose name is in
``PERSONAL_FIELDS`` is replaced by ``***``.  Raw answers kept on failures are masked and
truncated to ``RAW_LIMIT`` characters so that an error never carries a whole document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

RAW_LIMIT = 2048

NIK = re.compile(r"(?<!\d)(\d{4})(\d{8})(\d{4})(?!\d)")

PERSONAL_FIELDS = frozenset({
    "nik", "name", "full_name", "address", "birth_date", "date_of_birth", "phone", "email",
    "mother_name", "password", "token", "secret",
})


def mask_niks(text: str) -> str:
    """``3171012345670123`` → ``3171********0123`` everywhere in ``text``."""
    return NIK.sub(lambda m: m.group(1) + "*" * 8 + m.group(3), text)


def _field_pattern(names: Iterable[str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted(re.escape(n) for n in names))
    # <ns:name attr="...">text</ns:name>  and  "name": "text"  /  "name": 123
    return re.compile(
        rf"(<(?:[\w.-]+:)?(?:{alternatives})(?:\s[^>]*)?>)([^<]*)(</)"
        rf"|(\"(?:{alternatives})\"\s*:\s*)(\"(?:[^\"\\]|\\.)*\"|-?\d[\d.]*)",
        re.IGNORECASE,
    )


_DEFAULT_PATTERN = _field_pattern(PERSONAL_FIELDS)


def mask_text(text: str, names: Iterable[str] | None = None) -> str:
    """Mask NIKs and the values of personal fields (XML elements or JSON keys) in ``text``."""
    pattern = _DEFAULT_PATTERN if names is None else _field_pattern(names)

    def sub(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(1) + ("***" if match.group(2) else "") + match.group(3)
        return match.group(4) + '"***"'

    return mask_niks(pattern.sub(sub, text))


def raw_excerpt(raw: str | bytes | None, limit: int = RAW_LIMIT) -> str | None:
    """What an error keeps of an answer: decoded, masked, at most ``limit`` characters."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", errors="replace")
    text = mask_text(raw[: limit * 2])
    return text if len(text) <= limit else text[: limit - 1] + "…"
