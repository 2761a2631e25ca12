"""Reading an upload's multipart body as it arrives, sealing the file into a spool on the way.

Werkzeug's form parser would spool the whole file before a view sees it, with no way to stop
at the kind's size or to encrypt before the bytes touch the disk; its push parser
(``werkzeug.sansio.multipart.MultipartDecoder``, the one its form parser is built on) hands
over the body part by part instead.  Each piece of the file is counted, hashed, kept for the
type sniffer while within the first ``sniff.HEAD`` bytes, and sealed into the spool; reading
stops as soon as the file is over its limit.  Memory stays at a few chunks whatever the size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from . import sniff
from .errors import Refused, StoreUnavailable
from .rules import filename_problem
from .sealing import Sealer

READ = 64 * 1024
FIELD_BYTES = 1024  # the most a text field (``kind``) may hold
MAX_PARTS = 8


@dataclass
class Received:
    """What the body held: the kind field, and the file as sealed into the spool."""

    kind: str | None
    filename: str
    size: int
    sha256: str
    head: bytes  # the file's first bytes, for the type sniffer


class _FileIntake:
    def __init__(self, filename: str, sealer: Sealer, limit: int):
        self.filename, self.sealer, self.limit = filename, sealer, limit
        self.size, self.hash, self.head = 0, hashlib.sha256(), bytearray()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise Refused(413, "too-large", "/file", f"the file is larger than {self.limit} bytes")
        self.hash.update(data)
        if len(self.head) < sniff.HEAD:
            self.head += data[:sniff.HEAD - len(self.head)]
        try:
            self.sealer.write(data)
        except OSError as exc:
            raise StoreUnavailable(f"cannot stage the upload: {exc.strerror}") from exc


def receive(read: Callable[[int], bytes], boundary: bytes, *, spool: IO[bytes],
            seal: Callable[[IO[bytes]], Sealer], limit_for: Callable[[str | None], int]) -> Received:
    """Read the body with ``read`` and seal its ``file`` part into ``spool``.

    ``limit_for(kind)`` is the most bytes the file may have, given the kind field if it came
    first (``None`` otherwise); it raises ``Refused`` for a kind that does not exist.
    """
    decoder = MultipartDecoder(boundary, max_form_memory_size=4 * READ, max_parts=MAX_PARTS)
    fields: dict[str, bytearray] = {}
    intake: _FileIntake | None = None
    target: bytearray | _FileIntake | None = None
    while True:
        try:
            chunk = read(READ)
        except (ClientDisconnected, OSError):
            chunk = b""  # the decoder then says the body ended early
        try:
            decoder.receive_data(chunk or None)
            event = decoder.next_event()
            while not isinstance(event, NeedData | Epilogue):
                if isinstance(event, File):
                    if event.name != "file" or intake is not None:
                        raise Refused(422, "validation", f"/{event.name}", "send one file, in the part named file")
                    problem = filename_problem(event.filename)
                    if problem:
                        raise Refused(422, "validation", "/file", problem)
                    target = intake = _FileIntake(event.filename, seal(spool), limit_for(_text(fields, "kind")))
                elif isinstance(event, Field):
                    target = fields.setdefault(event.name, bytearray())
                elif isinstance(event, Data) and target is not None:
                    if isinstance(target, _FileIntake):
                        target.write(event.data)
                        if not event.more_data:
                            target.sealer.close()
                    else:
                        target += event.data
                        if len(target) > FIELD_BYTES:
                            raise Refused(422, "validation", "/kind", f"a form field is longer than {FIELD_BYTES} bytes")
                event = decoder.next_event()
        except ValueError:  # the body ended (the client went away) or is not multipart
            raise Refused(400, "incomplete", "/file",
                          "the body ended before its last part: the upload was cut off or is not multipart") from None
        except RequestEntityTooLarge:
            raise Refused(413, "too-large", "/file", "a part's headers are too large") from None
        if isinstance(event, Epilogue):
            break
    if intake is None:
        raise Refused(422, "validation", "/file", "send the document in a part named file")
    spool.flush()
    return Received(kind=_text(fields, "kind"), filename=intake.filename, size=intake.size,
                    sha256=intake.hash.hexdigest(), head=bytes(intake.head))


def _text(fields: dict[str, bytearray], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Refused(422, "validation", f"/{name}", "must be UTF-8 text") from None
