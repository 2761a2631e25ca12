"""``satupintu config check [--offline]``: the catalog as it will behave, before it is used.

Beyond what loading validates (both file kinds against ``schemas/``, every mapping against
the service's input and earlier steps), this asks each adapter what it can find without
sending anything, checks the folder's ``calendar.yaml``, and (unless ``--offline``) reaches
every agency: an agency at a wrong address must fail here, not on the first citizen's bundle.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from core.domain.errors import SatupintuError
from core.settings import Settings

from .startup import read_catalog


def stages(after: Mapping[str, Sequence[str]], order: Sequence[str]) -> list[list[str]]:
    """The steps grouped by when they can run: a step is in the stage after its latest
    dependency, so the steps of one stage run side by side.  ``order`` orders each stage."""
    depth: dict[str, int] = {}
    for step in order:  # a topological order: dependencies come first
        depth[step] = 1 + max((depth[d] for d in after[step]), default=-1)
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for step in order:
        grouped[depth[step]].append(step)
    return grouped


def describe_graph(after: Mapping[str, Sequence[str]], order: Sequence[str]) -> str:
    """``company -> (tax, permit) -> social``: the stages, side-by-side steps in parentheses."""
    return " -> ".join(group[0] if len(group) == 1 else f"({', '.join(group)})" for group in stages(after, order))


def reach_targets(agency: Any) -> list[str]:
    """The URLs that must answer for ``agency`` to be called: its endpoint (the X-Road
    security server when it sits behind one), and a SOAP agency's WSDL when it is fetched."""
    urls = [agency.xroad["security_server"] if agency.xroad else agency.endpoint]
    wsdl = str((agency.options or {}).get("wsdl") or "")
    if wsdl.startswith(("http://", "https://")) and wsdl not in urls:
        urls.append(wsdl)
    return urls


def failure_reason(exc: BaseException) -> str:
    """A short reason for a failed request: the operating system's words for the socket
    error at the bottom of requests' and urllib3's wrappers, else the exception's text."""
    if isinstance(exc, requests.ConnectTimeout):
        return "no connection within the connect timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    seen, todo = set(), [exc]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in errno.errorcode:
            return os.strerror(error.errno).lower()
        todo += [error.__cause__, error.__context__, getattr(error, "reason", None),
                 *(a for a in error.args if isinstance(a, BaseException))]
    return str(exc)[:200]


def reach(agency: Any, settings: Settings) -> list[str]:
    """Connect to each of the agency's URLs and make one harmless request (HEAD), within the
    agency's connect and read timeouts; any HTTP answer counts as reachable.  The problems."""
    from adapters.auth import tls_settings
    from adapters.egress import EgressRefused, policy_for_agency
    verify, cert = tls_settings(agency.auth or {}, (agency.options or {}).get("verify"))
    policy = policy_for_agency(agency, settings)
    problems = []
    with requests.Session() as session:
        session.verify, session.cert = verify, cert
        for url in reach_targets(agency):
            try:
                policy.check_url(url)
                session.head(url, timeout=(agency.connect_timeout, agency.read_timeout), allow_redirects=False)
            except EgressRefused as exc:
                problems.append(f"agency {agency.id}: will not connect to {url} ({exc})")
            except requests.RequestException as exc:
                problems.append(f"agency {agency.id}: cannot connect to {url} ({failure_reason(exc)})")
    return problems


def adapter_problems(agency: Any, settings: Settings) -> list[str]:
    from adapters.registry import adapter_class
    adapter = adapter_class(agency.adapter)(agency, settings)
    try:
        return adapter.check()
    finally:
        adapter.close()


def calendar_problems(settings: Settings) -> Iterator[str]:
    """The problems of the catalog's ``calendar.yaml`` (each names its line); none without one."""
    from gateway.calendar_file import load_calendar
    if not (Path(settings.config_dir) / "calendar.yaml").exists():
        return
    try:
        load_calendar(settings.config_dir, settings.timezone)
    except SatupintuError as exc:
        yield str(exc)


def cmd_config_check(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.schema_limits import unbounded_fields
    try:
        catalog = read_catalog(settings)
    except SatupintuError as exc:
        print(exc, file=sys.stderr)
        return 1
    agencies = list(catalog.agencies.values())
    with ThreadPoolExecutor(max_workers=8) as pool:  # each check may wait a connect timeout
        found = list(pool.map(lambda a: adapter_problems(a, settings), agencies))
        reached = list(pool.map(lambda a: reach(a, settings), agencies)) if not args.offline else [[]] * len(agencies)
    problems = 0
    for agency, own, unreachable in zip(agencies, found, reached):
        for problem in own + unreachable:
            named = problem.startswith((agency.file, "agency "))  # adapters name the file themselves
            print(problem if named else f"{agency.file}: {problem}", file=sys.stderr)
        problems += len(own) + len(unreachable)
        state = "ok" if not own and not unreachable else f"{len(own) + len(unreachable)} problem(s)"
        reached_text = "" if args.offline or unreachable else ", reachable"
        print(f"agency {agency.id}: {agency.adapter}, {len(agency.operations)} operation(s){reached_text}, {state}")
    for service in catalog.services.values():
        print(f"service {service.id}: {len(service.steps)} step(s): {describe_graph(service.after, service.order)}")
        for warning in unbounded_fields(service.input_schema):  # a warning: the exit status stays 0
            print(f"warning: {service.file}: input_schema {warning}", file=sys.stderr)
    for problem in calendar_problems(settings):
        print(problem, file=sys.stderr)
        problems += 1
    return 1 if problems else 0
