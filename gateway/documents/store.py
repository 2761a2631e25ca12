"""Where sealed documents lie: a folder (the default) or an S3-compatible bucket.

One small interface, two implementations picked by ``SATUPINTU_DOCUMENT_STORE``.  An upload
is staged in a spool file first (``spool()``) and handed over whole with ``put()``, so a
store never holds half a document: the folder renames the finished file into place (one
atomic rename on one file system), and boto3's managed transfer completes a multipart
upload only once every part is in, aborting it otherwise.  Every failure of the medium
(disk full, bucket unreachable) becomes ``StoreUnavailable``.
"""

from __future__ import annotations

import abc
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO
from urllib.parse import urlsplit

from core.domain.errors import ConfigError
from core.settings import Settings


class StoreUnavailable(Exception):
    """Raised when the document store cannot be written or read (full, unreachable, refused)."""


class DocumentMissing(Exception):
    """Raised when a document's content is not in the store (deleted by housekeeping, or lost)."""


class DocumentStore(abc.ABC):
    """Sealed documents by name."""

    @abc.abstractmethod
    def spool(self) -> IO[bytes]:
        """A new, named temporary file to stage an upload in (deleted by ``put`` or ``discard``)."""

    @abc.abstractmethod
    def put(self, name: str, spool: IO[bytes]) -> None:
        """Store the finished spool file under ``name``, whole or not at all."""

    @abc.abstractmethod
    def open(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The stored bytes of ``name``, to read from."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name``; a name already gone is no error."""

    @staticmethod
    def discard(spool: IO[bytes]) -> None:
        """Close and remove a spool file that will not be stored."""
        spool.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool.name)


class FileStore(DocumentStore):
    """A folder; uploads are staged in its ``.incoming`` subfolder, on the same file system."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self._incoming = self.root / ".incoming"

    def spool(self) -> IO[bytes]:
        try:
            self._incoming.mkdir(parents=True, exist_ok=True)
            return tempfile.NamedTemporaryFile(dir=self._incoming, prefix="upload-", delete=False)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write to {self._incoming}: {exc.strerror}") from exc

    def put(self, name: str, spool: IO[bytes]) -> None:
        try:
            spool.flush()
            os.fsync(spool.fileno())
            spool.close()
            os.replace(spool.name, self.root / name)
        except OSError as exc:
            self.discard(spool)
            raise StoreUnavailable(f"cannot store {name} in {self.root}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        try:
            stream = open(self.root / name, "rb")  # noqa: SIM115 -- closed by the with below
        except FileNotFoundError:
            raise DocumentMissing(name) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {name} from {self.root}: {exc.strerror}") from exc
        with stream:
            yield stream

    def delete(self, name: str) -> None:
        try:
            (self.root / name).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete {name} from {self.root}: {exc.strerror}") from exc


class S3Store(DocumentStore):
    """A bucket of any S3-compatible object store, under a prefix; credentials the usual AWS way."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, client=None):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._client = client or boto3.client(
            "s3", endpoint_url=endpoint_url or None,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}))

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def spool(self) -> IO[bytes]:
        return tempfile.NamedTemporaryFile(prefix="satupintu-upload-", delete=False)

    def put(self, name: str, spool: IO[bytes]) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            spool.flush()
            spool.seek(0)
            self._client.upload_fileobj(spool, self.bucket, self._key(name))
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            raise StoreUnavailable(f"cannot store {name} in s3://{self.bucket}/{self.prefix}: {exc}") from exc
        finally:
            self.discard(spool)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise DocumentMissing(name) from None
            raise StoreUnavailable(f"cannot read {name} from s3://{self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"cannot read {name} from s3://{self.bucket}: {exc}") from exc
        with contextlib.closing(body):
            yield body

    def delete(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"cannot delete {name} from s3://{self.bucket}: {exc}") from exc


def open_store(settings: Settings) -> DocumentStore:
    """The store ``SATUPINTU_DOCUMENT_STORE`` names: ``file:///path`` (or ``file://relative``) or ``s3://bucket/prefix``."""
    url = settings.document_store
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileStore(parts.netloc + parts.path)
    if parts.scheme == "s3" and parts.netloc:
        return S3Store(parts.netloc, parts.path, endpoint_url=settings.s3_endpoint_url)
    raise ConfigError(f"SATUPINTU_DOCUMENT_STORE={url!r}: expected file:///path or s3://bucket/prefix")
