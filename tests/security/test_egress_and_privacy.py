"""Outbound calls (agencies, webhooks) and personal data (x-pii fields)."""

from __future__ import annotations

import copy
import http.server
import json
import threading
from types import SimpleNamespace

import pytest
import requests
from sqlalchemy import update

from adapters.egress import EgressPolicy, EgressRefused, policy_for_agency
from adapters.transport import guard_session
from core import masking as privacy
from core.settings import Settings
from gateway.cli import main
from gateway.store import tables as t

# --- egress ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",
                                 "http://0.0.0.0:80/", "http://224.0.0.1/", "http://metadata.google.internal/",
                                 "http://[::ffff:169.254.169.254]/", "http://100.100.100.200/", "ftp://example.org/",
                                 "http://user:pw@127.0.0.1/"])
def test_metadata_link_local_and_odd_urls_are_refused(url):
    with pytest.raises(EgressRefused):
        EgressPolicy().check_url(url)


def test_loopback_and_private_are_allowed_unless_switched_off():
    EgressPolicy().check_url("http://127.0.0.1:1/")
    EgressPolicy().check_url("http://10.1.2.3/", resolve=False)
    with pytest.raises(EgressRefused, match="loopback"):
        EgressPolicy.from_settings(Settings(egress_allow_loopback=False)).check_url("http://127.0.0.1:1/")
    with pytest.raises(EgressRefused, match="private"):
        EgressPolicy.from_settings(Settings(egress_allow_private=False)).check_url("http://10.1.2.3/")


def test_a_guarded_session_refuses_at_connect_time():
    session = guard_session(requests.Session(), EgressPolicy())
    with pytest.raises(requests.ConnectionError, match="link-local"):
        session.get("http://169.254.169.254/latest/meta-data/", timeout=2)


def test_an_agency_may_only_reach_the_hosts_its_file_names():
    agency = SimpleNamespace(endpoint="http://127.0.0.1:8301", options={"allowed_hosts": ["registry.example.go.id"]},
                             xroad=None)
    policy = policy_for_agency(agency, Settings())
    assert policy.allowed_hosts == {"registry.example.go.id"}  # when given, only those
    with pytest.raises(requests.ConnectionError, match="not a host named"):
        guard_session(requests.Session(), policy).get("http://localhost:8301/x", timeout=2)


@pytest.fixture
def local_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_rest_adapter_neither_follows_redirects_nor_leaves_its_hosts(local_server):
    from adapters.base import AgencyRequest
    from adapters.rest import RestAdapter
    from core.domain.errors import AgencyError
    agency = SimpleNamespace(id="a", endpoint=local_server, options={}, xroad=None, auth={"type": "none"},
                             concurrency=2, connect_timeout=2, read_timeout=2, total_timeout=60, idempotency_header="Idempotency-Key",
                             operations={"op": {"method": "GET", "path": "/x"}}, file="a.yaml", statuses={})
    adapter = RestAdapter(agency)
    request = AgencyRequest(request_id="req_1", application_id="app_1", service="s", step="st", operation="op", agency="a",
                            payload={}, headers={}, reference=None)
    with pytest.raises(AgencyError, match="redirects are not followed"):
        adapter.send(request)
    adapter.close()


def test_a_webhook_url_is_checked_when_the_client_is_created(engine, capsys):
    assert main(["clients", "create", "bad-hook", "--scope", "read",
                 "--webhook-url", "http://169.254.169.254/latest/"]) == 2
    assert "link-local" in capsys.readouterr().err
    assert main(["clients", "create", "good-hook", "--scope", "read",
                 "--webhook-url", "http://127.0.0.1:9/hook"]) == 0


def test_the_notifier_checks_the_address_again_at_delivery(engine, make_key, client, auth, example):
    """A URL changed in the store (or a DNS answer that changed) is refused when delivering."""
    from gateway.notifier import Notifier
    notifier = Notifier(engine)
    with pytest.raises(requests.ConnectionError, match="link-local"):
        notifier.session.post("http://169.254.169.254/hook", data=b"{}", timeout=2)


# --- privacy ---------------------------------------------------------------------------

def test_pii_paths_come_from_the_schema(catalog):
    schema = catalog.services["business-startup"].input_schema
    assert privacy.pii_paths(schema) == [("applicant", "email"), ("applicant", "name"), ("applicant", "nik"),
                                         ("applicant", "phone")]


def test_values_are_masked_as_the_issue_says():
    assert privacy.mask_value("3171012345670123") == "3171********0123"
    assert privacy.mask_value("Siti Rahayu") == "S*********u"
    assert privacy.mask_value("ab") == "**"


def test_mask_document_masks_only_pii_fields(catalog, example):
    schema = catalog.services["business-startup"].input_schema
    masked = privacy.mask_document(example["data"], schema)
    assert masked["applicant"]["nik"] == privacy.mask_value(example["data"]["applicant"]["nik"])
    assert masked["applicant"]["name"] != example["data"]["applicant"]["name"]
    assert masked["company"] == example["data"]["company"]
    assert example["data"]["applicant"]["nik"] not in json.dumps(masked)


def test_history_masks_personal_data_that_agencies_echo(client, auth, example, engine, submitted):
    nik, name = example["data"]["applicant"]["nik"], example["data"]["applicant"]["name"]
    with engine.begin() as conn:  # an agency answer kept on a dead letter, echoing the applicant
        conn.execute(update(t.events).where(t.events.c.application_id == submitted["id"]).values(
            detail={"raw_answer": f'{{"owner": "{name}", "id": "{nik}"}}', "owner_nik": nik}))
    history = client.get(f"/v1/applications/{submitted['id']}/history", headers=auth)
    text = history.get_data(as_text=True)
    assert nik not in text and name not in text
    assert privacy.mask_value(nik) in text
    stream = client.get(f"/v1/applications/{submitted['id']}/events?timeout=0", headers=auth)
    assert nik not in stream.get_data(as_text=True)


def test_the_full_value_still_goes_to_the_agency(submitted, example, engine):
    from sqlalchemy import select
    with engine.connect() as conn:
        payload = conn.execute(select(t.outbox.c.body)).scalar()["payload"]
    assert payload["owner_nik"] == example["data"]["applicant"]["nik"]


# --- limits in the schemas -------------------------------------------------------------

def test_config_check_warns_about_unbounded_fields_but_passes(tmp_path, monkeypatch, capsys):
    import shutil
    from pathlib import Path
    folder = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", folder)
    schema_file = folder / "services" / "business-startup.schema.json"
    schema = json.loads(schema_file.read_text())
    schema["properties"]["company"]["properties"]["tags"] = {"type": "array", "items": {"type": "string"}}
    schema_file.write_text(json.dumps(schema))
    monkeypatch.setenv("SATUPINTU_CONFIG", str(folder))
    from gateway.schema_limits import unbounded_fields
    assert unbounded_fields(schema) == ["/company/tags: an array without maxItems",
                                        "/company/tags/*: a string without maxLength"]
    code = main(["config", "check", "--offline"])  # the limits, not whether the agencies answer
    err = capsys.readouterr().err
    assert "warning:" in err and "/company/tags: an array without maxItems" in err
    assert code == 0, err  # a warning, not a failure


def test_the_demo_schema_bounds_every_string(catalog):
    from gateway.schema_limits import unbounded_fields
    for service in catalog.services.values():
        assert unbounded_fields(service.input_schema) == []


def test_an_over_long_field_is_422(client, auth, example):
    bad = copy.deepcopy(example)
    bad["data"]["company"]["address"]["street"] = "x" * 301
    assert client.post("/v1/applications", json=bad, headers=auth).status_code == 422
