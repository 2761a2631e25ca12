"""Personal data, masked: the one module that knows what a NIK, an e-mail address and a
personal field look like, for everything a person other than the agency reads (the ops
views, the history, dead letters, logs, the answers kept on failures).

- **One NIK pattern**: 16 digits not part of a longer number, wherever they stand -- also
  with letters touching them (``NIK3171012345670123``).  A NIK keeps its first and last
  four digits (``3171********0123``); an e-mail address becomes ``***@***``.
- **Free text from outside** (the front office's reference, agency reasons and faults,
  callback reasons) goes through ``mask_free_text`` before it is stored or logged: NIKs,
  e-mail addresses, and the application's own ``x-pii`` values wherever they appear.
- **Documents** are masked by their schema's ``"x-pii": true`` annotations
  (``mask_document``), JSON of unknown shape by key name (``mask``), an agency's raw
  answer by element or field name (``mask_answer``, ``raw_excerpt``).
- **Search without reading**: operators find an application by the keyed hash of a NIK
  (``nik_hash``, key ``Settings.nik_hash_key``), never by the NIK itself.
- **Logs**: ``PersonalDataFilter`` masks every record a handler writes.
"""

from __future__ import annotations

import copy
import functools
import hmac
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .settings import Settings

NIK = re.compile(r"(?<![0-9])[0-9]{16}(?![0-9])")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
NIK_KEY = re.compile(r"(^|_)nik($|_)", re.IGNORECASE)
NIK_SEPARATORS = re.compile(r"[\s.-]")  # what a search strips from a query ("3171 0123 4567 0123")

# Keys whose values are a person's name, contact or birth date.
NAME_KEYS = frozenset({"name", "full_name", "owner_name", "applicant_name", "mother_name", "father_name"})
CONTACT_KEYS = frozenset({"email", "phone", "mobile", "birth_date", "date_of_birth", "birth_place"})
# Objects whose ``name`` is not a person's (a company's name is public).
PUBLIC_NAME_PARENTS = frozenset({"company", "business", "organisation", "organization"})
# Elements and fields blanked whole in what agencies send and answer (logs, raw answers).
PERSONAL_FIELDS = NAME_KEYS | CONTACT_KEYS | {"nik", "address", "password", "token", "secret"}

RAW_LIMIT = 2048  # what an error keeps of an agency's answer, in characters
MIN_PERSONAL = 3  # shorter personal values are not searched for in free text (they would mask everything)
_OUR_ID = re.compile(r"[a-z]{2,8}_[0-9a-f]{32}")  # app_…, req_…, msg_…: ours, never personal


# --- values and free text -----------------------------------------------------------------

def mask_nik(text: str) -> str:
    """``3171012345670123`` → ``3171********0123`` everywhere in ``text``."""
    return NIK.sub(lambda m: m.group(0)[:4] + "********" + m.group(0)[12:], text)


def mask_value(value: Any) -> Any:
    """An ``x-pii`` value masked: a NIK keeps its first and last four digits, any other string
    its first and last character (``S*********u``); other values become ``***``."""
    if value is None:
        return None
    if not isinstance(value, str):
        return "***"
    if NIK.fullmatch(value):
        return mask_nik(value)
    if len(value) <= 2:
        return "*" * len(value)
    return value[0] + "*" * (len(value) - 2) + value[-1]


def mask_name(name: str) -> str:
    """``Siti Rahayu`` → ``S*** R*****``: enough to tell two people apart on a call, no more."""
    return " ".join(w[:1] + "*" * max(len(w) - 1, 1) for w in str(name).split())


def _values_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first, so that a NIK is replaced before a shorter value that is part of it.
    wanted = sorted({v for v in values if len(v) >= MIN_PERSONAL}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, wanted)), re.IGNORECASE) if wanted else None


def mask_free_text(text: str | None, personal_values: Iterable[str] = ()) -> str | None:
    """``text`` from outside with every NIK-like run, e-mail address and each of
    ``personal_values`` (the application's ``x-pii`` values, ``pii_values``) masked.

    Masking twice changes nothing, so every hop may mask what it stores or logs.
    """
    if not text:
        return text
    lowered = text.lower()  # only the values present are compiled into a pattern: most texts hold none
    pattern = _values_pattern(v for v in personal_values if v.lower() in lowered)
    if pattern is not None:
        text = pattern.sub(lambda m: mask_value(m.group(0)), text)
    return EMAIL.sub("***@***", mask_nik(text))


# --- documents by their schema's x-pii annotations ----------------------------------------

Path = tuple[str, ...]  # object keys; "*" stands for every item of an array


def pii_paths(schema: Mapping[str, Any] | None) -> list[Path]:
    """The paths of every ``x-pii`` field of ``schema`` (local ``$ref``s, ``allOf``/``anyOf``/
    ``oneOf``, ``items`` and ``additionalProperties`` followed), worked out once per schema."""
    if not schema:
        return []
    cached = _paths.get(id(schema))
    if cached is None or cached[0] is not schema:
        found: list[Path] = []
        _walk(schema, schema, (), found, depth=0)
        cached = _paths[id(schema)] = (schema, sorted(set(found)))
    return cached[1]


_paths: dict[int, tuple[Mapping[str, Any], list[Path]]] = {}  # keeps the schema: an id is not reused meanwhile


def _walk(node: Any, root: Mapping[str, Any], path: Path, found: list[Path], depth: int) -> None:
    if not isinstance(node, dict) or depth > 32:
        return
    if node.get("x-pii") is True:
        found.append(path)
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        _walk(target, root, path, found, depth + 1)
    for key, child in (node.get("properties") or {}).items():
        _walk(child, root, (*path, key), found, depth + 1)
    for keyword in ("items", "additionalProperties"):
        child = node.get(keyword)
        if isinstance(child, dict):
            _walk(child, root, (*path, "*"), found, depth + 1)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for child in node.get(keyword) or ():
            _walk(child, root, path, found, depth + 1)


def _at(doc: Any, path: Path) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) that ``path`` reaches in ``doc``."""
    head, rest = path[0], path[1:]
    if head == "*":
        keys: Iterable[Any] = range(len(doc)) if isinstance(doc, list) else list(doc) if isinstance(doc, dict) else ()
    else:
        keys = [head] if isinstance(doc, dict) and head in doc else []
    for key in keys:
        if rest:
            yield from _at(doc[key], rest)
        else:
            yield doc, key


def mask_document(doc: Any, schema: Mapping[str, Any] | None) -> Any:
    """A copy of ``doc`` with every ``x-pii`` field of ``schema`` masked."""
    out = copy.deepcopy(doc)
    for path in pii_paths(schema):
        for container, key in _at(out, path):
            container[key] = mask_value(container[key])
    return out


def pii_values(doc: Any, schema: Mapping[str, Any] | None) -> set[str]:
    """The actual personal values in ``doc`` (as strings), to find them wherever they travel."""
    values: set[str] = set()
    for path in pii_paths(schema):
        for container, key in _at(doc, path):
            value = container[key]
            if isinstance(value, str | int) and not isinstance(value, bool) and len(str(value)) >= MIN_PERSONAL:
                values.add(str(value))
    return values


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of ``value`` (JSON-like) with each of ``secrets`` masked wherever it occurs,
    as a whole value or inside a longer string."""
    pattern = _values_pattern(secrets)
    return value if pattern is None else _redact(value, pattern)


def _redact(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(lambda m: mask_value(m.group(0)), value)
    if isinstance(value, dict):
        return {k: _redact(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, pattern) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and pattern.fullmatch(str(value)):
        return mask_value(str(value))
    return value


# --- JSON of unknown shape, by key name ---------------------------------------------------

def mask(value: Any, *, key: str = "", parent: str = "") -> Any:
    """A copy of ``value`` (JSON-like) with personal data masked by key name and by pattern:
    what the ops views show of data and event details."""
    lowered = key.lower()
    if isinstance(value, dict):
        return {k: mask(v, key=str(k), parent=lowered) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, key=key, parent=parent) for v in value]
    if NIK_KEY.search(lowered):
        if value is None:
            return None
        masked = mask_nik(str(value))
        return masked if masked != str(value) else "*" * len(str(value))
    if not isinstance(value, str) or _OUR_ID.fullmatch(value):
        return value
    if lowered in CONTACT_KEYS:
        return "***"
    if lowered in NAME_KEYS and parent not in PUBLIC_NAME_PARENTS:
        return mask_name(value)
    return mask_free_text(value)


def personal_values(payload: Any) -> set[str]:
    """The values under personal keys (``PERSONAL_FIELDS``, ``*_nik``) of a request sent to an
    agency: what a worker, which has no schema, looks for in the agency's answer."""
    found: set[str] = set()
    if isinstance(payload, dict):
        for k, v in payload.items():
            if isinstance(v, dict | list):
                found |= personal_values(v)
            elif (str(k).lower() in PERSONAL_FIELDS or NIK_KEY.search(str(k))) and isinstance(v, str | int):
                found.add(str(v))
    elif isinstance(payload, list):
        for v in payload:
            found |= personal_values(v)
    return found


# --- what agencies send and answer, as text ------------------------------------------------

@functools.lru_cache(maxsize=64)
def _field_pattern(names: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted(re.escape(n) for n in names))
    # <ns:name attr="...">text</ns:name>  and  "name": "text"  /  "name": 123
    return re.compile(
        rf"(<(?:[\w.-]+:)?(?:{alternatives})(?:\s[^>]*)?>)([^<]*)(</)"
        rf"|(\"(?:{alternatives})\"\s*:\s*)(\"(?:[^\"\\]|\\.)*\"|-?\d[\d.]*)",
        re.IGNORECASE,
    )


def mask_answer(text: str, names: Iterable[str] = PERSONAL_FIELDS) -> str:
    """An agency's XML or JSON as text: the values of personal elements and fields blanked
    (``***``), NIKs and e-mail addresses masked elsewhere."""
    def sub(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(1) + ("***" if match.group(2) else "") + match.group(3)
        return match.group(4) + '"***"'

    return mask_free_text(_field_pattern(frozenset(names)).sub(sub, text)) or ""


def raw_excerpt(raw: str | bytes | None, limit: int = RAW_LIMIT) -> str | None:
    """What an error keeps of an answer: decoded, masked, at most ``limit`` characters."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", errors="replace")
    text = mask_answer(raw[: limit * 2])
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the NIK's keyed hash: found by operators, never read --------------------------------

@functools.cache
def default_nik_hash_key() -> str:
    """``Settings.nik_hash_key`` of this process's environment, read once: every gateway of a
    deployment restarts with a new key (docs/operations.md)."""
    return Settings.from_env().nik_hash_key


def nik_hash(nik: str, key: str | None = None) -> str:
    """Keyed hash (HMAC-SHA256) of a NIK: comparable, not reversible by trying every NIK
    without the key."""
    return hmac.digest((key or default_nik_hash_key()).encode(), nik.strip().encode(), "sha256").hex()


def niks_in(data: Any) -> set[str]:
    """Every NIK a search can match in a bundle's data: the 16-digit runs of any string, and
    the value of a ``*nik*`` key written as a search writes its query (spaces, dots, dashes
    dropped).  ``data`` is decoded JSON: its own types are matched exactly (``type() is``)."""
    found: set[str] = set()
    _searchable(data, False, found)
    return found


def _searchable(value: Any, under_nik_key: bool, found: set[str]) -> None:
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            _searchable(v, _is_nik_key(k), found)
    elif kind is list:
        for v in value:
            _searchable(v, under_nik_key, found)
    elif kind is str or kind is int:
        text = value if kind is str else str(value)
        if under_nik_key:
            compact = NIK_SEPARATORS.sub("", text)
            if NIK.fullmatch(compact):
                found.add(compact)
        if len(text) >= 16:
            found.update(NIK.findall(text))


@functools.lru_cache(maxsize=4096)
def _is_nik_key(key: Any) -> bool:
    return bool(NIK_KEY.search(str(key)))


def nik_hashes(data: Any, key: str | None = None) -> list[str]:
    """The ``nik_hash`` of each NIK in ``data`` (``niks_in``), once each, sorted: the rows of
    ``application_niks``, computed for every submission."""
    found = niks_in(data)
    if not found:
        return []
    secret = (key or default_nik_hash_key()).encode()
    return sorted(hmac.digest(secret, nik.encode(), "sha256").hex() for nik in found)


# --- logs ------------------------------------------------------------------------------------

LOG_IDS = ("application_id", "request_id", "agency", "traceparent", "step")


class PersonalDataFilter(logging.Filter):
    """Masks every record a handler writes: the message and its arguments, the traceback and
    the stack are free text; an id passed in ``extra`` is masked only when it is a NIK whole.

    A filter on the handler (not on loggers) sees the records of every library too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = mask_free_text(record.getMessage()), None
        except (TypeError, ValueError):  # a bad format string: logging reports it when it formats
            pass
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = mask_free_text(record.exc_text)
        record.stack_info = mask_free_text(record.stack_info)
        for name in LOG_IDS:
            value = getattr(record, name, None)
            if isinstance(value, str) and NIK.fullmatch(value):
                setattr(record, name, mask_nik(value))
        return True
