"""A document's type, from its first bytes (puremagic), never from the client's word.

puremagic is pure Python, kept up to date, and reads the signatures of the types the
catalog may allow (PDF, JPEG, PNG) as well as those it must refuse (executables, archives).
"""

from __future__ import annotations

import puremagic

HEAD = 8192  # bytes enough for every signature puremagic matches at the start of a file
UNKNOWN = "application/octet-stream"


def media_type(head: bytes) -> str:
    """The media type ``head`` (a document's first bytes) shows; ``application/octet-stream`` if none."""
    try:
        return puremagic.from_string(head, mime=True) or UNKNOWN
    except puremagic.PureError:
        return UNKNOWN


def looks_like(head: bytes) -> str:
    """A short name of what ``head`` is, for an error message (``.exe``; ``unknown``)."""
    try:
        return puremagic.from_string(head) or "unknown"
    except puremagic.PureError:
        return "unknown"
