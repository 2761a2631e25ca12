"""Personal data as operators see it: masked in every ops view and every ops JSON answer.

A 16-digit NIK keeps its first and last four digits (``3171********0123``); a person's
name keeps the first letter of each word (``S**** R******``); e-mail addresses, phone
numbers and birth dates are replaced.  Operators find an application by NIK through
its hash (``nik_hash``), never by reading it.
"""

from __future__ import annotations

import functools
import hmac
import os
import re
from typing import Any

NIK = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{8}(\d{4})(?![0-9A-Za-z])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")

# Keys whose values are a person's name, contact or birth date.
NAME_KEYS = frozenset({"name", "full_name", "owner_name", "applicant_name", "mother_name", "father_name"})
CONTACT_KEYS = frozenset({"email", "phone", "mobile", "birth_date", "date_of_birth", "birth_place"})
# Objects whose ``name`` is not a person's (a company's name is public).
PUBLIC_NAME_PARENTS = frozenset({"company", "business", "organisation", "organization"})
NIK_KEY = re.compile(r"(^|_)nik($|_)", re.IGNORECASE)


def mask_nik(text: str) -> str:
    """``3171012345670123`` → ``3171********0123`` everywhere in ``text``."""
    return NIK.sub(lambda m: m.group(1) + "*" * 8 + m.group(2), text)


def mask_name(name: str) -> str:
    """``Siti Rahayu`` → ``S*** R*****``: enough to tell two people apart on a call, no more."""
    return " ".join(w[:1] + "*" * max(len(w) - 1, 1) for w in str(name).split())


def mask_text(text: str) -> str:
    return _EMAIL.sub("***@***", mask_nik(text))


def mask(value: Any, *, key: str = "", parent: str = "") -> Any:
    """A copy of ``value`` (JSON-like) with personal data masked, by key name and by pattern."""
    lowered = key.lower()
    if isinstance(value, dict):
        return {k: mask(v, key=str(k), parent=lowered) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, key=key, parent=parent) for v in value]
    if not isinstance(value, str):
        if NIK_KEY.search(lowered) and value is not None:
            return mask_nik(str(value))
        return value
    if NIK_KEY.search(lowered):
        masked = mask_nik(value)
        return masked if masked != value else "*" * len(value)
    if lowered in CONTACT_KEYS:
        return "***"
    if lowered in NAME_KEYS and parent not in PUBLIC_NAME_PARENTS:
        return mask_name(value)
    return mask_text(value)


def nik_hash(nik: str) -> str:
    """Keyed hash of a NIK: comparable, not reversible by trying every NIK without the key.

    The key is ``SATUPINTU_NIK_HASH_KEY``; without it a fixed development key is used,
    which only keeps the hash from being a plain SHA-256 of the number.
    """
    return hmac.digest(_nik_hash_key(), nik.strip().encode(), "sha256").hex()


def _nik_hash_key() -> bytes:
    return os.environ.get("SATUPINTU_NIK_HASH_KEY", "satupintu-development-nik-key").encode()


SEARCHABLE_NIK = re.compile(r"[0-9]{16}")
NIK_SEPARATORS = re.compile(r"[\s.-]")  # what the search strips from a query ("3171 0123 4567 0123")


def nik_hashes(data: Any) -> list[str]:
    """The ``nik_hash`` of each NIK in ``data`` that a search can match, once each: the rows
    of ``application_niks``, computed for every submission.

    The NIKs are those ``niks_in`` finds, written as the search writes its query (spaces,
    dots and dashes dropped); what is then not 16 digits can never be searched for and is
    left out.  ``data`` is decoded JSON (a request body, the ``data`` column): its own types
    are matched exactly (``type() is``), which keeps this walk at a few microseconds.
    """
    found: set[str] = set()
    _searchable_niks(data, False, found)
    if not found:
        return []
    key = _nik_hash_key()  # as ``nik_hash``, read once; each found NIK is 16 digits already
    return sorted([hmac.digest(key, nik.encode(), "sha256").hex() for nik in found])


def _searchable_niks(value: Any, under_nik_key: bool, found: set[str]) -> None:
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            _searchable_niks(v, _is_nik_key(k), found)
    elif kind is list:
        for v in value:
            _searchable_niks(v, under_nik_key, found)
    elif kind is str or kind is int:
        text = value if kind is str else str(value)
        if under_nik_key:
            compact = NIK_SEPARATORS.sub("", text)
            if SEARCHABLE_NIK.fullmatch(compact):
                found.add(compact)
        if len(text) >= 16:
            found.update(_NIK_DIGITS.findall(text))


_NIK_DIGITS = re.compile(r"(?<![0-9A-Za-z])[0-9]{16}(?![0-9A-Za-z])")  # what NIK matches, whole and searchable


@functools.lru_cache(maxsize=4096)
def _is_nik_key(key: Any) -> bool:
    return bool(NIK_KEY.search(str(key)))


def niks_in(value: Any, *, key: str = "") -> set[str]:
    """Every NIK in a bundle's data: values of ``*nik*`` keys and any 16-digit string."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            found |= niks_in(v, key=str(k))
    elif isinstance(value, list):
        for v in value:
            found |= niks_in(v, key=key)
    elif isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value)
        if NIK_KEY.search(key) and text.strip():
            found.add(text.strip())
        found.update(m.group(0) for m in NIK.finditer(text))
    return found
