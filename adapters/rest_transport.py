"""The REST adapter's HTTP transport: urllib3 makes the connections, we do the exchange.

``requests`` spent about a third of an agency call's CPU on things this adapter never
uses, and ``http.client`` most of what was left (headers validated one regex at a time,
the answer's head parsed through the ``email`` package, timeouts set twice per call).  A
``RestTransport`` merges headers case-insensitively and applies auth; urllib3's
egress-guarded connection class (adapters/egress.py: every new connection checked, TLS
settings fixed once per origin) opens the connections; the exchange itself, one buffer
sent and the answer parsed by llhttp, is adapters/http_exchange.py.  Connections are kept
per origin, like urllib3's non-blocking pools.  Redirects are never followed, a request
is never sent twice by this module, nothing is read from the environment (proxies, CA
bundles, netrc), and no cookie outlives its call.

Failures are the ``TransportFailure`` subclasses (from http_exchange), which
``adapters/rest.py`` turns into agency errors; nothing from urllib3 leaks.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
import warnings
from typing import Any

from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3 import Timeout
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InsecureRequestWarning,
    LocationValueError,
    NewConnectionError,
    SSLError,
)
from urllib3.util.wait import wait_for_read

from core.domain.errors import ConfigError

from .egress import EgressPolicy, guarded_pool_manager
from .http_exchange import (
    Answer,
    AnswerHeaders,
    AnswerTimedOut,
    BadRequest,
    BrokenOff,
    ConnectionFailed,
    ConnectTimedOut,
    ReadTimedOut,
    TlsFailed,
    TooLarge,
    TransportFailure,
    encode_request,
    read_answer,
)

__all__ = ["DEFAULT_HEADERS", "Answer", "AnswerHeaders", "AnswerTimedOut", "BadRequest", "BrokenOff",
           "ConnectTimedOut", "ConnectionFailed", "Headers", "Outgoing", "ReadTimedOut", "RestTransport", "TlsFailed",
           "TooLarge", "TransportFailure", "pool_tls"]

# What a requests.Session sends besides its User-Agent, with this adapter's Accept.  Only the
# codings http_exchange decodes (requests would add br and zstd when their packages are installed).
DEFAULT_HEADERS = {"Accept-Encoding": "gzip, deflate", "Accept": "application/json", "Connection": "keep-alive"}


class Outgoing:
    """A request as auth hooks see it: the attributes of a ``requests.PreparedRequest``
    that ``AuthBase`` callables read and write (``method``, ``url``, ``headers``, ``body``)."""

    __slots__ = ("body", "headers", "method", "url")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> None:
        self.method, self.url, self.headers, self.body = method, url, headers, body


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



class _Origin:
    """The kept-alive connections to one ``scheme://host:port``, the most recent first (as
    urllib3 keeps them).  A call never waits for a connection: with none idle, a new one is
    opened; at most ``maxsize`` wait idle, and one given back to a full pool is closed."""

    __slots__ = ("_closed", "_idle", "_lock", "_maxsize", "_pool", "_read_timeout", "host")

    def __init__(self, pool: HTTPConnectionPool, maxsize: int, read_timeout: float | None) -> None:
        self._pool = pool  # only to make connections: its egress-guarded class and its TLS settings
        self._maxsize, self._read_timeout = maxsize, read_timeout
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.host = _host_header(pool)

    def take(self) -> tuple[socket.socket, bool]:
        """A connected socket and whether it carried a request before."""
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                return self._connect(), False
            # Readable while idle means the agency closed it (or sent garbage): never use it.
            if not wait_for_read(sock, timeout=0.0):
                return sock, True
            sock.close()

    def give_back(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._maxsize:
                self._idle.append(sock)
                return
        sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for sock in idle:
            sock.close()

    def _connect(self) -> socket.socket:
        # The pool's own factory: the connection class checks the egress policy on connect
        # and carries the TLS settings fixed when the pool was made.
        conn = self._pool._new_conn()
        try:
            try:
                conn.connect()
            except NewConnectionError as exc:  # a subclass of ConnectTimeoutError, but not a timeout
                raise ConnectionFailed(str(exc)) from exc
            except (ConnectTimeoutError, TimeoutError) as exc:  # TimeoutError: during the TLS handshake
                raise ConnectTimedOut(str(exc) or "the TLS handshake timed out") from exc
            except (ssl.SSLError, SSLError) as exc:
                raise TlsFailed(str(exc)) from exc
            except (HTTPError, OSError) as exc:  # refusals, resets and EgressRefused
                raise ConnectionFailed(str(exc)) from exc
            sock = conn.sock
            if isinstance(sock, ssl.SSLSocket):
                if sock.selected_alpn_protocol() not in (None, "http/1.1"):
                    raise ConnectionFailed(f"the agency chose {sock.selected_alpn_protocol()}, not HTTP/1.1")
                if not conn.is_verified:
                    warnings.warn(f"unverified HTTPS connection to {conn.host} (options.verify is false)",
                                  InsecureRequestWarning, stacklevel=2)
            sock.settimeout(self._read_timeout)  # once: every recv of every call on it has this timeout
        except BaseException:
            conn.close()
            raise
        return sock


def _host_header(pool: HTTPConnectionPool) -> str:
    """The ``Host`` header for a pool's origin, as http.client writes it (port only when not the default)."""
    host = pool.host.rstrip(".")
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    default = 443 if pool.scheme == "https" else 80
    return host if pool.port in (None, default) else f"{host}:{pool.port}"


class RestTransport:
    """One agency's connections and call settings, shared by the worker's threads."""

    def __init__(self, policy: EgressPolicy, *, headers: dict[str, str], auth: Any, verify: bool | str,
                 cert: tuple[str, str] | None, connect_timeout: float, read_timeout: float,
                 maxsize: int, num_pools: int = 4, total_timeout: float | None = None) -> None:
        self.headers = Headers(headers)
        self.total_timeout = total_timeout  # the most an answer may take once the request is sent
        self.auth = auth
        self.timeout = Timeout(connect=connect_timeout, read=read_timeout)
        self._manager = guarded_pool_manager(policy, num_pools=num_pools, maxsize=maxsize, block=False,
                                             timeout=self.timeout, **pool_tls(verify, cert))
        self._maxsize, self._num_pools = maxsize, num_pools
        self._origins: dict[str, _Origin] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            origins, self._origins = self._origins, {}
        for origin in origins.values():
            origin.close()
        self._manager.clear()

    def call(self, method: str, url: str, headers: dict[str, str], body: bytes | None, max_bytes: int) -> Answer:
        """Send one request and read its answer (at most ``max_bytes``, else ``TooLarge``).

        The request is sent once: if sending fails, even on a kept-alive connection the agency
        may have closed meanwhile, that is ``ConnectionFailed`` and the caller decides."""
        outgoing = Outgoing(method, url, self.headers.merged(headers), body)
        if body is not None:
            if not outgoing.headers.has("Content-Type"):
                outgoing.headers["Content-Type"] = "application/json"
        elif method not in ("GET", "HEAD") and not outgoing.headers.has("Content-Length"):
            outgoing.headers["Content-Length"] = "0"  # as requests says it (urllib3 would not for DELETE)
        if self.auth is not None:
            outgoing = self.auth(outgoing)
        origin_url, target = _split(outgoing.url)
        origin = self._origins.get(origin_url) or self._origin(origin_url)
        request = encode_request(outgoing.method, target, origin.host, outgoing.headers, outgoing.body)
        sock, reused = origin.take()
        try:
            try:
                sock.sendall(request)
            except OSError as exc:
                kind = "a kept-alive" if reused else "a new"
                raise ConnectionFailed(f"sending the request on {kind} connection failed: {exc}") from exc
            total = self.total_timeout
            answer, reusable = read_answer(sock, outgoing.method == "HEAD", max_bytes,
                                           None if total is None else time.monotonic() + total)
        except BaseException:
            sock.close()  # whatever is left of the answer must never meet the next call
            raise
        if reusable:
            origin.give_back(sock)
        else:
            sock.close()
        return answer

    def _origin(self, url: str) -> _Origin:
        with self._lock:
            origin = self._origins.get(url)
            if origin is None:
                try:
                    pool = self._manager.connection_from_url(url)  # parses and checks the host, once
                except (LocationValueError, ValueError) as exc:  # an unknown scheme is a LocationValueError
                    raise BadRequest(str(exc)) from exc
                origins = dict(self._origins)  # readers outside the lock see the old or the new dict
                if len(origins) >= self._num_pools:
                    origins.pop(next(iter(origins))).close()
                origin = origins[url] = _Origin(pool, self._maxsize, self.timeout.read_timeout)
                self._origins = origins
            return origin


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
