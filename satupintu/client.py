"""A Python client for front offices: submit bundles, read them, follow them live.

```python
from satupintu.client import Client

api = Client("https://gateway.example.go.id", api_key="...")
app = api.submit("business-startup", data, reference="LOKET-7-0042")
for event in api.events(app.id):
    print(event.type, event.data.get("status"))
```

Built on ``requests`` and imports nothing of the gateway (no Flask, store or pika):

- every submission carries an ``Idempotency-Key``, made here unless given, and the same key
  on every retry, so a retried submission can never file a bundle twice;
- answers 429 and 503 (and connection failures) are retried by urllib3's ``Retry``,
  honouring ``Retry-After``;
- problems (RFC 9457) are raised as ``Problem`` with the fields' errors;
- ``events()`` follows the server-sent events of an application (``sseclient-py`` parses
  them) and resumes with ``Last-Event-ID`` after a dropped connection.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import sseclient
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

RETRY_STATUSES = (429, 503)


class Problem(Exception):
    """Raised when the gateway answers with an error (a problem+json document)."""

    def __init__(self, status: int, title: str, detail: str = "", type: str = "about:blank",  # noqa: A002
                 errors: list[dict[str, str]] | None = None):
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status, self.title, self.detail, self.type = status, title, detail, type
        self.errors = errors or []

    @classmethod
    def from_response(cls, response: requests.Response) -> Problem:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return cls(response.status_code, str(body.get("title") or response.reason or "error"),
                   str(body.get("detail") or ""), str(body.get("type") or "about:blank"),
                   [e for e in body.get("errors") or [] if isinstance(e, dict)])


@dataclass(frozen=True)
class AgencyRequest:
    """One step of an application at its agency."""

    step: str
    agency: str
    status: str
    agency_reference: str | None = None
    reason: str | None = None
    attempts: int = 0
    updated_at: str | None = None
    due_at: str | None = None
    corrections: list[dict[str, str]] = field(default_factory=list)
    deemed: bool = False

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AgencyRequest:
        return cls(step=doc["step"], agency=doc["agency"], status=doc["status"],
                   agency_reference=doc.get("agency_reference"), reason=doc.get("reason"),
                   attempts=int(doc.get("attempts") or 0), updated_at=doc.get("updated_at"),
                   due_at=doc.get("due_at"), corrections=list(doc.get("corrections") or []),
                   deemed=bool(doc.get("deemed")))


@dataclass(frozen=True)
class Application:
    """A bundled application and the combined status of its requests."""

    id: str
    service: str
    status: str
    reference: str | None
    created_at: str
    updated_at: str
    requests: list[AgencyRequest]
    correct_by: str | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Application:
        return cls(id=doc["id"], service=doc["service"], status=doc["status"], reference=doc.get("reference"),
                   created_at=doc["created_at"], updated_at=doc["updated_at"],
                   requests=[AgencyRequest.from_json(r) for r in doc.get("requests", [])],
                   correct_by=doc.get("correct_by"), document=doc)

    @property
    def decided(self) -> bool:
        return self.status in {"completed", "rejected", "failed", "cancelled"}


@dataclass(frozen=True)
class Service:
    """A bundled service of the catalog."""

    id: str
    title: str
    version: Any
    input_schema: dict[str, Any]
    steps: list[dict[str, Any]]
    documents: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Service:
        return cls(id=doc["id"], title=doc["title"], version=doc.get("version"),
                   input_schema=doc.get("input_schema") or {}, steps=list(doc.get("steps") or []),
                   documents=dict(doc.get("documents") or {}))


@dataclass(frozen=True)
class Event:
    """One server-sent event of an application: its id, type and JSON data."""

    id: int | None
    type: str
    data: dict[str, Any]


class Client:
    """The gateway's HTTP API for one API key."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, retries: int = 5,
                 backoff: float = 0.5, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        # Every method is retried: a POST carries its Idempotency-Key, the same on each try.
        retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff,
                      status_forcelist=RETRY_STATUSES, allowed_methods=None, respect_retry_after_header=True,
                      raise_on_status=False)
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        response = self.session.request(method, self.base_url + path, allow_redirects=False, **kwargs)
        if response.status_code >= 400:
            raise Problem.from_response(response)
        return response.json() if response.content else None

    # -- the API ----------------------------------------------------------------------------

    def services(self) -> list[Service]:
        return [Service.from_json(s) for s in self._call("GET", "/v1/services")["items"]]

    def submit(self, service: str, data: dict[str, Any], *, reference: str | None = None,
               documents: dict[str, str] | None = None, notify: dict[str, Any] | None = None,
               idempotency_key: str | None = None) -> Application:
        """File one bundle; the same ``idempotency_key`` (made here when not given) on every retry."""
        body: dict[str, Any] = {"service": service, "data": data}
        for name, value in (("reference", reference), ("documents", documents), ("notify", notify)):
            if value is not None:
                body[name] = value
        key = idempotency_key or uuid.uuid4().hex
        return Application.from_json(self._call("POST", "/v1/applications", json=body,
                                                headers={"Idempotency-Key": key}))

    def application(self, app_id: str) -> Application:
        return Application.from_json(self._call("GET", f"/v1/applications/{app_id}"))

    def applications(self, *, status: str | None = None, service: str | None = None,
                     page_size: int = 50) -> Iterator[Application]:
        """Every application of this client, newest first, page after page."""
        params: dict[str, Any] = {"limit": page_size}
        params.update({k: v for k, v in (("status", status), ("service", service)) if v})
        while True:
            page = self._call("GET", "/v1/applications", params=params)
            yield from (Application.from_json(doc) for doc in page["items"])
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def history(self, app_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/applications/{app_id}/history")["events"]

    def cancel(self, app_id: str) -> Application:
        return Application.from_json(self._call("POST", f"/v1/applications/{app_id}/cancel"))

    def ops_agencies(self) -> dict[str, Any]:
        """Per agency, what the dashboard shows: calls, latency, queue, circuit (an ``ops`` key)."""
        return self._call("GET", "/ops/api/agencies")

    def wait(self, app_id: str, *, timeout: float = 300.0, interval: float = 1.0) -> Application:
        """Poll until the application is decided (or ``timeout`` seconds passed); the last document."""
        deadline = time.monotonic() + timeout
        while True:
            app = self.application(app_id)
            if app.decided or time.monotonic() >= deadline:
                return app
            time.sleep(interval)

    def events(self, app_id: str, *, last_event_id: int | None = None, stream_seconds: float | None = None,
               reconnects: int = 10) -> Iterator[Event]:
        """The application's events, live, until the server ends the stream (``end`` or its time).

        A connection that drops is opened again, up to ``reconnects`` times in a row, with
        ``Last-Event-ID`` so that no event is seen twice or missed.
        """
        failures = 0
        params = {"timeout": stream_seconds} if stream_seconds is not None else {}
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            try:
                with self.session.get(f"{self.base_url}/v1/applications/{app_id}/events", params=params,
                                      headers=headers, stream=True, timeout=(self.timeout, 60),
                                      allow_redirects=False) as response:
                    if response.status_code >= 400:
                        raise Problem.from_response(response)
                    for message in sseclient.SSEClient(response.iter_content(chunk_size=None)).events():
                        failures = 0
                        if message.event == "end":
                            return
                        if message.id:
                            last_event_id = int(message.id)
                        yield Event(last_event_id if message.id else None, message.event or "message",
                                    json.loads(message.data) if message.data else {})
                return  # the server closed the stream on time
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.Timeout) as exc:
                failures += 1
                if failures > reconnects:
                    raise Problem(503, "Service Unavailable", f"the event stream dropped {failures} times") from exc
                time.sleep(min(0.2 * 2 ** failures, 5.0))
