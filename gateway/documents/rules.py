"""What an upload of a kind may be: the catalog's rules, and what a file name may hold."""

from __future__ import annotations

import re

from core.domain.text import text_problem
from core.model import Catalog, DocumentKind, Service

from .errors import Refused

MAX_FILENAME = 255
_UNSAFE = re.compile(r"[/\\\t\r\n]")


def kind_rules(catalog: Catalog, service_id: str | None, kind: str) -> DocumentKind:
    """The rules of ``kind`` in ``service_id``; without a service, the loosest rules any service
    has for it (the application's own service checks its rules again at submission)."""
    services = _services(catalog, service_id)
    found = [s.documents[kind] for s in services if kind in s.documents]
    if not found:
        known = sorted({k for s in services for k in s.documents})
        raise Refused(422, "validation", "/kind", f"unknown document kind {kind!r}; known: {', '.join(known) or '(none)'}")
    if len(found) == 1:
        return found[0]
    return DocumentKind(title=found[0].title, required=False, max_bytes=max(k.max_bytes for k in found),
                        media_types=tuple(sorted({t for k in found for t in k.media_types})))


def largest(catalog: Catalog, service_id: str | None) -> int:
    """The most bytes any kind may have: the limit while the kind is not yet known."""
    return max((k.max_bytes for s in _services(catalog, service_id) for k in s.documents.values()), default=0)


def _services(catalog: Catalog, service_id: str | None) -> list[Service]:
    if service_id is None:
        return list(catalog.services.values())
    service = catalog.services.get(service_id)
    if service is None:
        raise Refused(422, "validation", "/service", f"unknown service {service_id!r}")
    return [service]


def filename_problem(name: str) -> str | None:
    """Why ``name`` may not be a document's file name, or None."""
    if not name.strip():
        return "the file has no name"
    if len(name) > MAX_FILENAME:
        return f"the file name is longer than {MAX_FILENAME} characters"
    if _UNSAFE.search(name) or name in {".", ".."}:
        return "the file name must not hold a path (/ or \\) or a tab or line break"
    problem = text_problem(name, name_like=True)
    return f"the file name {problem}" if problem else None
