"""What a submission must satisfy beyond its schema, and what it records."""

from __future__ import annotations

import copy
import datetime as dt
import uuid

import pytest


def stored(engine) -> int:
    from sqlalchemy import func, select

    from gateway.store import tables as t
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.applications)).scalar()


def submit(client, auth, body):
    return client.post("/v1/applications", json=body, headers={**auth, "Idempotency-Key": uuid.uuid4().hex})


@pytest.mark.parametrize("field, value", [
    (("company", "name"), "PT Maju\u0000Jaya"), (("company", "address", "street"), "Jl. Merdeka\u001b[2J"),
    (("company", "name"), "PT Maju\ufffe"), (("company", "address", "street"), "Jl.\uffff"),
    (("company", "name"), "PT Maju\u202eayaJ"), (("applicant", "name"), "Siti\u200bRahayu"),
])
def test_text_an_agency_could_never_take_is_422_naming_the_field(client, auth, example, engine, field, value):
    body = copy.deepcopy(example)
    target = body["data"]
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    answer = submit(client, auth, body)
    assert answer.status_code == 422, answer.get_json()
    assert "/data/" + "/".join(field) in [e["path"] for e in answer.get_json()["errors"]]
    assert value not in answer.get_data(as_text=True)  # the message names the code point, not the text
    assert stored(engine) == 0


def test_a_reference_with_a_direction_override_is_422(client, auth, example):
    answer = submit(client, auth, dict(copy.deepcopy(example), reference="LOKET\u202e7"))
    assert answer.status_code == 422 and answer.get_json()["errors"][0]["path"] == "/reference"


def test_the_target_is_counted_in_working_days_of_the_hall(client, auth, example, app):
    doc = submit(client, auth, copy.deepcopy(example)).get_json()
    created = dt.datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00"))
    due = dt.datetime.fromisoformat(doc["due_at"].replace("Z", "+00:00"))
    calendar = app.extensions["satupintu"].catalog.calendar
    assert calendar.working_days_between(created, due) == pytest.approx(3, abs=1e-6)  # sla: {working_days: 3}
    assert calendar.is_working_day(due.astimezone(calendar.zone).date())


def test_a_mapped_field_that_comes_out_null_is_named_in_the_history(client, auth, example):
    body = copy.deepcopy(example)
    body["data"]["company"].pop("legal_form", None)  # optional in the schema, mapped for the company step
    doc = submit(client, auth, body).get_json()
    events = client.get(f"/v1/applications/{doc['id']}/history", headers=auth).get_json()["events"]
    queued = next(e for e in events if e.get("step") == "company" and e["status"] == "queued")
    assert queued["detail"]["left_out"] == ["legal_form"]
