"""Egress control: which hosts and addresses Satu Pintu may open a connection to.

Agencies and webhooks are hostile until proven otherwise (OWASP API7, server-side request
forgery).  Every connection made through the guarded urllib3 connection classes here
(``guarded_pool_classes``, installed by ``adapters.transport.AgencyAdapter``) is checked twice:

- the *host name*, before connecting: one the configuration names (``options.allowed_hosts``
  when given, else the agency's endpoint, WSDL and X-Road security server; any host for a
  webhook), never a cloud metadata name;
- the *address actually connected to* (``getpeername()`` of the open socket, so a DNS
  answer that changes between a check and the connect cannot slip through), before any
  request byte is sent: never link-local (169.254.0.0/16, fe80::/10, where cloud metadata
  services live), a known metadata address, unspecified, multicast or reserved.  Loopback
  and private ranges are allowed unless ``Settings.egress_allow_loopback`` /
  ``egress_allow_private`` say otherwise (agencies may well sit on the premises).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from core.settings import Settings

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

    An ``OSError`` so that urllib3 and ``requests`` report it as a connection failure
    (``requests.ConnectionError``) carrying this exception and its reason."""


@dataclass(frozen=True)
class EgressPolicy:
    """Where outbound connections may go.  ``allowed_hosts`` empty means any host name."""

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allow_loopback: bool = True
    allow_private: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, allowed_hosts: Iterable[str] = ()) -> EgressPolicy:
        return cls(allowed_hosts=frozenset(h.lower() for h in allowed_hosts if h),
                   allow_loopback=settings.egress_allow_loopback, allow_private=settings.egress_allow_private)

    def host_problem(self, host: str) -> str | None:
        """Why a host *name* may not be used, or None."""
        host = host.lower().strip("[]").rstrip(".")
        if not host:
            return "the URL has no host"
        if host in METADATA_HOSTS:
            return f"{host} is a cloud metadata service"
        if self.allowed_hosts and not any(host == a or (a.startswith(".") and host.endswith(a))
                                          for a in self.allowed_hosts):
            return f"{host} is not a host named in the configuration (options.allowed_hosts)"
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return None
        return self.address_problem(literal)

    def address_problem(self, address: IPAddress | str) -> str | None:
        """Why an IP *address* may not be connected to, or None."""
        ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
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
                problem = self.address_problem(str(info[4][0]))
                if problem:
                    raise EgressRefused(f"{host} resolves to {problem}")


def policy_for_agency(agency: Any, settings: Settings) -> EgressPolicy:
    """One agency's policy: its ``options.allowed_hosts`` when given, else the hosts its
    configuration names (endpoint, WSDL, X-Road security server)."""
    options = agency.options or {}
    hosts = set(options.get("allowed_hosts") or ())
    if not hosts:
        candidates = [agency.endpoint, options.get("wsdl") or ""]
        if agency.xroad:
            candidates.append(agency.xroad.get("security_server") or "")
        hosts = {urlsplit(url).hostname or "" for url in candidates if url.startswith(("http://", "https://"))}
    return EgressPolicy.from_settings(settings, hosts)


# --- the connection-level guard -----------------------------------------------------------

def _checked_connect(connection: HTTPConnection, policy: EgressPolicy, connect: Any) -> None:
    """``connect()`` of a urllib3 connection, with the host checked before and the peer after."""
    problem = policy.host_problem(connection.host)
    if problem:
        raise EgressRefused(problem)
    connect()
    sock = connection.sock
    REAPER.note(sock)  # a call with a total deadline (adapters.deadlines) may shut it down
    try:
        problem = policy.address_problem(sock.getpeername()[0])
    except OSError:
        problem = None  # not connected after all: the request fails on its own
    if problem:
        connection.close()
        raise EgressRefused(f"{connection.host} connects to {problem}")


def guarded_pool_classes(policy: EgressPolicy) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes by scheme (``PoolManager.pool_classes_by_scheme``) whose
    connections obey ``policy`` and note their sockets for the call's deadline."""

    class GuardedHTTPConnection(HTTPConnection):
        def connect(self) -> None:
            _checked_connect(self, policy, super().connect)

        def request(self, *args: Any, **kwargs: Any) -> None:
            REAPER.note(self.sock)  # a kept connection, reused by a call with a deadline
            super().request(*args, **kwargs)

    class GuardedHTTPSConnection(HTTPSConnection):
        # The TLS handshake happens inside connect(), so the peer is checked after it, but
        # still before any byte of the request is written.
        def connect(self) -> None:
            _checked_connect(self, policy, super().connect)

        def request(self, *args: Any, **kwargs: Any) -> None:
            REAPER.note(self.sock)
            super().request(*args, **kwargs)

    return {"http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": GuardedHTTPConnection}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": GuardedHTTPSConnection})}
