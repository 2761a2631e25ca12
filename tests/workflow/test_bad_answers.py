"""A broken agency answer becomes a recorded failure with its reason and the raw answer
(masked) in the history — never a crash, never a lost message."""

import pytest
import requests
from support import edit_yaml, wait_until

TERMINAL = {"completed", "rejected", "failed", "cancelled"}


@pytest.fixture
def quick_retries(config_dir):
    def change(doc):
        doc["retry"] = {"max_attempts": 2, "delays": [0.5]}
    for agency in ("tax-office", "company-registry"):
        edit_yaml(config_dir / "agencies" / f"{agency}.yaml", change)


def run_one(stack, api_key, example):
    key = {"Authorization": f"Bearer {api_key}"}
    app_id = requests.post(stack.url + "/v1/applications", json=example, headers=key, timeout=10).json()["id"]

    def done():
        doc = requests.get(f"{stack.url}/v1/applications/{app_id}", headers=key, timeout=10).json()
        return doc if doc["status"] in TERMINAL else None
    doc = wait_until(done, 90, message="the bundle to end")
    events = requests.get(f"{stack.url}/v1/applications/{app_id}/history", headers=key, timeout=10).json()["events"]
    return doc, events


@pytest.mark.parametrize("bad_answer,reason", [
    ("wrong_shape", "the approved answer has no reference at 'npwp'"),
    ("malformed", ""),
    ("xxe", ""),
    ("billion_laughs", ""),
])
def test_a_broken_soap_answer_fails_the_step_with_a_reason(quick_retries, stack, sandbox, api_key, example,
                                                           bad_answer, reason):
    sandbox.faults("tax-office", bad_answer=bad_answer)
    doc, events = run_one(stack, api_key, example)
    assert doc["status"] == "failed", stack.tail()
    tax = next(r for r in doc["requests"] if r["step"] == "tax")
    assert tax["status"] == "failed"
    assert "tax-office" in tax["reason"] or "RegisterTaxpayer" in tax["reason"] or "answer" in tax["reason"]
    assert reason in tax["reason"]
    failed = [e for e in events if e["type"] == "failed" and e["step"] == "tax"]
    assert failed and failed[0]["detail"]["dead_letter"] is True
    if bad_answer == "wrong_shape":
        raw = failed[0]["detail"]["raw_answer"]
        assert raw and "3171012345670123" not in raw  # the raw answer is kept, personal data masked
    # Nothing was fetched from outside: the XXE target never appears anywhere.
    assert "root:" not in str(events)
    assert next(r for r in doc["requests"] if r["step"] == "social")["status"] == "skipped"


@pytest.fixture
def short_timeouts(config_dir):
    edit_yaml(config_dir / "agencies" / "company-registry.yaml", lambda d: d.update(timeouts={"connect": 1, "read": 1}))


def test_an_agency_that_times_out_is_retried_then_dead_lettered(quick_retries, short_timeouts, stack, sandbox,
                                                                 api_key, example):
    sandbox.faults("company-registry", latency_ms=3000)  # longer than the 1 s read timeout
    doc, events = run_one(stack, api_key, example)
    company = next(r for r in doc["requests"] if r["step"] == "company")
    assert company["status"] == "failed" and company["attempts"] == 2
    assert company["reason"].endswith("no answer within 1 s")
    assert [e["type"] for e in events if e["step"] == "company"].count("retry") == 1
