"""The dashboard and /ops/api in-process: login, scopes, masking, search, DAG, timeline, replay and CSRF."""

from __future__ import annotations

import time
import uuid

import pytest

from gateway.ops import queues

NIK = "3171012345670123"


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """Queue depths come from a fixed snapshot: these tests need no RabbitMQ."""
    snap = queues.Snapshot(True, "reachable", (
        queues.QueueDepth("t.agency.company-registry", "agency", "company-registry", 3, 1),
        queues.QueueDepth("t.agency.municipality", "agency", "municipality", 0, 1),
        queues.QueueDepth("t.tracker", "tracker", None, 2, 1),
    ), 0.0)
    monkeypatch.setattr(queues, "snapshot", lambda *a, **k: snap)


@pytest.fixture
def ops_key(make_key):
    return make_key("ops", name=f"operator-{uuid.uuid4().hex[:6]}")


def submit(client, make_key, example, **changes):
    key = make_key("submit", "read")
    body = {**example, **changes}
    response = client.post("/v1/applications", json=body, headers={
        "Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def login(client, key):
    return client.post("/ops/login", data={"key": key, "next": "/ops/"},
                       headers={"Origin": "http://localhost"})


def dead_letter(engine, catalog, doc, agency="company-registry", step="company"):
    """Record a dead letter for ``doc``'s ``step`` the way the tracker does."""
    from gateway.tracker import record_dead_letter
    request = next(r for r in doc["requests"] if r["step"] == step)
    body = {"message_id": uuid.uuid4().hex, "kind": "send", "request_id": request["request_id"],
            "application_id": doc["id"], "service": doc["service"], "step": step, "agency": agency,
            "operation": "register_company", "payload": {"owner_nik": NIK}}
    with engine.begin() as conn:
        record_dead_letter(conn, catalog, body, {"x-attempt": 2, "x-last-error": f"HTTP 503 for {NIK}"},
                           body["message_id"])
    from sqlalchemy import select

    from gateway.store import tables as t
    with engine.connect() as conn:
        return conn.execute(select(t.dead_letters.c.id).where(t.dead_letters.c.message_id == body["message_id"])
                            ).scalar()


def test_a_page_without_a_key_sends_the_browser_to_the_login_form(client):
    response = client.get("/ops/agencies")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/ops/login?next=/ops/agencies")


def test_the_json_api_needs_an_ops_key(client, make_key):
    assert client.get("/ops/api/overview").status_code == 401
    other = make_key("submit", "read")
    response = client.get("/ops/api/overview", headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 403


def test_login_sets_a_strict_http_only_cookie_for_ops_only(client, ops_key):
    response = login(client, ops_key)
    assert response.status_code == 302 and response.headers["Location"] == "/ops/"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("satupintu_ops=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/ops"):
        assert attribute in cookie
    page = client.get("/ops/")
    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers and page.headers["X-Frame-Options"] == "DENY"


def test_login_refuses_a_wrong_key_and_a_key_without_the_ops_scope(client, make_key):
    assert login(client, "sp_not-a-key").status_code == 401
    assert login(client, make_key("submit")).status_code == 403
    assert client.get_cookie("satupintu_ops", path="/ops") is None
    assert client.get("/ops/").status_code == 302


def test_login_from_another_site_is_refused(client, ops_key):
    response = client.post("/ops/login", data={"key": ops_key}, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403


def test_logout_clears_the_cookie(client, ops_key):
    login(client, ops_key)
    response = client.post("/ops/logout", headers={"Origin": "http://localhost"})
    assert response.status_code == 302
    assert client.get("/ops/").status_code == 302


def test_every_page_renders_and_masks_personal_data(client, make_key, example, ops_key):
    doc = submit(client, make_key, example)
    login(client, ops_key)
    for path in ("/ops/", "/ops/applications", "/ops/agencies", "/ops/dead-letters",
                 f"/ops/applications/{doc['id']}", f"/ops/search?q={doc['id']}"):
        response = client.get(path)
        assert response.status_code == 200, path
        text = response.get_data(as_text=True)
        assert NIK not in text and "Siti Rahayu" not in text, path
    page = client.get(f"/ops/applications/{doc['id']}").get_data(as_text=True)
    assert "3171********0123" in page and "S*** R*****" in page
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="dag"' in page
    assert 'data-step="company"' in page and 'data-step="permit"' in page


def test_the_application_api_gives_document_timeline_and_dag(client, make_key, example, ops_key, catalog):
    doc = submit(client, make_key, example)
    response = client.get(f"/ops/api/applications/{doc['id']}", headers={"Authorization": f"Bearer {ops_key}"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "in_progress" and body["data"]["applicant"]["nik"] == "3171********0123"
    assert body["timeline"][0]["type"] == "submitted" and body["timeline"][0]["lane"] == "gateway"
    assert any(e["lane"] == "outbox" and e["status"] == "queued" for e in body["timeline"])
    assert {n["step"] for n in body["dag"]["nodes"]} == set(catalog.services["business-startup"].steps)
    missing = client.get("/ops/api/applications/app_nope", headers={"Authorization": f"Bearer {ops_key}"})
    assert missing.status_code == 404


def test_search_finds_by_id_reference_and_nik(client, make_key, example, ops_key):
    doc = submit(client, make_key, example, reference=f"MPP-{uuid.uuid4().hex[:6]}")
    auth = {"Authorization": f"Bearer {ops_key}"}
    for q, matched in ((doc["id"], "id"), (doc["reference"], "reference"), (NIK, "nik"),
                       ("3171 0123 4567 0123", "nik")):
        body = client.get("/ops/api/search", query_string={"q": q}, headers=auth).get_json()
        hits = [r for r in body["results"] if r["id"] == doc["id"]]
        assert hits and hits[0]["matched"] == matched, (q, body)
    body = client.get("/ops/api/search", query_string={"q": NIK}, headers=auth).get_json()
    assert body["query"] == "3171********0123"
    assert client.get("/ops/api/search", query_string={"q": "3171999999990000"}, headers=auth).get_json()[
        "results"] == []


def test_a_search_by_id_prefix_lists_the_newest_first(client, make_key, example, ops_key):
    docs = []
    for _ in range(3):
        docs.append(submit(client, make_key, example))
        time.sleep(0.002)  # the next one in a later millisecond
    assert sorted(d["id"] for d in docs) == [d["id"] for d in docs]  # ids begin with the time
    auth = {"Authorization": f"Bearer {ops_key}"}
    prefix = docs[0]["id"][:8]  # app_ and the first hex digits: the same for all three
    body = client.get("/ops/api/search", query_string={"q": prefix}, headers=auth).get_json()
    found = [r["id"] for r in body["results"] if r["matched"] == "id prefix"]
    assert [d["id"] for d in reversed(docs)] == [i for i in found if i in {d["id"] for d in docs}]
    assert found == sorted(found, reverse=True)


def test_the_search_form_posts_so_a_nik_stays_out_of_the_url(client, make_key, example, ops_key):
    doc = submit(client, make_key, example)
    login(client, ops_key)
    page = client.post("/ops/search", data={"q": NIK}, headers={"Origin": "http://localhost"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and doc["id"] in text and NIK not in text


def test_overview_and_agencies_count_what_the_store_and_broker_hold(client, make_key, example, ops_key, catalog):
    submit(client, make_key, example)
    auth = {"Authorization": f"Bearer {ops_key}"}
    overview = client.get("/ops/api/overview", headers=auth).get_json()
    assert overview["applications"]["in_progress"] == 1
    assert overview["queues"]["agency_messages"] == 3 and overview["tracker"]["queue_depth"] == 2
    agencies = {a["id"]: a for a in client.get("/ops/api/agencies", headers=auth).get_json()["items"]}
    assert agencies["company-registry"]["queue_depth"] == 3
    assert agencies["company-registry"]["circuit"] in ("n/a", "closed", "open", "half-open")
    assert len(agencies["company-registry"]["latency"]) == 30
    recent = client.get("/ops/api/applications?limit=5", headers=auth).get_json()["items"]
    assert [s["step"] for s in recent[0]["steps"]] == list(catalog.services["business-startup"].order)
    queues_doc = client.get("/ops/api/queues", headers=auth).get_json()
    assert queues_doc["broker_ok"] is True


def test_replay_needs_the_same_origin_when_the_cookie_authenticates(client, make_key, example, ops_key,
                                                                    engine, catalog):
    doc = submit(client, make_key, example)
    dead_id = dead_letter(engine, catalog, doc)
    login(client, ops_key)
    listed = client.get("/ops/api/dead-letters").get_json()["items"]
    assert [d["id"] for d in listed] == [dead_id]
    assert NIK not in listed[0]["reason"] and "3171********0123" in listed[0]["reason"]
    url = f"/ops/api/dead-letters/{dead_id}/replay"
    assert client.post(url).status_code == 403  # neither Origin nor Referer
    assert client.post(url, headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post(url, headers={"Referer": "https://evil.example/ops/"}).status_code == 403
    response = client.post(url, headers={"Origin": "http://localhost"})
    assert response.status_code == 200 and response.get_json() == {"replayed": [dead_id]}
    assert client.post(url, headers={"Origin": "http://localhost"}).status_code == 404
    body = client.get(f"/ops/api/applications/{doc['id']}").get_json()
    replay = [e for e in body["timeline"] if e["type"] == "replay"]
    assert replay and replay[0]["cause"].startswith("replayed by operator-") and replay[0]["cause"].endswith("/ops")


def test_replay_with_a_bearer_key_needs_no_origin(client, make_key, example, ops_key, engine, catalog):
    doc = submit(client, make_key, example)
    dead_id = dead_letter(engine, catalog, doc)
    response = client.post(f"/ops/api/dead-letters/{dead_id}/replay", headers={"Authorization": f"Bearer {ops_key}"})
    assert response.status_code == 200
    assert client.post("/ops/api/dead-letters/999999/replay",
                       headers={"Authorization": f"Bearer {ops_key}"}).status_code == 404


def test_the_login_redirect_never_leaves_the_dashboard(client, ops_key):
    response = client.post("/ops/login", data={"key": ops_key, "next": "//evil.example/"},
                           headers={"Origin": "http://localhost"})
    assert response.headers["Location"] == "/ops/"
