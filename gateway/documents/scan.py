"""The virus scan: ClamAV's daemon over its socket, with clamav-client's INSTREAM.

clamav-client (Artefactual's maintained fork of the ``clamd`` package, which has had no
release since 2014) speaks clamd's protocol over a unix or TCP socket.  INSTREAM sends the
bytes themselves, so clamd needs no access to our files and the content can come straight
out of the sealed spool, chunk by chunk.  Anything short of a clear answer from clamd is
``ScannerUnavailable``: a document is never taken as clean because the scanner was away.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from clamav_client.clamd import ClamdError, ClamdNetworkSocket, ClamdUnixSocket

from core.domain.errors import ConfigError
from core.settings import Settings

TIMEOUT = 60.0  # seconds clamd may take over one document (10 MB scan in well under a second)


class ScannerUnavailable(Exception):
    """Raised when ClamAV cannot be reached or gives no verdict; the upload should be retried."""


@dataclass(frozen=True)
class Verdict:
    clean: bool
    signature: str | None = None  # what clamd found, e.g. "Eicar-Test-Signature"


class _Chunks:
    """A read()-able view of an iterator of byte strings (what INSTREAM reads from)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._rest = memoryview(b"")  # slices of a view copy nothing

    def read(self, size: int = -1) -> bytes:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._rest = memoryview(chunk)
        size = len(self._rest) if size < 0 else size
        part, self._rest = self._rest[:size], self._rest[size:]
        return bytes(part)


class Scanner:
    """ClamAV at ``SATUPINTU_CLAMD`` (``unix:///path`` or ``tcp://host:port``)."""

    def __init__(self, address: str, timeout: float = TIMEOUT):
        parts = urlsplit(address)
        if parts.scheme == "unix" and parts.path:
            self._clamd = ClamdUnixSocket(path=parts.path, timeout=timeout)
        elif parts.scheme == "tcp" and parts.hostname and parts.port:
            self._clamd = ClamdNetworkSocket(host=parts.hostname, port=parts.port, timeout=timeout)
        else:
            raise ConfigError(f"SATUPINTU_CLAMD={address!r}: expected unix:///path or tcp://host:port")
        self.address = address

    @classmethod
    def from_settings(cls, settings: Settings) -> Scanner | None:
        return cls(settings.clamd) if settings.clamd else None

    def scan(self, chunks: Iterable[bytes]) -> Verdict:
        """Stream ``chunks`` to clamd and return its verdict."""
        try:
            result = self._clamd.instream(_Chunks(chunks))
        except (ClamdError, OSError) as exc:
            raise ScannerUnavailable(f"ClamAV at {self.address} did not answer: {exc}") from exc
        status, signature = next(iter(result.values()), (None, None))
        if status == "OK":
            return Verdict(clean=True)
        if status == "FOUND":
            return Verdict(clean=False, signature=(signature or "").removesuffix(".UNOFFICIAL"))
        raise ScannerUnavailable(f"ClamAV at {self.address} gave no verdict: {result!r}")
