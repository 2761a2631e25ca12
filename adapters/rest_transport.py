"""The REST adapter's HTTP transport: urllib3 connection pools, without ``requests``.

``requests`` spent about a third of an agency call's CPU on things this adapter never
uses (URL re-parsing and re-quoting, hooks, per-call TLS set-up on the pool, a
case-insensitive copy of the answer's headers, a cookie jar).  A ``RestTransport`` does
what is left: headers merged case-insensitively, auth applied, one ``urlopen`` on a pool
of the egress-guarded ``PoolManager`` (adapters/egress.py, so every new connection is
still checked, with the TLS settings fixed once when the pools are made), and the answer
read within a byte limit.  Redirects are never followed, nothing is read from the
environment (proxies, CA bundles, netrc), and no cookie outlives its call.

urllib3's errors do not leak: they become the ``TransportFailure`` subclasses below,
which ``adapters/rest.py`` turns into agency errors.
"""

from __future__ import annotations

import os
from typing import Any

from requests.utils import DEFAULT_ACCEPT_ENCODING, DEFAULT_CA_BUNDLE_PATH
from urllib3 import HTTPResponse, Timeout
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InvalidHeader,
    LocationValueError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import Retry

from gateway.domain.errors import ConfigError

from .egress import EgressPolicy, guarded_pool_manager

# What a requests.Session sends besides its User-Agent, with this adapter's Accept.
DEFAULT_HEADERS = {"Accept-Encoding": DEFAULT_ACCEPT_ENCODING,
                   "Accept": "application/json", "Connection": "keep-alive"}
_NO_RETRIES = Retry(total=False, redirect=False)  # a failure surfaces as itself, not as MaxRetryError
_READ_CHUNK = 65536


class TransportFailure(Exception):
    """Raised when a call did not produce a complete answer; ``str()`` says what happened."""


class ConnectTimedOut(TransportFailure):
    """Raised when no connection was made within the connect timeout."""


class ReadTimedOut(TransportFailure):
    """Raised when the agency did not answer within the read timeout."""


class TlsFailed(TransportFailure):
    """Raised when the TLS handshake failed (certificate not trusted, refused, ...)."""


class BadRequest(TransportFailure):
    """Raised when the request cannot be sent at all (malformed URL or header, unknown scheme)."""


class ConnectionFailed(TransportFailure):
    """Raised when the connection was refused, dropped or not allowed (egress policy)."""


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


class Outgoing:
    """A request as auth hooks see it: the attributes of a ``requests.PreparedRequest``
    that ``AuthBase`` callables read and write (``method``, ``url``, ``headers``, ``body``)."""

    __slots__ = ("body", "headers", "method", "url")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> None:
        self.method, self.url, self.headers, self.body = method, url, headers, body


class Answer:
    """A complete answer: status, reason, headers (case-insensitive lookups) and body."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str | None, headers: Any, body: bytes) -> None:
        self.status, self.reason, self.headers, self.body = status, reason, headers, body


class Headers(dict[str, str]):
    """A plain dict of headers (what urllib3 and auth hooks take) in which a name set again
    in another case replaces the first, as in ``requests``' ``CaseInsensitiveDict``."""

    __slots__ = ("_names",)

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self._names: dict[str, str] = {}
        for name, value in (headers or {}).items():
            self[name] = value

    def __setitem__(self, name: str, value: str) -> None:
        lower = name.lower()
        old = self._names.get(lower)
        if old is not None and old != name:
            super().__delitem__(old)
        self._names[lower] = name
        super().__setitem__(name, value)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        del self._names[name.lower()]

    def has(self, name: str) -> bool:
        return name.lower() in self._names

    def merged(self, extra: dict[str, str]) -> Headers:
        """A copy with ``extra`` set on top."""
        out = Headers()
        dict.update(out, self)
        out._names = self._names.copy()
        for name, value in extra.items():
            out[name] = value
        return out


def pool_tls(verify: bool | str, cert: tuple[str, str] | None) -> dict[str, Any]:
    """The urllib3 pool keywords for ``requests``-style ``verify`` and ``cert``, as
    ``HTTPAdapter.cert_verify`` sets them on a pool for every call (here: once)."""
    if verify is False:
        kwargs: dict[str, Any] = {"cert_reqs": "CERT_NONE", "ca_certs": None, "ca_cert_dir": None}
    else:
        location = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
        if not location or not os.path.exists(location):
            raise ConfigError(f"no TLS CA certificate bundle at {location!r}", field="options.verify")
        kwargs = {"cert_reqs": "CERT_REQUIRED",
                  "ca_cert_dir" if os.path.isdir(location) else "ca_certs": location}
    if cert is not None:
        for path, name in ((cert[0], "cert"), (cert[1], "key")):
            if not os.path.exists(path):
                raise ConfigError(f"no TLS client {name} file at {path!r}", field=f"auth.{name}")
        kwargs.update(cert_file=cert[0], key_file=cert[1])
    return kwargs


class RestTransport:
    """One agency's connection pools and call settings, shared by the worker's threads."""

    def __init__(self, policy: EgressPolicy, *, headers: dict[str, str], auth: Any, verify: bool | str,
                 cert: tuple[str, str] | None, connect_timeout: float, read_timeout: float,
                 maxsize: int, num_pools: int = 4) -> None:
        self.headers = Headers(headers)
        self.auth = auth
        self.timeout = Timeout(connect=connect_timeout, read=read_timeout)
        self._manager = guarded_pool_manager(policy, num_pools=num_pools, maxsize=maxsize, block=False,
                                             **pool_tls(verify, cert))
        self._pools: dict[str, HTTPConnectionPool] = {}

    def close(self) -> None:
        self._pools = {}
        self._manager.clear()

    def call(self, method: str, url: str, headers: dict[str, str], body: bytes | None, max_bytes: int) -> Answer:
        """Send one request and read its answer (at most ``max_bytes``, else ``TooLarge``)."""
        outgoing = Outgoing(method, url, self.headers.merged(headers), body)
        if body is not None:
            if not outgoing.headers.has("Content-Type"):
                outgoing.headers["Content-Type"] = "application/json"
        elif method not in ("GET", "HEAD") and not outgoing.headers.has("Content-Length"):
            outgoing.headers["Content-Length"] = "0"  # as requests says it (urllib3 would not for DELETE)
        if self.auth is not None:
            outgoing = self.auth(outgoing)
        origin, target = _split(outgoing.url)
        try:
            pool = self._pools.get(origin)
            if pool is None or pool.pool is None:  # not made yet, or closed by the manager
                pool = self._pools[origin] = self._manager.connection_from_url(origin)
            response = pool.urlopen(outgoing.method, target, body=outgoing.body, headers=outgoing.headers,
                                    redirect=False, assert_same_host=False, preload_content=False,
                                    decode_content=True, retries=_NO_RETRIES, timeout=self.timeout)
        except NewConnectionError as exc:  # a subclass of ConnectTimeoutError, but not a timeout
            raise ConnectionFailed(str(exc)) from exc
        except ConnectTimeoutError as exc:
            raise ConnectTimedOut(str(exc)) from exc
        except ReadTimeoutError as exc:
            raise ReadTimedOut(str(exc)) from exc
        except SSLError as exc:
            raise TlsFailed(str(exc)) from exc
        except (LocationValueError, InvalidHeader, ValueError) as exc:  # ValueError: http.client's InvalidURL
            raise BadRequest(str(exc)) from exc
        except (HTTPError, OSError) as exc:  # ProtocolError wraps refusals, resets and EgressRefused
            raise ConnectionFailed(str(exc)) from exc
        return Answer(response.status, response.reason, response.headers, _read(response, max_bytes))


def _split(url: str) -> tuple[str, str]:
    """``("scheme://host:port", "/path?query")`` without parsing: the host part is parsed
    (and checked) by urllib3 once per origin, when its pool is made."""
    start = url.find("://")
    start = start + 3 if start >= 0 else 0
    end = len(url)
    for mark in "/?#":
        found = url.find(mark, start)
        if 0 <= found < end:
            end = found
    target = url[end:].split("#", 1)[0]
    if not target.startswith("/"):
        target = "/" + target
    return url[:end], target


def _read(response: HTTPResponse, max_bytes: int) -> bytes:
    """The body, at most ``max_bytes`` (decoded); reading stops as soon as it is larger.

    The connection goes back to its pool either way; one whose answer was not read to the
    end is closed first, so that the rest of that answer never meets the next call."""
    complete = False
    try:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise TooLarge(response.status, None)
        encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        if declared and declared.isdigit() and not encoded:
            body = response.read()  # http.client reads exactly Content-Length bytes, no more
        else:
            chunks, size = [], 0
            for chunk in response.stream(_READ_CHUNK, decode_content=True):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(response.status, b"".join(chunks))
                chunks.append(chunk)
            body = b"".join(chunks)
        complete = True
        return body
    except (HTTPError, OSError) as exc:
        raise BrokenOff(str(exc), response.status) from exc
    finally:
        if not complete:
            response.close()
        response.release_conn()
