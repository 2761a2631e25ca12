"""Egress control: which addresses Satu Pintu may open a connection to.

Agencies and webhooks are hostile until proven otherwise (OWASP API7, server-side request
forgery).  Every outbound connection made through an ``EgressAdapter`` is checked twice:

- the *host name* must be one the configuration names (the agency's endpoint, WSDL,
  X-Road security server and ``options.allowed_hosts``; any host for a webhook);
- the *address actually connected to* (``getpeername()`` of the open socket, so a DNS
  answer that changes between a check and the connect cannot slip through) must not be
  link-local (169.254.0.0/16, fe80::/10, where cloud metadata services live), a known
  metadata address, unspecified (0.0.0.0, ::), multicast, or reserved.  Loopback and
  private ranges are allowed by default because agencies may well sit on the premises;
  ``SATUPINTU_EGRESS_ALLOW_PRIVATE=0`` and ``SATUPINTU_EGRESS_ALLOW_LOOPBACK=0`` refuse them.

Redirects are never followed by our sessions; this module does not change that.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .deadlines import REAPER

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services outside 169.254.0.0/16 (which is refused as link-local anyway).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "fd00:ec2::254",     # AWS IMDS over IPv6
    "100.100.100.200",   # Alibaba Cloud
    "192.0.0.192",       # Oracle Cloud (classic)
))
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal"})


class EgressRefused(OSError):
    """Raised when a URL's host or the address behind it may not be connected to.

    An ``OSError`` so that ``requests`` and urllib3 (``ProtocolError``) report it as a
    connection failure and callers that already translate connection errors need no new branch.
    """


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


@dataclass(frozen=True)
class EgressPolicy:
    """Where outbound connections may go.  ``allowed_hosts`` empty means any host name."""

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allow_loopback: bool = True
    allow_private: bool = True

    @classmethod
    def from_env(cls, allowed_hosts: Iterable[str] = (), env: Mapping[str, str] | None = None) -> EgressPolicy:
        env = os.environ if env is None else env
        return cls(allowed_hosts=frozenset(h.lower() for h in allowed_hosts if h),
                   allow_loopback=_flag(env, "SATUPINTU_EGRESS_ALLOW_LOOPBACK", True),
                   allow_private=_flag(env, "SATUPINTU_EGRESS_ALLOW_PRIVATE", True))

    # -- checks -------------------------------------------------------------------------

    def host_problem(self, host: str) -> str | None:
        """Why a host *name* may not be used, or None."""
        host = host.lower().rstrip(".")
        if not host:
            return "the URL has no host"
        if host in METADATA_HOSTS:
            return f"{host} is a cloud metadata service"
        if self.allowed_hosts and not any(host == a or (a.startswith(".") and host.endswith(a))
                                          for a in self.allowed_hosts):
            return f"{host} is not a host named in the configuration"
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None
        return self.address_problem(literal)

    def address_problem(self, address: IPAddress | str) -> str | None:
        """Why an IP *address* may not be connected to, or None."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip in METADATA_ADDRESSES:
            return f"{ip} is a cloud metadata address"
        if ip.is_link_local:
            return f"{ip} is link-local (where metadata services live)"
        if ip.is_unspecified:
            return f"{ip} is the unspecified address"
        if ip.is_multicast:
            return f"{ip} is a multicast address"
        if ip.is_loopback:
            return None if self.allow_loopback else f"{ip} is a loopback address (SATUPINTU_EGRESS_ALLOW_LOOPBACK)"
        if ip.is_reserved:
            return f"{ip} is a reserved address"
        if ip.is_private or getattr(ip, "is_shared", False):
            return None if self.allow_private else f"{ip} is a private address (SATUPINTU_EGRESS_ALLOW_PRIVATE)"
        return None

    def check_url(self, url: str, *, resolve: bool = True) -> None:
        """Raise ``EgressRefused`` unless ``url`` is http(s) to an allowed host whose every
        address is allowed.  With ``resolve`` the host name is looked up now."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise EgressRefused(f"{url[:200]}: only http and https URLs are allowed")
        if parts.username or parts.password:
            raise EgressRefused(f"{parts.hostname}: credentials in the URL are not allowed")
        host = parts.hostname or ""
        problem = self.host_problem(host)
        if problem:
            raise EgressRefused(problem)
        if resolve:
            try:
                infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                           type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as exc:
                raise EgressRefused(f"{host} does not resolve: {exc}") from exc
            for info in infos:
                problem = self.address_problem(info[4][0].split("%", 1)[0])
                if problem:
                    raise EgressRefused(f"{host} resolves to {problem}")


def policy_for_agency(agency: Any) -> EgressPolicy:
    """The policy of one agency: the hosts its configuration names, nothing else."""
    options = agency.options or {}
    hosts = set(options.get("allowed_hosts") or ())
    candidates = [agency.endpoint, options.get("wsdl") or ""]
    if agency.xroad:
        candidates.append(agency.xroad.get("security_server") or "")
    for url in candidates:
        if "://" in url and url.split("://", 1)[0] in ("http", "https"):
            host = urlsplit(url).hostname
            if host:
                hosts.add(host)
    return EgressPolicy.from_env(hosts)


# --- the connection-level guard -----------------------------------------------------------

def _guard(connection: HTTPConnection, policy: EgressPolicy) -> Any:
    problem = policy.host_problem(connection.host)
    if problem:
        raise EgressRefused(problem)
    sock = HTTPConnection._new_conn(connection)  # HTTPSConnection wraps TLS around this later
    try:
        peer = sock.getpeername()[0]
        problem = policy.address_problem(peer.split("%", 1)[0])
    except OSError:
        problem = None
    if problem:
        sock.close()
        raise EgressRefused(f"{connection.host} connects to {problem}")
    REAPER.note(sock)  # a call with a total deadline (adapters.deadlines) may shut it down
    return sock


class _GuardedHTTPConnection(HTTPConnection):
    egress_policy: EgressPolicy = EgressPolicy()

    def _new_conn(self) -> Any:
        return _guard(self, self.egress_policy)

    def request(self, *args: Any, **kwargs: Any) -> None:
        REAPER.note(self.sock)  # a kept connection, reused by a call with a deadline
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(HTTPSConnection):
    egress_policy: EgressPolicy = EgressPolicy()

    def _new_conn(self) -> Any:
        return _guard(self, self.egress_policy)

    def request(self, *args: Any, **kwargs: Any) -> None:
        REAPER.note(self.sock)
        super().request(*args, **kwargs)


class EgressAdapter(HTTPAdapter):
    """A ``requests`` transport adapter that checks every new connection against a policy.

    Mount it on a session for ``http://`` and ``https://`` (``guard_session``); it takes
    the usual ``HTTPAdapter`` arguments (pool sizes, ``max_retries``).
    """

    def __init__(self, policy: EgressPolicy | None = None, **kwargs: Any) -> None:
        self.policy = policy or EgressPolicy.from_env()
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _guard_pools(self.poolmanager, self.policy)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise EgressRefused("outbound calls do not go through proxies")

    __attrs__ = [*HTTPAdapter.__attrs__, "policy"]


def _guard_pools(manager: PoolManager, policy: EgressPolicy) -> None:
    http_conn = type("PolicyHTTPConnection", (_GuardedHTTPConnection,), {"egress_policy": policy})
    https_conn = type("PolicyHTTPSConnection", (_GuardedHTTPSConnection,), {"egress_policy": policy})
    manager.pool_classes_by_scheme = {
        "http": type("PolicyHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("PolicyHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


def guarded_pool_manager(policy: EgressPolicy, **kwargs: Any) -> PoolManager:
    """A urllib3 ``PoolManager`` (``num_pools``, ``maxsize``, TLS pool keywords, ...) whose every
    new connection is checked against ``policy``, for callers that skip ``requests``."""
    manager = PoolManager(**kwargs)
    _guard_pools(manager, policy)
    return manager


def guard_session(session: Any, policy: EgressPolicy | None = None, **adapter_kwargs: Any) -> Any:
    """Mount an ``EgressAdapter`` on ``session`` for http and https; returns the session."""
    adapter = EgressAdapter(policy, **adapter_kwargs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
