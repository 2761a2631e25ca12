"""A submission's rows, worked out in memory and written together with those of other
submissions (``store/sqlite.py``), read back exactly as they were meant, on SQLite and
PostgreSQL alike."""

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from gateway import audit
from gateway.store import tables as t


def submit(client, auth, body, key="rows"):
    response = client.post("/v1/applications", json=body, headers={**auth, "Idempotency-Key": key})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def test_a_submission_reads_back_as_its_answer(client, auth, example):
    answer = submit(client, auth, example)
    read = client.get(f"/v1/applications/{answer['id']}", headers=auth).get_json()
    assert read == answer


def test_stored_rows_keep_their_types(client, auth, example, engine):
    answer = submit(client, auth, example)
    with engine.connect() as conn:
        app = conn.execute(select(t.applications).where(t.applications.c.id == answer["id"])).one()
        requests = conn.execute(select(t.requests).where(t.requests.c.application_id == answer["id"])).all()
        events = conn.execute(select(t.events).where(t.events.c.application_id == answer["id"])
                              .order_by(t.events.c.id)).all()
        outbox = conn.execute(select(t.outbox)).all()
    assert app.data == example["data"] and app.reference == example["reference"]
    assert app.idempotency_key == "rows" and app.cancel_requested is False
    assert isinstance(app.created_at, dt.datetime) and app.created_at == app.updated_at
    assert {r.step for r in requests} == {"company", "tax", "permit", "social"}
    assert all(r.output is None and r.attempts == 0 for r in requests)
    assert events[0].type == "submitted" and events[0].detail["service"] == example["service"]
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert [(m.exchange, m.routing_key, m.sent_at) for m in outbox] == [("dispatch", "company-registry", None)]
    assert outbox[0].body["application_id"] == answer["id"] and outbox[0].headers["x-attempt"] == 1
    report = audit.verify(engine)
    assert report.broken is None and report.events == len(events)


def test_submissions_at_once_each_get_their_own_answer(app, auth, example, engine):
    """Submissions that arrive together share write transactions (``store/sqlite.py``):
    each is stored whole, a repeated Idempotency-Key gives the first one's answer, and the
    audit chain of every application holds."""
    answers: dict[str, list] = {}

    def one(key: str) -> None:
        response = app.test_client().post("/v1/applications", json=example,
                                          headers={**auth, "Idempotency-Key": key})
        answers.setdefault(key, []).append((response.status_code, response.get_json()))

    keys = [f"together-{i}" for i in range(12)] + ["together-0", "together-1"]
    threads = [threading.Thread(target=one, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(len(v) for v in answers.values()) == [1] * 10 + [2, 2]
    for key, seen in answers.items():
        assert {status for status, _ in seen} <= {200, 202}, (key, seen)
        assert len({body["id"] for _, body in seen}) == 1, key  # a repeat answers with the same application
    ids = {seen[0][1]["id"] for seen in answers.values()}
    with engine.connect() as conn:
        stored = set(conn.execute(select(t.applications.c.id)).scalars())
        outbox = conn.execute(select(t.outbox.c.body)).scalars().all()
    assert stored == ids
    assert sorted(m["application_id"] for m in outbox) == sorted(ids)
    report = audit.verify(engine)
    assert report.broken is None


@pytest.fixture
def unmappable(config_dir):
    """The demo catalog with a first step whose mapping fails at evaluation (``length()`` of a
    number is a JMESPath type error): it fails, the steps after it are skipped."""
    service = config_dir / "services" / "business-startup.yaml"
    service.write_text(service.read_text().replace("company_name: data.company.name",
                                                   "company_name: length(data.company.employees)", 1))
    return config_dir


def test_an_application_settled_at_submission_queues_its_webhook_in_the_same_transaction(
        unmappable, app, make_key, engine, example):
    """A submission settled at once (every step failed its mapping or was skipped) queues its
    webhook delivery in the transaction that stores it (``notifier.enqueue``)."""
    key = make_key("submit", "read", webhook_url="http://127.0.0.1:9/hook")
    response = app.test_client().post("/v1/applications", json=example,
                                      headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "settled"})
    assert response.status_code == 202, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["status"] == "failed"
    with engine.connect() as conn:
        hooks = conn.execute(select(t.webhooks.c.application_id, t.webhooks.c.body)).all()
        outbox = conn.execute(select(t.outbox.c.id)).all()
    assert [(h.application_id, h.body["status"], h.body["cause"]) for h in hooks] == [
        (answer["id"], "failed", "submitted")]
    assert outbox == []
    assert audit.verify(engine).broken is None


@pytest.mark.postgresql_only  # LISTEN/NOTIFY is PostgreSQL's
def test_a_submission_wakes_the_relay_at_commit_on_postgresql(client, auth, example, engine):
    assert engine.dialect.name == "postgresql"
    import psycopg

    from gateway.store.records import OUTBOX_CHANNEL
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        submit(client, auth, example, key="wake")
        channels = [n.channel for n in listener.notifies(timeout=5, stop_after=1)]
    assert channels == [OUTBOX_CHANNEL]
