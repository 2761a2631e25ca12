"""GET /v1/applications/<id>/events: an application's events as server-sent events, live.

A stream holds one of the gateway's request threads for as long as it is open (gunicorn's
stock gthread worker; docs/decisions.md says why that is kept), so streams are rationed:
each process serves at most ``events_streams`` of them (never more than half its threads,
so requests always find a thread), at most ``events_streams_per_client`` per client, each
for at most ``events_max_seconds``; beyond a cap the answer is 429 with Retry-After.  A
client resumes where it was with ``Last-Event-ID``, as EventSource does by itself.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request, stream_with_context

from core.domain.status import ApplicationStatus
from core.settings import Settings

from ..store import records
from .applications import _owned, _redacted
from .context import ctx, current_client, require
from .problems import TYPES, Problem

bp = Blueprint("events", __name__, url_prefix="/v1")

POLL_SECONDS = 0.25  # how often an open stream looks for new events in the store
KEEP_ALIVE_SECONDS = 15.0  # a comment line when nothing happened, so proxies keep the stream
RETRY_AFTER = "5"  # seconds: a stream ends within events_max_seconds, most much sooner


class StreamSlots:
    """The event streams one gateway process may serve at once, in all and per client."""

    def __init__(self, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    @classmethod
    def for_settings(cls, settings: Settings) -> StreamSlots:
        """Slots for ``settings``: never more than half the process's request threads."""
        return cls(min(settings.events_streams, settings.web_threads // 2), settings.events_streams_per_client)

    def take(self, client_id: str) -> Callable[[], None] | None:
        """A slot for ``client_id`` and the function that gives it back (once, however often
        called), or None when the process or the client has all it may have."""
        with self._lock:
            if self._open.total() >= self.total or self._open[client_id] >= self.per_client:
                return None
            self._open[client_id] += 1
        given_back = threading.Event()

        def give_back() -> None:
            with self._lock:
                if not given_back.is_set():
                    given_back.set()
                    self._open[client_id] -= 1
                    if not self._open[client_id]:
                        del self._open[client_id]
        return give_back


def client_left(connection: socket.socket | None) -> bool:
    """Whether the client closed the connection, seen without reading what it may have sent.

    A write to a closed connection fails only once the peer's reset has come back, so a
    stream would notice a departed client at its second keep-alive (30 s) and keep its slot
    until then: a browser that reloads would find its own old streams in the way."""
    if connection is None:
        return False
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:  # reset by the peer, or closed
        return True


@bp.record_once
def _install_slots(state: Any) -> None:
    state.app.extensions["satupintu.streams"] = StreamSlots.for_settings(state.app.extensions["satupintu"].settings)


@bp.get("/applications/<app_id>/events")
@require("read")
def events(app_id: str) -> Response:
    """Server-sent events: every event of the application, live; resumable with Last-Event-ID."""
    c = ctx()
    with c.engine.connect().execution_options(readonly=True) as conn:
        app = _owned(conn, app_id)
    try:
        last = int(request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or 0)
    except ValueError:
        raise Problem(400, "Bad Request", "Last-Event-ID (or last_event_id) must be an event id",
                      type=TYPES + "malformed") from None
    most = c.settings.events_max_seconds
    try:
        max_seconds = float(request.args.get("timeout") or most)
    except ValueError:
        raise Problem(400, "Bad Request", "timeout must be a number of seconds", type=TYPES + "malformed") from None
    if not 0 <= max_seconds <= 3600:  # also refuses NaN
        raise Problem(400, "Bad Request", "timeout must be between 0 and 3600 seconds", type=TYPES + "malformed")
    slots: StreamSlots = current_app.extensions["satupintu.streams"]
    give_back = slots.take(current_client().id)
    if give_back is None:
        raise Problem(429, "Too Many Requests",
                      f"this gateway serves at most {slots.total} event streams at once, {slots.per_client} "
                      f"per client: close one, or retry after {RETRY_AFTER} s", type=TYPES + "too-many-streams",
                      headers={"Retry-After": RETRY_AFTER})
    deadline = time.monotonic() + min(max_seconds, most)  # ?timeout= may ask for less
    connection = request.environ.get("gunicorn.socket")  # absent under a test client

    def stream() -> Iterator[str]:
        nonlocal last
        try:
            idle = 0.0
            while time.monotonic() < deadline:
                with c.engine.connect().execution_options(readonly=True) as conn:
                    new = records.history(conn, app_id, after_id=last)
                    status = records.application_row(conn, app_id).status
                for event in _redacted(new, app):
                    last = event["id"]
                    yield f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
                if new:
                    idle = 0.0
                if ApplicationStatus(status).terminal and not new:
                    yield "event: end\ndata: {}\n\n"
                    return
                time.sleep(POLL_SECONDS)
                if client_left(connection):
                    return
                idle += POLL_SECONDS
                if idle >= KEEP_ALIVE_SECONDS:
                    idle = 0.0
                    yield ": keep-alive\n\n"
        finally:  # run to its end, or closed by the server when the client went away
            give_back()

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
    response.call_on_close(give_back)  # also when the server closes it before it started
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
