"""Agency callbacks (DESIGN §3): HMAC-SHA256 of "t.body" with the agency's own secret from
the environment, ±300 s, each signature once; nothing is written for a refused callback."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from gateway import signatures
from gateway.store import tables as t

SECRET = "test-municipality-secret"  # SATUPINTU_MUNICIPALITY_SECRET in tests/conftest.py
URL = "/v1/agencies/municipality/callbacks"


@pytest.fixture
def permit_request(submitted):
    return next(r["request_id"] for r in submitted["requests"] if r["agency"] == "municipality")


def post(client, body, *, secret=SECRET, timestamp=None, raw=None, url=URL, header=None):
    raw = raw if raw is not None else json.dumps(body).encode()
    signature = header if header is not None else signatures.sign(secret, raw, timestamp=timestamp)
    return client.post(url, data=raw, content_type="application/json",
                       headers={"X-Satupintu-Signature": signature})


def callback_rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.outbox)
                            .where(t.outbox.c.exchange == "status")).scalar()


def test_a_valid_callback_is_accepted_once(client, engine, permit_request):
    body = {"request_id": permit_request, "status": "approved", "reference": "IZN-1"}
    raw = json.dumps(body).encode()
    header = signatures.sign(SECRET, raw)
    first = post(client, body, raw=raw, header=header)
    assert first.status_code == 202, first.get_json()
    assert callback_rows(engine) == 1
    again = post(client, body, raw=raw, header=header)
    assert again.status_code == 409 and again.get_json()["type"].endswith("/replay")
    assert callback_rows(engine) == 1


@pytest.mark.parametrize("case", ["wrong secret", "stale", "future", "tampered body", "no signature"])
def test_a_bad_signature_is_401_and_writes_nothing(client, engine, permit_request, fingerprint, case):
    body = {"request_id": permit_request, "status": "approved"}
    raw = json.dumps(body).encode()
    before = fingerprint()
    if case == "wrong secret":
        response = post(client, body, secret="not-the-secret")
    elif case == "stale":
        response = post(client, body, timestamp=int(time.time()) - signatures.TOLERANCE - 5)
    elif case == "future":
        response = post(client, body, timestamp=int(time.time()) + signatures.TOLERANCE + 5)
    elif case == "tampered body":
        header = signatures.sign(SECRET, raw)
        response = post(client, body, raw=raw.replace(b"approved", b"rejected"), header=header)
    else:
        response = client.post(URL, data=raw, content_type="application/json")
    assert response.status_code == 401, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert fingerprint() == before


RESPELLINGS = {
    "spaces": lambda t, mac: f"t={t}, v1={mac}",
    "a second v1": lambda t, mac: f"t={t},v1={mac},v1=00",
    "a trailing key": lambda t, mac: f"t={t},v1={mac},x=1",
    "a plus sign": lambda t, mac: f"t=+{t},v1={mac}",
    "a leading zero": lambda t, mac: f"t=0{t},v1={mac}",
    "two timestamps": lambda t, mac: f"t={t},t={t},v1={mac}",
    "no timestamp": lambda t, mac: f"v1={mac}",
    "a letter in t": lambda t, mac: f"t={t}a,v1={mac}",
    "a short mac": lambda t, mac: f"t={t},v1={mac[:63]}",
}


@pytest.mark.parametrize("spelling", sorted(set(RESPELLINGS) - {"a leading zero"}))
def test_a_signature_spelled_otherwise_is_400_and_writes_nothing(client, engine, permit_request, fingerprint,
                                                                   spelling):
    body = {"request_id": permit_request, "status": "approved"}
    raw = json.dumps(body).encode()
    t = int(time.time())
    before = fingerprint()
    response = post(client, body, raw=raw, header=RESPELLINGS[spelling](t, signatures.mac(SECRET, t, raw)))
    assert response.status_code == 400, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert fingerprint() == before


@pytest.mark.parametrize("spelling", ["a leading zero", "v1 first", "a second valid-looking v1",
                                      "upper-case hex"])
def test_a_used_signature_respelled_is_still_a_replay(client, engine, permit_request, spelling):
    body = {"request_id": permit_request, "status": "approved"}
    raw = json.dumps(body).encode()
    t = int(time.time())
    mac = signatures.mac(SECRET, t, raw)
    assert post(client, body, raw=raw, header=f"t={t},v1={mac}").status_code == 202
    header = {"a leading zero": f"t=0{t},v1={mac}", "a second valid-looking v1": f"t={t},v1={mac},v1={'0' * 64}",
              "upper-case hex": f"t={t},v1={mac.upper()}", "v1 first": f"v1={mac},t={t}"}[spelling]
    again = post(client, body, raw=raw, header=header)
    assert again.status_code == 409 and again.get_json()["type"].endswith("/replay"), again.get_json()
    assert callback_rows(engine) == 1


def test_an_unknown_request_id_is_404(client, engine, fingerprint):
    before = fingerprint()
    response = post(client, {"request_id": "req_" + "0" * 32, "status": "approved"})
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert fingerprint() == before


def test_another_agencys_request_is_404(client, submitted, fingerprint):
    company = next(r["request_id"] for r in submitted["requests"] if r["agency"] == "company-registry")
    before = fingerprint()
    assert post(client, {"request_id": company, "status": "approved"}).status_code == 404
    assert fingerprint() == before


@pytest.mark.parametrize("agency", ["no-such-agency", "company-registry", "..%2F..%2Fetc"])
def test_an_unknown_agency_or_one_without_callbacks_is_404(client, agency, permit_request, fingerprint):
    before = fingerprint()
    response = post(client, {"request_id": permit_request, "status": "approved"},
                    url=f"/v1/agencies/{agency}/callbacks")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert fingerprint() == before


@pytest.mark.parametrize("body", [{"request_id": None, "status": "approved"},
                                  {"request_id": "x", "status": ["approved"]},
                                  {"request_id": "x", "status": {"a": 1}},
                                  {"request_id": "x" * 65, "status": "approved"},
                                  {"request_id": "x", "status": "approved", "reference": "r" * 201},
                                  {"request_id": "x", "status": "approved", "reason": 5},
                                  ["not", "an", "object"]])
def test_a_signed_but_invalid_body_is_422(client, body, fingerprint):
    before = fingerprint()
    response = post(client, body)
    assert response.status_code == 422, response.get_json()
    assert fingerprint() == before


def test_a_signed_body_that_is_not_json_is_400(client, fingerprint):
    before = fingerprint()
    assert post(client, None, raw=b'{"request_id": ').status_code == 400
    assert fingerprint() == before


def test_signatures_are_compared_in_constant_time():
    import inspect
    assert "compare_digest" in inspect.getsource(signatures.verify)
