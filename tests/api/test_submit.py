"""POST /v1/applications and friends, on the real app and a real SQLite store (no broker:
the gateway never publishes, it writes the outbox)."""

import copy
import json

from sqlalchemy import func, select

from gateway.store import tables as t


def post(client, auth, body, key=None, **kwargs):
    headers = dict(auth)
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/v1/applications", json=body, headers=headers, **kwargs)


def count(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_a_valid_bundle_is_stored_with_its_requests_and_outbox_in_one_go(client, auth, example, engine):
    response = post(client, auth, example, key="k1")
    assert response.status_code == 202
    doc = response.get_json()
    assert response.headers["Location"] == f"/v1/applications/{doc['id']}"
    assert doc["status"] == "in_progress"
    assert doc["reference"] == example["reference"]
    assert [(r["step"], r["status"]) for r in doc["requests"]] == [
        ("company", "queued"), ("tax", "pending"), ("permit", "pending"), ("social", "pending")]
    assert count(engine, t.outbox) == 1
    with engine.connect() as conn:
        keys = sorted(r.routing_key for r in conn.execute(select(t.outbox)))
        body = conn.execute(select(t.outbox.c.body).where(t.outbox.c.routing_key == "company-registry")).scalar()
    assert keys == ["company-registry"]
    assert body["payload"]["owner_nik"] == example["data"]["applicant"]["nik"]
    assert body["payload"]["company_name"] == example["data"]["company"]["name"]


def test_the_same_key_and_body_give_the_same_answer(client, auth, example, engine):
    first = post(client, auth, example, key="same").get_json()
    second = post(client, auth, example, key="same")
    assert second.status_code == 202
    assert second.get_json()["id"] == first["id"]
    assert count(engine, t.applications) == 1
    assert count(engine, t.outbox) == 1


def test_the_same_key_with_another_body_is_a_conflict(client, auth, example, engine):
    post(client, auth, example, key="k")
    other = copy.deepcopy(example)
    other["data"]["company"]["name"] = "PT Lain"
    response = post(client, auth, other, key="k")
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert "Idempotency-Key" in response.get_json()["detail"]
    assert count(engine, t.applications) == 1


def test_each_invalid_field_is_named(client, auth, example, engine):
    bad = copy.deepcopy(example)
    bad["data"]["applicant"]["nik"] = "12345"
    del bad["data"]["company"]["sector"]
    response = post(client, auth, bad)
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["status"] == 422 and problem["type"].endswith("/validation")
    paths = {e["path"] for e in problem["errors"]}
    assert "/data/applicant/nik" in paths
    assert "/data/company/sector" in paths  # the missing field itself, not the object lacking it
    assert any("sector" in e["message"] for e in problem["errors"])
    assert count(engine, t.applications) == 0


def test_an_unknown_service_is_named(client, auth, example):
    response = post(client, auth, dict(example, service="open-a-casino"))
    assert response.status_code == 422
    assert response.get_json()["errors"] == [{"path": "/service", "message": "unknown service 'open-a-casino'"}]


def test_malformed_json_is_a_400_problem(client, auth, engine):
    response = client.post("/v1/applications", data=b'{"service": ', content_type="application/json", headers=auth)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert "not valid JSON" in response.get_json()["detail"]
    assert count(engine, t.applications) == 0


def test_a_wrong_content_type_is_a_415_problem(client, auth, example):
    response = client.post("/v1/applications", data=json.dumps(example), content_type="text/plain", headers=auth)
    assert response.status_code == 415


def test_invalid_utf8_is_a_400_problem(client, auth):
    response = client.post("/v1/applications", data=b'{"service": "\xff"}', content_type="application/json",
                           headers=auth)
    assert response.status_code == 400
    assert "UTF-8" in response.get_json()["detail"]


def test_an_unpaired_surrogate_escape_is_a_400_naming_the_field_and_nothing_is_stored(client, auth, example, engine):
    name = example["data"]["company"]["name"]
    for raw, where in ((json.dumps(example).replace(name, "PT \\ud800" + name, 1), "/data/company/name"),
                       (json.dumps(example).replace('"company": {', '"company": {"x\\uDFFF": 1, ', 1),
                        "/data/company/x\\udfff")):
        response = client.post("/v1/applications", data=raw, content_type="application/json",
                               headers={**auth, "Idempotency-Key": where})
        assert response.status_code == 400, response.get_data(as_text=True)
        problem = response.get_json()
        assert response.mimetype == "application/problem+json"
        assert [e["path"] for e in problem["errors"]] == [where]
        assert "surrogate" in problem["detail"]
    assert count(engine, t.applications) == 0
    # A pair of escapes is one character (an emoji here): text, accepted.
    paired = json.dumps(example).replace(name, "PT \\ud83d\\ude00 " + name, 1)
    response = client.post("/v1/applications", data=paired, content_type="application/json",
                           headers={**auth, "Idempotency-Key": "paired"})
    assert response.status_code == 202, response.get_json()


def test_no_key_is_401_and_a_wrong_scope_is_403(client, make_key, example):
    assert client.post("/v1/applications", json=example).status_code == 401
    read_only = make_key("read")
    response = client.post("/v1/applications", json=example, headers={"Authorization": f"Bearer {read_only}"})
    assert response.status_code == 403


def test_another_clients_application_is_not_found(client, auth, make_key, example):
    doc = post(client, auth, example).get_json()
    other = {"Authorization": f"Bearer {make_key('read', 'submit')}"}
    for path in (f"/v1/applications/{doc['id']}", f"/v1/applications/{doc['id']}/history"):
        assert client.get(path, headers=other).status_code == 404
        assert client.get(path, headers=auth).status_code == 200
    assert client.get("/v1/applications", headers=other).get_json()["items"] == []


def test_the_list_pages_with_a_cursor(client, auth, example):
    ids = {post(client, auth, example, key=f"p{i}").get_json()["id"] for i in range(5)}
    first = client.get("/v1/applications?limit=2", headers=auth).get_json()
    seen = [a["id"] for a in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(f"/v1/applications?limit=2&cursor={cursor}", headers=auth).get_json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == 5 and set(seen) == ids


def test_the_history_starts_with_the_submission(client, auth, example):
    doc = post(client, auth, example).get_json()
    events = client.get(f"/v1/applications/{doc['id']}/history", headers=auth).get_json()["events"]
    assert events[0]["type"] == "submitted"
    assert {(e["step"], e["status"]) for e in events if e["type"] == "status"} == {("company", "queued")}


def test_the_catalog_lists_the_demo_service(client, auth):
    services = client.get("/v1/services", headers=auth).get_json()["items"]
    business = next(s for s in services if s["id"] == "business-startup")
    assert business["input_schema"]["required"] == ["applicant", "company"]
    assert [s["step"] for s in business["steps"]][0] == "company"
    assert {s["step"] for s in business["steps"]} == {"company", "tax", "permit", "social"}


def test_health_answers_without_a_key(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_an_unknown_path_is_a_problem_not_html(client):
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_an_application_past_its_service_level_target_is_flagged_overdue(client, auth, example, engine):
    import datetime as dt

    from sqlalchemy import update
    doc = post(client, auth, example).get_json()
    created = dt.datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00"))
    due = dt.datetime.fromisoformat(doc["due_at"].replace("Z", "+00:00"))
    assert due - created >= dt.timedelta(days=3)  # 3 working days
    assert doc["overdue"] is False
    with engine.begin() as conn:
        conn.execute(update(t.applications).where(t.applications.c.id == doc["id"])
                     .values(due_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
    again = client.get(f"/v1/applications/{doc['id']}", headers=auth).get_json()
    assert again["overdue"] is True
