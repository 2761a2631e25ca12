"""POST /v1/applications with documents: checked at submission, hashed into the chain, refused by kind."""

from __future__ import annotations

import copy
import uuid

from document_samples import PNG, pdf


def submit(client, key, body):
    return client.post("/v1/applications", json=body,
                       headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})


def test_a_bundle_with_two_documents_carries_their_hashes_into_its_history(client, upload, example):
    ktp, deed = upload(PNG, filename="ktp.png").get_json(), upload(pdf(), kind="deed").get_json()
    body = dict(copy.deepcopy(example), documents={"ktp": ktp["id"], "deed": deed["id"]})
    answer = submit(client, upload.key, body)
    assert answer.status_code == 202, answer.get_json()
    history = client.get(f"/v1/applications/{answer.get_json()['id']}/history",
                         headers={"Authorization": f"Bearer {upload.key}"}).get_json()["events"]
    documents = history[0]["detail"]["documents"]
    assert documents["ktp"]["sha256"] == ktp["sha256"] and documents["deed"]["sha256"] == deed["sha256"]


def test_a_document_of_another_client_or_an_unknown_kind_is_422_naming_the_kind(client, upload, make_key, example):
    theirs = upload(pdf(), key=make_key("submit", "read")).get_json()
    body = dict(copy.deepcopy(example), documents={"ktp": theirs["id"], "passport": "doc_x"})
    answer = submit(client, upload.key, body)
    assert answer.status_code == 422
    assert {e["path"] for e in answer.get_json()["errors"]} == {"/documents/ktp", "/documents/passport"}


def test_a_required_kind_missing_is_422(client, upload, example, catalog, app):
    import dataclasses
    context = app.extensions["satupintu"]
    service = context.catalog.services["business-startup"]
    strict = dataclasses.replace(service, documents={
        **service.documents, "deed": dataclasses.replace(service.documents["deed"], required=True)})
    context.catalog = dataclasses.replace(context.catalog, services={**context.catalog.services,
                                                                     "business-startup": strict})
    answer = submit(client, upload.key, copy.deepcopy(example))
    assert answer.status_code == 422
    assert [e["path"] for e in answer.get_json()["errors"]] == ["/documents/deed"]
