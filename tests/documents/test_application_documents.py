"""An application's documents: checked against its service, hashed into its chain, kept while used."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from document_samples import PNG, pdf
from test_upload import stored_objects

from core.domain.errors import ValidationFailed
from core.model import DocumentKind
from gateway.documents.check import attach, document_problems, submitted_detail
from gateway.documents.housekeeping import sweep_unused
from gateway.documents.store import open_store
from gateway.store import documents as records


@pytest.fixture
def service(catalog):
    return catalog.services["business-startup"]


def client_id(engine, key: str) -> str:
    from gateway import clients
    with engine.connect() as conn:
        return clients.authenticate(conn, key).id


def problems(engine, service, owner, documents):
    with engine.connect().execution_options(readonly=True) as conn:
        return document_problems(conn, service, owner, documents)


def test_documents_of_the_right_kind_from_their_owner_pass(upload, engine, service):
    ktp, deed = upload(PNG, filename="ktp.png").get_json(), upload(pdf(), kind="deed").get_json()
    owner = client_id(engine, upload.key)
    assert problems(engine, service, owner, {"ktp": ktp["id"], "deed": deed["id"]}) == []
    assert problems(engine, service, owner, None) == []  # both kinds are optional in business-startup


def test_a_missing_required_kind_is_422_naming_it(engine, service, upload):
    strict = dataclasses.replace(service, documents={**service.documents, "deed": DocumentKind(
        title="Deed", required=True, media_types=("application/pdf",), max_bytes=10_000_000)})
    ktp = upload(pdf()).get_json()
    found = problems(engine, strict, client_id(engine, upload.key), {"ktp": ktp["id"]})
    assert [p["path"] for p in found] == ["/documents/deed"]
    assert "required" in found[0]["message"]


def test_an_unknown_kind_another_clients_document_or_a_wrong_kind_is_named(upload, make_key, engine, service):
    mine = upload(pdf(), kind="deed").get_json()
    theirs = upload(pdf(), key=make_key("submit", "read")).get_json()
    owner = client_id(engine, upload.key)
    found = {p["path"]: p["message"] for p in problems(engine, service, owner, {
        "ktp": theirs["id"], "passport": mine["id"], "deed": 42})}
    assert set(found) == {"/documents/ktp", "/documents/passport", "/documents/deed"}
    assert "no document" in found["/documents/ktp"]
    assert "takes no 'passport'" in found["/documents/passport"]
    found = problems(engine, service, owner, {"ktp": mine["id"]})
    assert found == [{"path": "/documents/ktp", "message": f"document {mine['id']} was uploaded as 'deed', not 'ktp'"}]


def test_a_document_not_scanned_clean_is_refused(upload, engine, service):
    doc = upload(pdf()).get_json()
    with engine.begin() as conn:
        conn.execute(records.documents.update().where(records.documents.c.id == doc["id"]).values(scan="pending"))
    [problem] = problems(engine, service, client_id(engine, upload.key), {"ktp": doc["id"]})
    assert problem["path"] == "/documents/ktp" and "not scanned clean" in problem["message"]


def test_a_png_uploaded_without_a_service_still_meets_the_services_rules_at_submission(upload, engine, service):
    doc = upload(PNG, kind="ktp", filename="ktp.png").get_json()
    narrow = dataclasses.replace(service, documents={"ktp": DocumentKind(title="KTP", media_types=("application/pdf",))})
    [problem] = problems(engine, narrow, client_id(engine, upload.key), {"ktp": doc["id"]})
    assert "image/png" in problem["message"]


def test_the_submitted_detail_carries_each_documents_hash(upload, engine):
    ktp = upload(pdf()).get_json()
    owner = client_id(engine, upload.key)
    with engine.connect() as conn:
        detail = submitted_detail(conn, owner, {"ktp": ktp["id"]})
        assert submitted_detail(conn, owner, None) == {}
    assert detail == {"documents": {"ktp": {"id": ktp["id"], "sha256": ktp["sha256"], "size": ktp["size"],
                                            "media_type": "application/pdf"}}}


def insert_application(conn, owner: str) -> str:
    from gateway.store import tables
    app_id = "app_" + "0" * 32
    now = dt.datetime.now(dt.UTC)
    conn.execute(tables.applications.insert().values(
        id=app_id, client_id=owner, service="business-startup", service_version="2", status="in_progress",
        data={}, request_hash="0" * 64, created_at=now, updated_at=now))
    return app_id


def test_housekeeping_deletes_unused_uploads_after_24_hours_and_keeps_their_hash(upload, engine, settings, client,
                                                                                  service):
    used, unused, fresh = (upload(pdf()).get_json() for _ in range(3))
    owner = client_id(engine, upload.key)
    with engine.begin() as conn:
        app_id = insert_application(conn, owner)
        attach(conn, app_id, {"ktp": used["id"]})
        assert set(records.of_application(conn, app_id)) == {"ktp"}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)
    with engine.begin() as conn:  # the fresh one was uploaded "just now" at that later time
        conn.execute(records.documents.update().where(records.documents.c.id == fresh["id"])
                     .values(created_at=later - dt.timedelta(hours=1)))
    swept = sweep_unused(engine, open_store(settings), now=later)
    assert (swept.deleted, swept.purged) == (1, 1)
    assert len(stored_objects(settings)) == 2

    auth = {"Authorization": f"Bearer {upload.key}"}
    gone = client.get(f"/v1/documents/{unused['id']}", headers=auth).get_json()
    assert gone["sha256"] == unused["sha256"] and "deleted_at" in gone
    assert client.get(f"/v1/documents/{unused['id']}/content", headers=auth).status_code == 410
    assert client.get(f"/v1/documents/{used['id']}/content", headers=auth).status_code == 200
    [problem] = problems(engine, service, owner, {"ktp": unused["id"]})
    assert "deleted" in problem["message"]
    assert sweep_unused(engine, open_store(settings), now=later) == type(swept)(deleted=0, purged=0)


def test_attaching_a_document_deleted_meanwhile_fails_the_submission(upload, engine, settings):
    doc = upload(pdf()).get_json()
    sweep_unused(engine, open_store(settings), now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    owner = client_id(engine, upload.key)
    with pytest.raises(ValidationFailed) as raised, engine.begin() as conn:
        attach(conn, insert_application(conn, owner), {"ktp": doc["id"]})
    assert raised.value.errors[0]["path"] == "/documents/ktp"
