"""One HTTP transport for every agency call, REST and SOAP alike: a ``requests.Session``
per agency with one ``AgencyAdapter`` mounted on it.

``requests`` does the HTTP; the adapter adds what an agency call must have besides:

- the egress policy on every connection (``adapters.egress``: host checked before
  connecting, the connected address after, proxies refused);
- a total time for the whole call (``adapters.deadlines``), on top of the per-read timeout;
- the answer read whole here, decoded and bounded (``max_bytes``, counted after decoding,
  so a gzip bomb stops at the limit), and a compressed body that ends before its compressed
  stream does is a broken answer, never a silently partial one;
- TLS and mTLS from the agency's ``auth:`` section, checked when the session is built.

The session follows no redirect, reads nothing from the environment (proxies, CA bundles,
netrc) and keeps no cookie.  Failures leave as ``requests`` exceptions (ours subclass
them) and ``agency_error`` is the one place that turns them into agency errors.
"""

from __future__ import annotations

import io
import os
import zlib
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import (
    ChunkedEncodingError,
    ConnectTimeout,
    ContentDecodingError,
    InvalidHeader,
    InvalidSchema,
    InvalidURL,
    MissingSchema,
    ReadTimeout,
    RequestException,
    SSLError,
    TooManyRedirects,
)
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from core.domain.errors import AgencyError, ConfigError, PermanentAgencyError, TransientAgencyError
from core.masking import raw_excerpt
from core.settings import Settings

from .auth import requests_auth, tls_settings
from .deadlines import REAPER
from .egress import EgressPolicy, EgressRefused, guarded_pool_classes, policy_for_agency

USER_AGENT = "satupintu-adapter/1"
DEFAULT_MAX_ANSWER_BYTES = 1024 * 1024
# Only the codings ``_Decoder`` decodes (requests would offer br and zstd when installed).
ACCEPT_ENCODING = "gzip, deflate"
_CHUNK = 65536
# Bytes received for a body, beyond which it is too large whatever it decodes to.
_RAW_PER_BODY_BYTE = 4


class AnswerTimedOut(ReadTimeout):
    """Raised when the answer was not complete within the call's total time (``timeouts.total``)."""


class AnswerTooLarge(RequestException):
    """Raised when the answer is larger, decoded, than ``max_bytes``; ``partial`` is what was read."""

    def __init__(self, message: str, *, response: requests.Response, partial: bytes) -> None:
        super().__init__(message, response=response)
        self.partial = partial


class AnswerBrokenOff(ChunkedEncodingError):
    """Raised when the answer's body stopped, or could not be decoded, before it was complete."""


class _Decoder:
    """A gzip (one or more members) or deflate (zlib-wrapped, or raw as some servers send it)
    body, decoded as it arrives and never more than asked for at once (gzip bombs)."""

    def __init__(self, coding: str) -> None:
        self.gzip = coding != "deflate"
        self.obj: Any = zlib.decompressobj(16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS)
        self.sniffed: bytes | None = None if self.gzip else b""  # deflate: kept until zlib judged its header
        self.fed = self.member_done = False

    def feed(self, data: bytes, room: int) -> bytes:
        """The bytes ``data`` decodes to, stopping once there are more than ``room``."""
        if self.obj is None:
            return b""  # garbage after a complete gzip member: ignored, as urllib3 does
        self.fed = self.fed or bool(data)
        if self.sniffed is not None:
            self.sniffed += data
        out = b""
        while data:
            try:
                out += self.obj.decompress(data, room + 1 - len(out))
            except zlib.error:
                if self.sniffed is not None:  # deflate without the zlib wrapper: again, from its start
                    data, self.sniffed, self.obj = self.sniffed, None, zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                if self.member_done:
                    self.obj = None
                    return out
                raise
            if self.sniffed is not None and len(self.sniffed) >= 2:
                self.sniffed = None  # zlib accepted its header
            if len(out) > room or not (self.gzip and self.obj.eof and self.obj.unused_data):
                return out
            data, self.member_done = self.obj.unused_data, True  # the next gzip member
            self.obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return out

    @property
    def complete(self) -> bool:
        """Whether the compressed stream reached its end (an empty body counts as complete)."""
        return self.obj is None or self.obj.eof or not self.fed


class AgencyAdapter(HTTPAdapter):
    """The transport adapter of an agency session: egress policy, total time, bounded and
    decoded answers.  Takes the usual ``HTTPAdapter`` arguments (pool sizes)."""

    __attrs__ = [*HTTPAdapter.__attrs__, "policy", "total_timeout", "max_bytes"]

    def __init__(self, policy: EgressPolicy, *, total_timeout: float | None = None,
                 max_bytes: int | None = None, **kwargs: Any) -> None:
        self.policy, self.total_timeout, self.max_bytes = policy, total_timeout, max_bytes
        super().__init__(**kwargs)  # max_retries stays 0: a request is never sent twice

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = guarded_pool_classes(self.policy)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise EgressRefused("outbound calls do not go through proxies")

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        """Send ``request`` and read its answer whole, within the total time if there is one."""
        if self.total_timeout is None:
            return self._read(super().send(request, True, timeout, verify, cert, proxies))
        with REAPER.watch(self.total_timeout) as watch:
            try:
                response = self._read(super().send(request, True, timeout, verify, cert, proxies))
            except (RequestException, OSError) as exc:
                if watch.expired and not isinstance(exc, AnswerTooLarge):  # the reaper cut it: that is why
                    raise self._late(request) from exc
                raise
            if watch.expired and _ends_with_the_connection(response):
                # Read "whole" only because the reaper cut the connection that framed it; an
                # answer framed by its length or its chunks that arrived whole is kept.
                raise self._late(request)
        return response

    def _late(self, request: requests.PreparedRequest) -> AnswerTimedOut:
        return AnswerTimedOut(f"answer not complete within {self.total_timeout:g} s (timeouts.total)",
                              request=request)

    def _read(self, response: requests.Response) -> requests.Response:
        """The answer with its body read, decoded and bounded; ``response.content`` then
        serves it from memory (``raw`` becomes a ``BytesIO``), the connection back in its pool."""
        raw, limit = response.raw, self.max_bytes
        try:
            declared = response.headers.get("Content-Length", "")
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise self._too_large(response, b"")  # refused before reading it
            coding = response.headers.get("Content-Encoding", "").strip().lower()
            decoder = _Decoder(coding) if coding in ("gzip", "x-gzip", "deflate") else None
            room = limit if limit is not None else 1 << 62
            chunks, size, received = [], 0, 0
            for data in raw.stream(_CHUNK, decode_content=False):
                received += len(data)
                if decoder is not None:
                    data = decoder.feed(data, room - size)
                size += len(data)
                if size > room or received > _RAW_PER_BODY_BYTE * room + _CHUNK:
                    raise self._too_large(response, b"".join(chunks))
                chunks.append(data)
            if decoder is not None and not decoder.complete:
                raise AnswerBrokenOff(f"the compressed body ended before its compressed stream did "
                                      f"(truncated after {size} decoded bytes)", response=response)
        except RequestException:  # ours, above (an OSError too)
            response.close()
            raise
        except ReadTimeoutError as exc:
            response.close()
            raise ReadTimeout(f"the answer's body stalled: {exc}", response=response) from exc
        except (Urllib3Error, OSError, zlib.error) as exc:
            response.close()
            raise AnswerBrokenOff(f"the answer's body broke off: {exc}", response=response) from exc
        except BaseException:
            response.close()
            raise
        raw.release_conn()
        response.raw = io.BytesIO(b"".join(chunks))
        return response

    def _too_large(self, response: requests.Response, partial: bytes) -> AnswerTooLarge:
        return AnswerTooLarge(f"answer larger than {self.max_bytes} bytes (options.max_answer_bytes)",
                              response=response, partial=partial)


def _ends_with_the_connection(response: requests.Response) -> bool:
    """Whether the answer's body is framed by the connection closing (no length, not chunked)."""
    headers = response.headers
    return "Content-Length" not in headers and "chunked" not in headers.get("Transfer-Encoding", "").lower()


class AgencySession(requests.Session):
    """A session that never follows a redirect (whatever the caller, zeep included, asks),
    reads nothing from the environment and keeps no cookie."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)

    def call(self, method: str, url: str, *, headers: dict[str, str], data: bytes | None,
             timeout: tuple[float, float]) -> requests.Response:
        """One agency call, as ``request()`` does it but without ``Session.prepare_request``'s
        generic merging of cookies, params and hooks this session never has (a third of a
        call's CPU): the session's headers and auth go on a ``requests.Request``, prepared and
        sent through the public ``Session.send``."""
        merged = CaseInsensitiveDict(self.headers)
        merged.update(headers)
        prepared = requests.Request(method, url, headers=merged, data=data, auth=self.auth).prepare()
        return self.send(prepared, timeout=timeout, allow_redirects=False)


def guard_session(session: requests.Session, policy: EgressPolicy, **adapter_kwargs: Any) -> requests.Session:
    """Mount an ``AgencyAdapter`` enforcing ``policy`` on ``session`` for http and https."""
    adapter = AgencyAdapter(policy, **adapter_kwargs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def agency_session(agency: Any, settings: Settings, *, total_timeout: float | None,
                   headers: dict[str, str] | None = None) -> AgencySession:
    """The one session of an agency: egress policy, total time, answer cap, auth, TLS.

    Raises ``ConfigError`` when a secret, a CA bundle or a client certificate is missing."""
    options, auth = agency.options or {}, agency.auth or {}
    verify, cert = tls_settings(auth, options.get("verify"))
    if isinstance(verify, str) and not os.path.exists(verify):
        raise ConfigError(f"no TLS CA certificate bundle at {verify!r}", field="options.verify")
    for path, name in zip(cert or (), ("cert", "key"), strict=False):
        if not os.path.exists(path):
            raise ConfigError(f"no TLS client {name} file at {path!r}", field=f"auth.{name}")
    session = AgencySession()
    session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING, **(headers or {})})
    session.auth = requests_auth(auth)
    session.verify, session.cert = verify, cert
    # As many kept connections per host as calls may run at once, so none is thrown away after use.
    pool = max(int(getattr(agency, "concurrency", 10)), 10)
    return guard_session(session, policy_for_agency(agency, settings), total_timeout=total_timeout,
                         max_bytes=int(options.get("max_answer_bytes", DEFAULT_MAX_ANSWER_BYTES)),
                         pool_connections=4, pool_maxsize=pool)


def _egress_refusal(exc: BaseException) -> EgressRefused | None:
    """The ``EgressRefused`` somewhere in the chain of ``exc`` (urllib3 and requests wrap it)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, EgressRefused):
            return error
        links = [error.__cause__, error.__context__, getattr(error, "reason", None), *error.args]
        todo += [link for link in links if isinstance(link, BaseException)]
    return None


def agency_error(exc: BaseException, *, agency: str, request_id: str, where: str,
                 timeout: tuple[float, float]) -> AgencyError:
    """What a failed HTTP exchange means, as one of our errors (raise it ``from exc``).

    Refused by the egress policy, a TLS failure, a request that cannot be sent and an
    answer too large are permanent; timeouts, refused or broken connections and broken
    answers are transient."""
    response = getattr(exc, "response", None)
    status = response.status_code if response is not None else None

    def fail(cls: type[AgencyError], message: str, raw: bytes | None = None) -> AgencyError:
        return cls(f"agency {agency}: {where}: {message}", agency=agency, request_id=request_id,
                   status_code=status, raw=raw_excerpt(raw))

    refused = _egress_refusal(exc)
    if refused is not None:
        return fail(PermanentAgencyError, f"refused by the egress policy: {refused}")
    if isinstance(exc, AnswerTooLarge):
        return fail(PermanentAgencyError, str(exc), exc.partial)
    if isinstance(exc, AnswerTimedOut):
        return fail(TransientAgencyError, str(exc))
    if isinstance(exc, ConnectTimeout):
        return fail(TransientAgencyError, f"no connection within {timeout[0]:g} s")
    if isinstance(exc, ReadTimeout):
        return fail(TransientAgencyError, f"no answer within {timeout[1]:g} s")
    if isinstance(exc, SSLError):
        return fail(PermanentAgencyError, f"TLS failed: {exc}")
    if isinstance(exc, (ChunkedEncodingError, ContentDecodingError)):
        return fail(TransientAgencyError, f"answer broken off: {exc}")
    if isinstance(exc, TooManyRedirects):
        return fail(PermanentAgencyError, "redirects are not followed")
    if isinstance(exc, (InvalidHeader, InvalidURL, InvalidSchema, MissingSchema, ValueError)):
        return fail(PermanentAgencyError, f"bad request: {exc}")
    return fail(TransientAgencyError, f"connection failed: {exc}")
