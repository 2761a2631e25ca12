"""One HTTP/1.1 exchange on a connected socket: the request in one buffer, the answer
parsed by ``httptools`` (llhttp, in C).

``http.client`` spent most of an agency call's CPU on generic work: every header checked
with two regexes as it is sent, the answer's head parsed through the ``email`` package,
the body read through a buffered file object.  Here the request is validated and encoded
once, sent with one ``sendall``, and the answer is fed to llhttp as it arrives.  Making
the connection (TCP, TLS, the egress guard) is not done here: see adapters/rest_transport.py.

The ``TransportFailure`` subclasses are raised here and re-exported by rest_transport.
"""

from __future__ import annotations

import re
import socket
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

_READ_CHUNK = 65536
# An answer's head (interim 1xx answers included) larger than this is refused: llhttp sets no
# limit, and httptools gathers a header in memory until its end (http.client: 64 KiB a line).
MAX_HEAD_BYTES = 64 * 1024
# Bytes received for a body, framing and trailers included, beyond which the answer is too large
# whatever it decodes to (chunk extensions, trailers or compressed padding that never end).
_RAW_PER_BODY_BYTE = 4


class TransportFailure(Exception):
    """Raised when a call did not produce a complete answer; ``str()`` says what happened."""


class ConnectTimedOut(TransportFailure):
    """Raised when no connection was made within the connect timeout."""


class ReadTimedOut(TransportFailure):
    """Raised when the agency sent nothing for longer than the read timeout (head or body)."""


class AnswerTimedOut(ReadTimedOut):
    """Raised when the answer kept arriving but was not complete within the total time allowed
    (an agency, or something between us and it, sending a little before each read timeout)."""


class TlsFailed(TransportFailure):
    """Raised when the TLS handshake failed (certificate not trusted, refused, ...)."""


class BadRequest(TransportFailure):
    """Raised when the request cannot be sent at all (malformed URL or header, unknown scheme)."""


class ConnectionFailed(TransportFailure):
    """Raised when the connection was refused, dropped or not allowed (egress policy), or the
    agency's answer was not HTTP."""


class BrokenOff(TransportFailure):
    """Raised when the answer's body stopped before it was complete."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TooLarge(TransportFailure):
    """Raised when the answer is larger than the limit; ``partial`` is what was read of it."""

    def __init__(self, status: int, partial: bytes | None) -> None:
        super().__init__(f"answer larger than the limit (HTTP {status})")
        self.status, self.partial = status, partial


class AnswerHeaders(Mapping[str, str]):
    """An answer's headers: case-insensitive lookups, repeated headers joined with ", "
    (as urllib3's ``HTTPHeaderDict.get`` gives them); iteration yields the names as sent."""

    __slots__ = ("_fields",)

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]] = ()) -> None:
        fields: dict[str, tuple[str, str]] = {}
        for raw_name, raw_value in pairs:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1").rstrip(" \t")
            key = name.lower()
            old = fields.get(key)
            fields[key] = (name, value) if old is None else (old[0], f"{old[1]}, {value}")
        self._fields = fields

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()][1]

    def get(self, name: str, default: Any = None) -> Any:  # without the KeyError of Mapping.get
        field = self._fields.get(name.lower())
        return default if field is None else field[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"AnswerHeaders({dict(self.items())!r})"


class Answer:
    """A complete answer: status, reason, headers (case-insensitive lookups) and body."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str | None, headers: Any, body: bytes) -> None:
        self.status, self.reason, self.headers, self.body = status, reason, headers, body


# --- the request ---------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch  # RFC 9110 field names and methods
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search  # controls other than HTAB (CR, LF, NUL, ...)
_PLAIN_TARGET = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*").fullmatch
_TARGET_SAFE = "-._~!$&'()*+,;=:@/?%"
_EXPECTS_BODY = frozenset({"POST", "PUT", "PATCH"})  # urllib3 says Content-Length: 0 for these


def encode_request(method: str, target: str, host: str, headers: Mapping[str, Any], body: Any) -> bytes:
    """The request's bytes: request line, ``Host`` (unless given), the headers in their order,
    ``Content-Length`` when there is a body, and the body.  ``BadRequest`` for a malformed
    method, target, header name or value (CR, LF, NUL or another control character), or a
    body that is not bytes."""
    if not _TOKEN(method):
        raise BadRequest(f"invalid method {method[:50]!r}")
    if not _PLAIN_TARGET(target):
        if _BAD_VALUE(target) or "\t" in target:
            raise BadRequest(f"control character in the request target {target[:200]!r}")
        try:
            target = quote(target, safe=_TARGET_SAFE)  # spaces, non-ASCII: percent-encoded, as urllib3 does
        except UnicodeEncodeError as exc:  # a lone surrogate
            raise BadRequest(f"the request target {target[:200]!r} is not text: {exc}") from exc
    if body is not None and not isinstance(body, bytes):
        if isinstance(body, str):
            body = body.encode()
        elif isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        else:
            raise BadRequest(f"a request body must be bytes, not {type(body).__name__}")
    parts = [method, " ", target, " HTTP/1.1\r\n"]
    values = []
    has_host = has_length = has_encoding = False
    for name, value in headers.items():
        if type(value) is not str:
            value = _text(name, value)
        if not _TOKEN(name):
            raise BadRequest(f"invalid header name {name[:100]!r}")
        lower = name.lower()
        if lower == "host":
            has_host = True
        elif lower == "content-length":
            has_length = True
        elif lower == "accept-encoding":
            has_encoding = True
        elif lower == "transfer-encoding":  # a body is always sent whole, with its length
            raise BadRequest("a Transfer-Encoding header cannot be set on an agency call")
        parts += (name, ": ", value, "\r\n")
        values.append(value)
    if _BAD_VALUE("".join(values)):
        culprit = next(n for n, v in headers.items() if _BAD_VALUE(str(v)))
        raise BadRequest(f"invalid value for header {culprit!r}: control characters are not allowed")
    if not has_host:
        parts[4:4] = ("Host: ", host, "\r\n")
    if not has_encoding:
        parts += ("Accept-Encoding: identity\r\n",)  # what http.client says when nothing else is
    if not has_length and (body is not None or method in _EXPECTS_BODY):
        parts += ("Content-Length: ", str(len(body) if body is not None else 0), "\r\n")
    parts.append("\r\n")
    try:
        head = "".join(parts).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"a header value is not Latin-1 text: {exc}") from exc
    return head + body if body else head


def _text(name: str, value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, int):
        return str(value)
    raise BadRequest(f"header {name!r} must be text, not {type(value).__name__}")


# --- the answer ----------------------------------------------------------------------------

class _Inflater:
    """A gzip (one or more members) or deflate (zlib-wrapped, or raw as some servers send it)
    body, decoded as it arrives and never more than asked for at once (gzip bombs).  How the
    body is cut into pieces changes nothing: zlib checks its 2-byte header only once it has
    both bytes, so they are kept until then, to start again on them as raw deflate."""

    __slots__ = ("_fed", "_gzip", "_member_done", "_obj", "_sniffed")

    def __init__(self, gzip: bool) -> None:
        self._gzip, self._member_done, self._fed = gzip, False, False
        self._sniffed: bytes | None = None if gzip else b""  # deflate: the bytes before the header is judged
        self._obj: Any = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> bytes:
        """At most ``limit`` (> 0) decoded bytes from ``data``; exactly ``limit`` means there may be more."""
        if self._obj is None:
            return b""  # after garbage that followed a complete gzip member
        self._fed = self._fed or bool(data)
        if self._sniffed is not None:
            self._sniffed += data
        out = b""
        while data:
            try:
                out += self._obj.decompress(data, limit - len(out))
            except zlib.error:
                if self._sniffed is not None:  # deflate without the zlib wrapper: again, from its start
                    data, self._sniffed = self._sniffed, None
                    self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                if self._member_done:
                    self._obj = None  # garbage after a complete gzip member: ignored, as urllib3 does
                    return out
                raise
            if self._sniffed is not None and len(self._sniffed) >= 2:
                self._sniffed = None  # zlib accepted its header
            if len(out) >= limit:
                return out
            if self._gzip and self._obj.eof:
                self._member_done = True
                if not self._obj.unused_data:
                    return out
                data = self._obj.unused_data  # the next gzip member
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                return out
        return out


    @property
    def complete(self) -> bool:
        """Whether the compressed stream reached its end (an empty body counts as complete):
        a body that ends before it was cut somewhere, and what it decoded to is only a part."""
        return self._obj is None or self._obj.eof or not self._fed


class _AnswerReader:
    """The callbacks httptools calls while parsing: the final answer's status, reason, headers
    and body (decoded, bounded), skipping interim 1xx answers.  A problem found in a callback
    is kept in ``failure`` and raised after ``feed_data`` returns, not raised through C."""

    __slots__ = ("body", "done", "failure", "headers", "head_only", "inflater", "interim", "keep_alive",
                 "max_bytes", "needs_eof", "parser", "pairs", "reason", "size", "status", "trailing")

    def __init__(self, head_only: bool, max_bytes: int) -> None:
        self.head_only, self.max_bytes = head_only, max_bytes
        self.parser: Any = None
        self.status: int | None = None
        self.reason: list[bytes] = []
        self.pairs: list[tuple[bytes, bytes]] = []
        self.headers: AnswerHeaders | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.inflater: _Inflater | None = None
        self.failure: TransportFailure | None = None
        self.done = self.interim = self.keep_alive = self.needs_eof = self.trailing = False

    def on_message_begin(self) -> None:
        if self.done:
            self.trailing = True  # bytes after the answer: the connection cannot be trusted
        else:
            self.reason, self.pairs = [], []

    def on_status(self, data: bytes) -> None:
        if not self.done:
            self.reason.append(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers is None:  # trailers (after a chunked body) are not kept
            self.pairs.append((name, value))

    def on_headers_complete(self) -> None:
        if self.done:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints, ...: the real answer follows
            return
        if status < 100:  # http.client's BadStatusLine: not an HTTP answer
            self.failure = ConnectionFailed(f"the agency's answer is not valid HTTP: status {status:03d}")
            return
        self.status, self.keep_alive = status, self.parser.should_keep_alive()
        self.headers = headers = AnswerHeaders(self.pairs)
        if "Transfer-Encoding" in headers and self.parser.get_http_version() == "1.0":
            self.keep_alive = False  # RFC 9112 6.1: faulty framing, close the connection after it
        if self.head_only or status in (101, 204, 304):
            self.done = True
            self.keep_alive = self.keep_alive and not self.head_only  # llhttp would wait for a HEAD's body
            return
        declared = headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            self.failure = TooLarge(status, None)  # refused before reading it
            return
        coding = headers.get("Content-Encoding", "").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            self.inflater = _Inflater(coding != "deflate")
        chunked = headers.get("Transfer-Encoding", "").rsplit(",", 1)[-1].strip().lower() == "chunked"
        self.needs_eof = declared is None and not chunked  # the body ends when the connection does

    def on_body(self, data: bytes) -> None:
        if self.failure is not None or self.done:
            return
        room = self.max_bytes - self.size
        if self.inflater is not None:
            try:
                data = self.inflater.feed(data, room + 1)
            except zlib.error as exc:
                self.failure = BrokenOff(f"the answer's body could not be decoded: {exc}", self.status or 0)
                return
        if len(data) > room:
            self.failure = TooLarge(self.status or 0, b"".join(self.body))
            return
        self.size += len(data)
        self.body.append(data)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        elif self.status is not None:
            self.done = True
            if self.failure is None:
                self.failure = self.truncation()

    def truncation(self) -> BrokenOff | None:
        """A failure when the body's framing ended before its compressed stream did."""
        if self.inflater is None or self.inflater.complete:
            return None
        return BrokenOff(f"the answer's compressed body ended before its compressed stream did (truncated after "
                         f"{self.size} decoded bytes)", self.status or 0)

    def broken(self, message: str) -> TransportFailure:
        """``BrokenOff`` once the status is known, ``ConnectionFailed`` before."""
        return ConnectionFailed(message) if self.status is None else BrokenOff(message, self.status)

    def end_of_stream(self, received: bool) -> None:
        """The agency closed the connection: the end of a body sized that way, or a failure."""
        if self.status is None:
            where = "in the middle of its answer's head" if received else "without answering"
            raise ConnectionFailed(f"the agency closed the connection {where}")
        if not self.needs_eof:
            raise BrokenOff(f"the connection closed after {self.size} bytes of the answer's body", self.status)
        self.done, self.keep_alive = True, False
        failure = self.truncation()
        if failure is not None:
            raise failure


def read_answer(sock: socket.socket, head_only: bool, max_bytes: int,
                deadline: float | None = None) -> tuple[Answer, bool]:
    """Read one answer from ``sock`` (bodies sized by Content-Length, chunked, or ended by the
    connection closing; no body for ``head_only``), at most ``max_bytes`` decoded.  Returns the
    answer and whether the connection may carry another request.

    Each read waits at most the socket's timeout (``ReadTimedOut``); an answer still not
    complete at ``deadline`` (``time.monotonic()``) is ``AnswerTimedOut``, checked as its
    bytes arrive, so a call ends by ``deadline`` plus one read timeout at the latest."""
    reader = _AnswerReader(head_only, max_bytes)
    parser = reader.parser = HttpResponseParser(reader)
    recv, received, size = sock.recv, False, 0
    max_size = MAX_HEAD_BYTES + _RAW_PER_BODY_BYTE * max_bytes
    try:
        while not reader.done:
            try:
                data = recv(_READ_CHUNK)
            except TimeoutError as exc:
                state = "sent nothing" if reader.status is None else f"stopped sending its HTTP {reader.status} answer"
                raise ReadTimedOut(f"the agency {state} for longer than the read timeout "
                                   f"({sock.gettimeout()} s)") from exc
            except OSError as exc:
                raise reader.broken(f"reading the answer failed: {exc}") from exc
            if not data:
                reader.end_of_stream(received)
                break
            received, size = True, size + len(data)
            try:
                parser.feed_data(data)
            except HttpParserUpgrade as exc:  # only after a 101 answer, which ends HTTP on this connection
                if not reader.done:
                    raise ConnectionFailed("the agency switched protocols in the middle of an answer") from exc
                reader.keep_alive = False
            except HttpParserError as exc:
                if reader.failure is not None:
                    raise reader.failure from None
                if not reader.done:
                    raise reader.broken(f"the agency's answer is not valid HTTP: {exc}") from exc
                reader.keep_alive = False  # garbage after a complete answer
            if reader.failure is not None:
                raise reader.failure
            if reader.done:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise AnswerTimedOut(f"the agency's HTTP {reader.status or '(head unfinished)'} answer was still "
                                     f"arriving when the time allowed for it ran out")
            if reader.headers is None and size > MAX_HEAD_BYTES:
                raise ConnectionFailed(f"the agency's answer head is larger than {MAX_HEAD_BYTES} bytes")
            if size > max_size:
                raise TooLarge(reader.status or 0, b"".join(reader.body))
    finally:
        reader.parser = None  # no cycle between the reader and the parser
    reason = b"".join(reader.reason).decode("latin-1").strip()
    answer = Answer(reader.status or 0, reason, reader.headers, b"".join(reader.body))
    return answer, reader.keep_alive and not reader.trailing
