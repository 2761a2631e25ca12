"""The whole system as real processes on the real RabbitMQ and the sandbox agencies."""

import copy
import uuid

import requests
from support import wait_until

TERMINAL = {"completed", "rejected", "failed", "cancelled"}


def submit(stack, key, body):
    response = requests.post(stack.url + "/v1/applications", json=body, timeout=10, headers={
        "Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def statuses(stack, key, ids):
    out = {}
    for app_id in ids:
        doc = requests.get(f"{stack.url}/v1/applications/{app_id}", timeout=10,
                           headers={"Authorization": f"Bearer {key}"}).json()
        out[app_id] = doc
    return out


def test_fifty_bundles_complete_and_each_agency_files_each_request_once(stack, sandbox, api_key, example):
    ids = []
    for i in range(50):
        body = copy.deepcopy(example)
        body["data"]["company"]["name"] = f"PT Usaha Bersama {i:03d}"
        ids.append(submit(stack, api_key, body))

    def all_decided():
        docs = statuses(stack, api_key, ids)
        return docs if all(d["status"] in TERMINAL for d in docs.values()) else None

    docs = wait_until(all_decided, 120, interval=1, message="50 bundles to be decided")
    assert {d["status"] for d in docs.values()} == {"completed"}, stack.tail()
    for doc in docs.values():
        for request in doc["requests"]:
            assert request["status"] == "approved"
            assert request["agency_reference"]
    for agency in ("company-registry", "municipality", "tax-office", "social-security"):
        stats = sandbox.stats(agency)
        assert stats["unique_request_ids"] == 50, stats
        assert stats["duplicates"] == 0, stats


def test_a_rejection_by_one_agency_rejects_the_bundle(stack, api_key, example):
    body = copy.deepcopy(example)
    body["data"]["company"]["name"] = "PT REJECT Me"
    app_id = submit(stack, api_key, body)
    doc = wait_until(lambda: (d := statuses(stack, api_key, [app_id])[app_id])["status"] in TERMINAL and d,
                     60, message="the bundle to be decided")
    assert doc["status"] == "rejected"
    company = next(r for r in doc["requests"] if r["step"] == "company")
    assert company["status"] == "rejected" and company["reason"]
    history = requests.get(f"{stack.url}/v1/applications/{app_id}/history", timeout=10,
                           headers={"Authorization": f"Bearer {api_key}"}).json()["events"]
    types = [e["type"] for e in history]
    assert types[0] == "submitted" and "outcome" in types
    outcome = next(e for e in history if e["type"] == "outcome" and e["step"] == "company")
    assert outcome["status"] == "rejected" and outcome["detail"]["attempt"] == 1
    assert outcome["detail"]["duration_ms"] >= 0 and outcome["detail"]["started_at"].endswith("Z")
    assert history[-1]["type"] == "application" and history[-1]["status"] == "rejected"
