"""Operators find an application by NIK through ``application_niks``: the keyed hashes of its
NIKs, written with the application at submission and looked up through an index, on SQLite
and PostgreSQL alike.  No plaintext NIK is stored there, and answers stay masked."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import delete, insert, select

from core import masking
from gateway import clients
from gateway.applications import _NewApplication
from gateway.ops import queries, queues
from gateway.store import tables as t
from gateway.store.sqlite import apply_together

NIK = "3171012345670123"
OTHER_NIK = "3271999988887777"


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr(queues, "snapshot", lambda *a, **k: queues.Snapshot(True, "reachable", (), 0.0))


@pytest.fixture
def ops_auth(make_key):
    return {"Authorization": f"Bearer {make_key('ops', name=f'operator-{uuid.uuid4().hex[:6]}')}"}


def submit(client, auth, body):
    response = client.post("/v1/applications", json=body, headers={**auth, "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def nik_rows(engine, app_id=None):
    query = select(t.application_niks.c.application_id, t.application_niks.c.nik_hash)
    if app_id is not None:
        query = query.where(t.application_niks.c.application_id == app_id)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def search(client, auth, q):
    response = client.get("/ops/api/search", query_string={"q": q}, headers=auth)
    assert response.status_code == 200
    return response.get_json()


def with_nik(example, nik):
    return {**example, "data": {**example["data"], "applicant": {**example["data"]["applicant"], "nik": nik}}}


def test_a_submission_stores_the_keyed_hash_of_its_nik_and_never_the_nik(client, auth, example, engine):
    doc = submit(client, auth, example)
    rows = nik_rows(engine)
    assert rows == [(doc["id"], masking.nik_hash(NIK))]
    assert all(NIK not in value and NIK[:8] not in value for row in rows for value in row)


def test_each_nik_of_an_application_is_stored_once(engine, catalog):
    service = catalog.services["business-startup"]
    client = clients.Client(id="cl_x", name="x", scopes=frozenset({"submit"}))
    data = {"applicant": {"nik": NIK}, "heirs": [{"nik": OTHER_NIK}, {"note": f"same person {NIK}"},
                                                 {"nik": "3171 0123 4567 0123"}, {"nik": "12345"}]}
    new = _NewApplication(service, client, {"service": service.id, "data": data}, None, "0" * 64)
    assert sorted(row["nik_hash"] for row in new.niks) == sorted([masking.nik_hash(NIK), masking.nik_hash(OTHER_NIK)])


def test_the_stored_hashes_are_those_of_every_nik_the_masking_hides():
    data = {"a": {"nik": " 3171 0123 4567 0123 "}, "NIK_x": "12", "flag": True,
            "b": [{"owner_nik": 3171012345670124}, {"x": "id NIK3171012345670125 and 31710123456701261"}],
            "heirs": [["3171999988887777"]], "n": 317101234567012}
    assert masking.niks_in(data) == {"3171012345670123", "3171012345670124", "3171012345670125", "3171999988887777"}
    assert masking.nik_hashes(data) == sorted(masking.nik_hash(n) for n in masking.niks_in(data))


def test_submissions_written_together_each_keep_their_own_nik_rows(engine, catalog, make_key):
    make_key("submit", name="together")
    with engine.connect() as conn:
        client_id = conn.execute(select(t.clients.c.id).where(t.clients.c.name == "together")).scalar()
    client = clients.Client(id=client_id, name="together", scopes=frozenset({"submit"}))
    service = catalog.services["business-startup"]
    bodies = [{"service": service.id, "data": {"applicant": {"nik": NIK}}},
              {"service": service.id, "data": {"applicant": {"name": "no NIK here"}}},
              {"service": service.id, "data": {"applicant": {"nik": OTHER_NIK}, "spouse": {"nik": NIK}}}]
    news = [_NewApplication(service, client, body, None, "0" * 64) for body in bodies]
    with engine.begin() as conn:  # one group, one commit
        apply_together(conn, [n.writes() for n in news])
    assert sorted(nik_rows(engine)) == sorted([(news[0].app.id, masking.nik_hash(NIK)),
                                               (news[2].app.id, masking.nik_hash(OTHER_NIK)),
                                               (news[2].app.id, masking.nik_hash(NIK))])


def test_a_nik_search_finds_an_application_behind_twenty_thousand_newer_ones(client, auth, ops_auth, example,
                                                                              engine):
    """The search once hashed only the newest 20,000 applications' NIKs: the index has no such horizon."""
    old = submit(client, auth, example)
    with engine.connect() as conn:
        app = conn.execute(select(t.applications).where(t.applications.c.id == old["id"])).one()._asdict()
    later = app["created_at"] + dt.timedelta(seconds=1)
    newer = [dict(app, id=f"app_{i:032x}", idempotency_key=None, created_at=later, updated_at=later,
                  data={"applicant": {"nik": f"3171{i:012d}"}}) for i in range(20_001)]
    with engine.begin() as conn:
        conn.execute(insert(t.applications), newer)
        conn.execute(insert(t.application_niks),
                     [{"application_id": a["id"], "nik_hash": masking.nik_hash(a["data"]["applicant"]["nik"])}
                      for a in newer])
    body = search(client, ops_auth, NIK)
    assert [r["id"] for r in body["results"]] == [old["id"]]
    assert body["results"][0]["matched"] == "nik" and body["kind"] == "nik"
    assert body["query"] == "3171********0123"


def test_a_nik_search_lists_newest_first_up_to_the_limit(client, auth, ops_auth, example, engine):
    ids = [submit(client, auth, example)["id"] for _ in range(3)]
    submit(client, auth, with_nik(example, OTHER_NIK))
    body = client.get("/ops/api/search", query_string={"q": NIK, "limit": 2}, headers=ops_auth).get_json()
    with engine.connect() as conn:
        newest = [r.id for r in conn.execute(select(t.applications.c.id).where(t.applications.c.id.in_(ids))
                                             .order_by(t.applications.c.created_at.desc(),
                                                       t.applications.c.id.desc()).limit(2))]
    assert [r["id"] for r in body["results"]] == newest


def test_the_nik_reaches_the_sql_only_as_its_hash(client, auth, example, engine, catalog):
    from sqlalchemy import event
    doc = submit(client, auth, example)
    seen = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        seen.append(f"{statement} {parameters}")
    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            found = queries.search(conn, catalog, "3171 0123 4567 0123")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [r["id"] for r in found["results"]] == [doc["id"]]
    assert seen and not any(NIK in s for s in seen)
    assert any(masking.nik_hash(NIK) in s and "application_niks" in s for s in seen)


def test_search_answers_mask_the_nik_in_the_api_and_on_the_dashboard(client, auth, ops_auth, make_key, example):
    doc = submit(client, auth, example)
    answer = client.get("/ops/api/search", query_string={"q": NIK}, headers=ops_auth)
    assert doc["id"] in answer.get_data(as_text=True) and NIK not in answer.get_data(as_text=True)
    client.post("/ops/login", data={"key": make_key("ops"), "next": "/ops/"}, headers={"Origin": "http://localhost"})
    page = client.post("/ops/search", data={"q": NIK}, headers={"Origin": "http://localhost"})
    assert page.status_code == 200
    assert doc["id"] in page.get_data(as_text=True) and NIK not in page.get_data(as_text=True)


def test_a_deleted_application_takes_its_nik_rows_with_it(client, auth, ops_auth, example, engine):
    gone, kept = submit(client, auth, example), submit(client, auth, example)
    with engine.begin() as conn:  # what a retention purge would delete
        conn.execute(delete(t.events).where(t.events.c.application_id == gone["id"]))
        conn.execute(delete(t.requests).where(t.requests.c.application_id == gone["id"]))
        conn.execute(delete(t.applications).where(t.applications.c.id == gone["id"]))
    assert nik_rows(engine, gone["id"]) == []
    assert nik_rows(engine, kept["id"]) == [(kept["id"], masking.nik_hash(NIK))]
    assert [r["id"] for r in search(client, ops_auth, NIK)["results"]] == [kept["id"]]


def test_rehash_niks_rebuilds_the_index_under_a_new_key(client, auth, ops_auth, example, engine, monkeypatch,
                                                        capsys):
    from gateway.cli import main
    doc = submit(client, auth, example)
    plain = submit(client, auth, with_nik(example, OTHER_NIK))
    key = "a-new-key-" + uuid.uuid4().hex  # the gateways read it at start-up; the command now
    monkeypatch.setenv("SATUPINTU_NIK_HASH_KEY", key)
    assert main(["db", "rehash-niks"]) == 0
    assert "rehashed the NIKs of 2 application(s)" in capsys.readouterr().out
    assert sorted(nik_rows(engine)) == sorted([(doc["id"], masking.nik_hash(NIK, key)),
                                               (plain["id"], masking.nik_hash(OTHER_NIK, key))])
