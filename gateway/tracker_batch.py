"""What one tracker transaction reads and writes, kept in memory until its end.

A batch of status events (``Tracker._flush``) is applied in one transaction.  The batch
locks and reads the rows of all its applications at once, the events then change copies of
those rows, and the request and application writes and the history rows are written at the
end, one statement per table -- before the commit, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, bindparam, select

from . import notifier
from .store import records
from .store import tables as t

# Built once: constructing a statement per batch costs more than executing it.  (A bindparam
# may not share a name with a column the statement sets.)
_LOCK_APPLICATIONS = (select(t.applications)
                      .where(t.applications.c.id.in_(bindparam("application_ids", expanding=True)))
                      .order_by(t.applications.c.id).with_for_update())
_REQUESTS = (select(t.requests).where(t.requests.c.application_id.in_(bindparam("application_ids", expanding=True)))
             .order_by(t.requests.c.application_id, t.requests.c.step))
_REQUEST_COLUMNS = ("status", "attempts", "updated_at", "agency_reference", "reason")


class EventBatch:
    """The rows one tracker transaction has read, kept as they are after its own writes.

    ``load`` locks the batch's application rows in one statement (in id order, as the events
    are sorted: trackers side by side cannot deadlock) and reads their requests and chain
    heads; the locks (or SQLite's write lock) are held until the commit, so nobody else
    changes these rows meanwhile.  Every write the tracker makes to them goes through
    ``write_request``/``write_application``, which change the copy at once -- later events
    of the batch, the DAG and the combined status read the copies -- and write the row in
    ``finish``, once per row, whatever number of events changed it.  The history rows wait
    there too (``records.defer_events``), in order and chained exactly as if written at once,
    and so do the webhook deliveries (``notifier.defer``).

    Only ``Tracker._flush`` opens one, and it belongs to that transaction alone (checked by
    identity): a retry after a rollback opens a new one and reads the store afresh.
    Elsewhere (``apply_event`` in a transaction of its own) nothing is kept.
    """

    _KEY = "satupintu.tracker_batch"

    def __init__(self, transaction: Any):
        self.transaction = transaction
        self.apps: dict[str, SimpleNamespace] = {}  # application id -> its row
        self.requests: dict[str, list[SimpleNamespace]] = {}  # application id -> its request rows
        self.request_writes: dict[str, SimpleNamespace] = {}  # request id -> its changed row
        self.outputs: set[str] = set()  # request ids whose output changed
        self.app_writes: dict[str, SimpleNamespace] = {}  # application id -> its changed row

    @classmethod
    def open(cls, conn: Connection) -> EventBatch:
        batch = conn.info[cls._KEY] = cls(conn.get_transaction())
        return batch

    @classmethod
    def of(cls, conn: Connection) -> EventBatch | None:
        """The batch of ``conn``'s current transaction, if it has one."""
        batch = conn.info.get(cls._KEY)
        if batch is None or batch.transaction is not conn.get_transaction():
            return None
        return batch

    def load(self, conn: Connection, application_ids: Iterable[str], event_ids: Iterable[str]) -> None:
        """Lock and read the applications the batch's events are about, with their requests and
        chain heads, and look up which of ``event_ids`` are stored already."""
        ids = sorted({i for i in application_ids if i})
        if ids:
            for row in conn.execute(_LOCK_APPLICATIONS, {"application_ids": ids}).mappings():
                self.apps[row["id"]] = SimpleNamespace(**row)
                self.requests[row["id"]] = []
            if self.apps:
                for row in conn.execute(_REQUESTS, {"application_ids": sorted(self.apps)}).mappings():
                    self.requests[row["application_id"]].append(SimpleNamespace(**row))
        records.defer_events(conn, [i for i in event_ids if i], self.apps)
        notifier.defer(conn)

    def rows(self, conn: Connection, application_id: str) -> tuple[Any, list[Any]]:
        """The application row (locked) and its request rows; read now if ``load`` did not."""
        if application_id in self.apps:
            return self.apps[application_id], self.requests[application_id]
        found = conn.execute(_LOCK_APPLICATIONS, {"application_ids": [application_id]}).mappings().first()
        if found is None:
            return None, []  # not kept: the next event for it asks the store again
        app = self.apps[application_id] = SimpleNamespace(**found)
        rows = self.requests[application_id] = [
            SimpleNamespace(**r) for r in conn.execute(_REQUESTS, {"application_ids": [app.id]}).mappings()]
        return app, rows

    def write_request(self, request: SimpleNamespace, values: dict[str, Any]) -> None:
        """Set ``values`` on the batch's copy of ``request``; the row is written at the end."""
        vars(request).update(values)
        self.request_writes[request.id] = request
        if "output" in values:
            self.outputs.add(request.id)

    def write_application(self, app: SimpleNamespace) -> None:
        """Write the copy's status and ``updated_at`` at the end."""
        self.app_writes[app.id] = app

    def finish(self, conn: Connection) -> None:
        """Write what the batch changed, one statement per table and shape; call it before the commit."""
        plain, with_output = [], []
        for request in self.request_writes.values():
            values = {name: getattr(request, name) for name in _REQUEST_COLUMNS}
            values["request_row_id"] = request.id
            if request.id in self.outputs:
                values["output"] = request.output  # only then: a JSON column would store None as null
                with_output.append(values)
            else:
                plain.append(values)
        for params in (plain, with_output):
            if params:  # every row of one executemany sets the same columns
                conn.execute(records.UPDATE_REQUEST, params)
        if self.app_writes:
            conn.execute(records.SET_APPLICATION_STATUS,
                         [{"app_id": app.id, "new_status": app.status, "moment": app.updated_at}
                          for app in self.app_writes.values()])
        records.write_deferred_events(conn)
        notifier.write_deferred(conn)
        self.forget()

    def forget(self) -> None:
        """Drop what was kept; ``of()`` finds nothing any more.  (Touches no connection: it
        also runs after the connection failed.)"""
        self.transaction, self.apps, self.requests = None, {}, {}
        self.request_writes, self.outputs, self.app_writes = {}, set(), {}
