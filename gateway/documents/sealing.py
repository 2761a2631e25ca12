"""Documents encrypted at rest: AES-256-GCM over 64 KiB chunks, so no document is held whole.

One GCM message of 10 MB would have to be decrypted whole before a byte of it could be
trusted; sealing each chunk on its own lets an upload be encrypted as it arrives and a
download be checked as it leaves.  Each chunk has a fresh random 96-bit nonce and is
authenticated together with the document's id, its index and whether it is the last one,
so chunks cannot be reordered, dropped, cut off at the end or moved into another document
without the tag failing.

Layout: ``SPD1``, then per chunk ``flag (1 byte: 1 = last) | length (4 bytes, big endian)
| nonce (12 bytes) | ciphertext with its 16-byte tag``.  The last chunk may be empty.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.domain.errors import ConfigError
from core.settings import Settings

log = logging.getLogger("satupintu.documents")

MAGIC = b"SPD1"
CHUNK = 64 * 1024
_RECORD = struct.Struct("!BI")  # last-chunk flag, ciphertext length
_NONCE = 12
_TAG = 16


class TamperedDocument(Exception):
    """Raised when a stored document fails its authentication: altered, cut short or not ours."""


def document_key(settings: Settings) -> bytes:
    """The 32-byte key of ``SATUPINTU_DOCUMENT_KEY`` (base64); a development key when it is empty."""
    if not settings.document_key:
        log.warning("SATUPINTU_DOCUMENT_KEY is not set: documents are encrypted with a development key")
        return hashlib.sha256(b"satupintu-development-document-key").digest()
    try:
        key = base64.b64decode(settings.document_key.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError("SATUPINTU_DOCUMENT_KEY must be 32 random bytes in base64, "
                          "e.g. from `python3 -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())'`")
    return key


def _aad(doc_id: str, index: int, last: bool) -> bytes:
    return doc_id.encode() + b"\0" + struct.pack("!QB", index, last)


class Sealer:
    """Encrypts what is written to it into ``sink``, chunk by chunk; ``close()`` seals the last chunk."""

    def __init__(self, key: bytes, doc_id: str, sink: BinaryIO):
        self._aead, self._doc_id, self._sink = AESGCM(key), doc_id, sink
        self._buffer = bytearray()
        self._index = 0
        sink.write(MAGIC)

    def write(self, data: bytes) -> None:
        self._buffer += data
        # A full chunk is sealed only once more follows: the last one must carry the flag.
        while len(self._buffer) > CHUNK:
            self._seal(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]

    def close(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()

    def _seal(self, plain: bytes, *, last: bool) -> None:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plain, _aad(self._doc_id, self._index, last))
        self._sink.write(_RECORD.pack(last, len(sealed)) + nonce + sealed)
        self._index += 1


def unseal(key: bytes, doc_id: str, source: BinaryIO) -> Iterator[bytes]:
    """The plaintext of a sealed document, chunk by chunk; raises TamperedDocument on any fault."""
    aead, read = AESGCM(key), _exact_reader(source.read)
    if read(len(MAGIC)) != MAGIC:
        raise TamperedDocument(f"{doc_id}: not a sealed document")
    index = 0
    while True:
        last, length = _RECORD.unpack(read(_RECORD.size))
        if length < _TAG or length > CHUNK + _TAG:
            raise TamperedDocument(f"{doc_id}: chunk {index} has an impossible length")
        nonce = read(_NONCE)
        try:
            yield aead.decrypt(nonce, read(length), _aad(doc_id, index, bool(last)))
        except InvalidTag:
            raise TamperedDocument(f"{doc_id}: chunk {index} failed authentication") from None
        if last:
            if source.read(1):
                raise TamperedDocument(f"{doc_id}: data after the last chunk")
            return
        index += 1


def _exact_reader(read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """``read(n)`` that returns exactly n bytes or raises TamperedDocument (the document was cut short)."""
    def exact(n: int) -> bytes:
        parts, wanted = [], n
        while wanted:
            part = read(wanted)
            if not part:
                raise TamperedDocument("the sealed document ends before its last chunk")
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)
    return exact
