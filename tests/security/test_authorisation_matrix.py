"""Every endpoint of /v1 and /ops/api against no key, a bad key, a revoked key, a key
without the scope, and another client's application id (OWASP API1, API2, API5).

The endpoints come from the app's URL map, so an endpoint added later is in the matrix
(and must declare its scope with ``require``) without editing this file.  Documents are
uploaded through ``POST /v1/documents`` for real (streamed, sniffed, sealed, stored, recorded);
only the virus verdict comes from a scanner that finds every file clean, since who may reach
a route does not depend on ClamAV (tests/documents scans with a real clamd).
"""

from __future__ import annotations

import io

import pytest
from flask import Flask

from gateway import clients
from gateway.documents.scan import Verdict
from gateway.documents.service import Documents

ALL = ("submit", "read", "ops")
OTHER_SCOPES = {"submit": ("read", "ops"), "read": ("submit", "ops"), "ops": ("submit", "read")}
SIGNATURE_AUTH = {"/v1/agencies/<agency_id>/callbacks"}  # authenticated by the agency's signature instead
PUBLIC_OPS_PAGES = {"/ops/login", "/ops/logout", "/ops/static/<path:filename>"}


def endpoints(app: Flask) -> list[tuple[str, str, str]]:
    """(method, rule, endpoint) of every /v1 and /ops route."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/v1", "/ops")) or rule.rule in SIGNATURE_AUTH | PUBLIC_OPS_PAGES:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule, rule.endpoint))
    return sorted(out)


def url(rule: str, app_id: str, doc_id: str) -> str:
    path = rule.replace("<app_id>", app_id).replace("<doc_id>", doc_id)
    path = path.replace("<int(max=9223372036854775807):dead_id>", "1")
    path = path.replace("<int:dead_id>", "1")
    assert "<" not in path, f"the matrix does not know how to fill {rule}"
    return path + ("?timeout=0" if path.endswith("/events") else "")


def call(client, method: str, path: str, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if method == "POST" and path.startswith("/ops"):
        headers["Origin"] = "http://localhost"
    if path == "/v1/applications" and method == "POST":
        return client.post(path, json={"service": "x", "data": {}}, headers=headers)
    if path == "/v1/documents" and method == "POST":
        return client.post(path, data={"kind": "ktp", "file": (io.BytesIO(PDF), "ktp.pdf")},
                           content_type="multipart/form-data", headers=headers)
    return client.open(path, method=method, headers=headers)


PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"


class FindsNothing:
    """A scanner whose verdict is always clean (it still reads every chunk, so the seal is checked)."""

    def scan(self, chunks) -> Verdict:  # noqa: ANN001
        for _chunk in chunks:
            pass
        return Verdict(clean=True)


@pytest.fixture
def settings(settings, tmp_path):
    """The shared settings with this test's own document folder."""
    import dataclasses
    return dataclasses.replace(settings, document_store=f"file://{tmp_path / 'documents'}")


@pytest.fixture
def app(app, settings, catalog, engine):
    """The shared app, its uploads scanned by ``FindsNothing``."""
    app.extensions["satupintu.documents"] = Documents(settings, catalog, engine, scanner=FindsNothing())
    return app


@pytest.fixture
def document(client, auth) -> dict:
    """A document uploaded by the ``auth`` client (the owner of ``submitted``)."""
    response = call(client, "POST", "/v1/documents", auth["Authorization"].split()[1])
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def is_page(rule: str) -> bool:
    return rule.startswith("/ops") and not rule.startswith("/ops/api")


@pytest.fixture
def revoked_key(engine):
    with engine.begin() as conn:
        _client, key = clients.create(conn, "revoked-front-office", list(ALL))
        clients.revoke(conn, "revoked-front-office")
    return key


def test_every_endpoint_declares_a_scope(app):
    missing = [f"{m} {r}" for m, r, e in endpoints(app)
               if not is_page(r) and getattr(app.view_functions[e], "required_scope", None) not in ALL]
    assert not missing, f"endpoints without @require(scope): {missing}"
    assert len(endpoints(app)) >= 7  # /v1/services, applications (2), one, history, events, cancel, ...


@pytest.mark.parametrize("who", ["no key", "bad key", "revoked key"])
def test_without_a_valid_key_every_endpoint_is_401(app, client, submitted, document, revoked_key, who, fingerprint):
    key = {"no key": None, "bad key": "sp_" + "x" * 43, "revoked key": revoked_key}[who]
    before = fingerprint()
    for method, rule, _endpoint in endpoints(app):
        response = call(client, method, url(rule, submitted["id"], document["id"]), key)
        if is_page(rule):  # the dashboard sends a browser to its login form
            assert response.status_code in (302, 401), (method, rule, response.status_code)
            continue
        assert response.status_code == 401, (method, rule, response.status_code)
        assert response.mimetype == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert fingerprint() == before


def test_a_key_without_the_scope_is_403_everywhere(app, client, make_key, submitted, document, fingerprint):
    keys = {scope: make_key(*others) for scope, others in OTHER_SCOPES.items()}
    before = fingerprint()
    for method, rule, endpoint in endpoints(app):
        needed = getattr(app.view_functions[endpoint], "required_scope", "ops")
        key = keys[needed]
        response = call(client, method, url(rule, submitted["id"], document["id"]), key)
        assert response.status_code == 403, (method, rule, response.status_code)
        if not is_page(rule):
            assert response.mimetype == "application/problem+json"
            assert needed in response.get_json()["detail"]
    assert fingerprint() == before


def test_another_clients_application_and_document_are_404_everywhere(app, client, make_key, submitted, document,
                                                                    fingerprint):
    other = make_key("submit", "read")  # every /v1 scope, but not the submitter
    before = fingerprint()
    checked = []
    for method, rule, _endpoint in endpoints(app):
        if not ("<app_id>" in rule or "<doc_id>" in rule) or not rule.startswith("/v1"):
            continue
        response = call(client, method, url(rule, submitted["id"], document["id"]), other)
        assert response.status_code == 404, (method, rule, response.status_code)
        assert response.mimetype == "application/problem+json"
        checked.append(rule)
    assert {r.rsplit("/", 1)[-1] for r in checked} >= {"<app_id>", "history", "events", "cancel", "<doc_id>",
                                                       "content"}
    listing = client.get("/v1/applications", headers={"Authorization": f"Bearer {other}"}).get_json()
    assert listing["items"] == []
    assert fingerprint() == before


def test_the_owner_reaches_every_v1_endpoint(app, client, auth, submitted, document):
    for method, rule, _endpoint in endpoints(app):
        if not rule.startswith("/v1"):
            continue
        response = call(client, method, url(rule, submitted["id"], document["id"]), auth["Authorization"].split()[1])
        assert response.status_code < 400 or rule == "/v1/applications" and method == "POST", (
            method, rule, response.status_code, response.get_data(as_text=True)[:300])


def test_operators_see_every_application_but_only_with_the_ops_scope(client, make_key, submitted):
    ops = {"Authorization": f"Bearer {make_key('ops')}"}
    assert client.get(f"/ops/api/applications/{submitted['id']}", headers=ops).status_code == 200
    front_office = {"Authorization": f"Bearer {make_key('submit', 'read')}"}
    assert client.get(f"/ops/api/applications/{submitted['id']}", headers=front_office).status_code == 403
