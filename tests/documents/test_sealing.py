"""Encryption at rest: what a copied disk or bucket holds, and what tampering with it does."""

from __future__ import annotations

import io
import os

import pytest

from core.domain.errors import ConfigError
from core.settings import Settings
from gateway.documents.sealing import CHUNK, Sealer, TamperedDocument, document_key, unseal

KEY = os.urandom(32)


def sealed(plain: bytes, doc_id: str = "doc_a", key: bytes = KEY) -> bytes:
    sink = io.BytesIO()
    sealer = Sealer(key, doc_id, sink)
    for start in range(0, len(plain), 10_000):  # written in pieces that do not line up with chunks
        sealer.write(plain[start:start + 10_000])
    sealer.close()
    return sink.getvalue()


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_a_sealed_document_opens_to_the_same_bytes_and_shows_none_of_them(size):
    plain = os.urandom(size)
    box = sealed(plain)
    assert b"".join(unseal(KEY, "doc_a", io.BytesIO(box))) == plain
    if size >= 32:
        assert plain[:32] not in box


def test_the_same_document_sealed_twice_differs():
    plain = b"A" * 1000
    assert sealed(plain) != sealed(plain)


def chunk_offsets(box: bytes) -> list[int]:
    offsets, at = [], 4
    while at < len(box):
        offsets.append(at)
        at += 5 + 12 + int.from_bytes(box[at + 1:at + 5], "big")
    return offsets


@pytest.mark.parametrize("tamper", ["flip a byte", "drop the last chunk", "swap two chunks", "cut the end",
                                    "another key", "another document", "append"])
def test_any_tampering_fails_the_authentication(tamper):
    box = sealed(os.urandom(3 * CHUNK + 5))
    offsets = chunk_offsets(box)
    key, doc_id = KEY, "doc_a"
    if tamper == "flip a byte":
        box = box[:100] + bytes([box[100] ^ 1]) + box[101:]
    elif tamper == "drop the last chunk":
        box = box[:offsets[-1]]
    elif tamper == "swap two chunks":
        first, second = box[offsets[0]:offsets[1]], box[offsets[1]:offsets[2]]
        box = box[:offsets[0]] + second + first + box[offsets[2]:]
    elif tamper == "cut the end":
        box = box[:-10]
    elif tamper == "another key":
        key = os.urandom(32)
    elif tamper == "another document":
        doc_id = "doc_b"
    elif tamper == "append":
        box += b"x"
    with pytest.raises(TamperedDocument):
        b"".join(unseal(key, doc_id, io.BytesIO(box)))


def test_the_key_is_32_bytes_of_base64_and_anything_else_stops_the_gateway():
    import base64
    raw = os.urandom(32)
    assert document_key(Settings(document_key=base64.b64encode(raw).decode())) == raw
    assert document_key(Settings(document_key=base64.urlsafe_b64encode(raw).decode())) == raw
    assert len(document_key(Settings())) == 32  # development key
    for bad in ("too-short", base64.b64encode(os.urandom(16)).decode()):
        with pytest.raises(ConfigError):
            document_key(Settings(document_key=bad))
