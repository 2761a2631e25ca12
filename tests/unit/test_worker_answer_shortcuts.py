"""The worker's per-message shortcuts give what the long way gave (broker/messages.py,
adapters/answers.py, adapters/rest.py): correlation headers, answer mapping."""

from __future__ import annotations

import json
import math

import pytest

from adapters.answers import map_answer
from adapters.base import OutcomeKind
from adapters.rest import _PAYLOAD_ENCODER, render_path
from broker import messages
from core.domain.errors import PermanentAgencyError
from core.model import Agency


def test_the_agency_request_carries_the_correlation_headers_in_order_without_empty_ones():
    body = {"request_id": "req_1", "application_id": "app_1", "service": "s", "step": "a", "agency": "x",
            "operation": "register", "payload": {"n": 1}, "reference": None}
    request = messages.agency_request(body, {"traceparent": "00-abc-def-01", "x-attempt": 3})
    assert list(request.headers.items()) == [("traceparent", "00-abc-def-01"), ("X-Satupintu-Application", "app_1"),
                                             ("X-Satupintu-Request", "req_1")]
    assert request.attempt == 3
    assert messages.agency_request(body, {"traceparent": ""}).headers == {"X-Satupintu-Application": "app_1",
                                                                          "X-Satupintu-Request": "req_1"}


def _agency(**kwargs) -> Agency:
    return Agency(id="reg", name="Registry", adapter="rest", endpoint="http://127.0.0.1:1", file="reg.yaml",
                  operations={}, statuses={"REGISTERED": "approved", "REJECTED": "rejected", "7": "accepted",
                                           "BAD": "no-such-kind"}, **kwargs)


RESPONSES = [
    None,
    {},
    {"reference": "company_number", "status": "status", "reason": "reason"},
    {"reference": "company_number", "status": "status", "output": "details"},
    {"status": "result.code", "reference": "ids[0]", "output": "ids"},
    {"reference": "length(company_number)"},
]
ANSWERS = [
    {"company_number": "AHU-1", "status": "REGISTERED"},
    {"company_number": "AHU-2", "status": "REJECTED", "reason": "duplicate", "details": {"n": [1, 2.5, None]}},
    {"status": "REGISTERED"},
    {"company_number": "AHU-3", "status": "WHAT"},
    {"company_number": "AHU-4", "status": "BAD"},
    {"company_number": 7, "status": 7.0, "details": "text"},
    {"result": {"code": 7}, "ids": ["r-1", "r-2"]},
    {"result": {"code": None}},
    {"company_number": None},
    [1, 2, 3],
    "just text",
    {},
]


def _outcome_or_error(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - compared as data
        return type(exc), str(exc), getattr(exc, "raw", None), getattr(exc, "status_code", None)


@pytest.mark.parametrize("response", RESPONSES)
@pytest.mark.parametrize("decisions", ["sync", "poll"])
@pytest.mark.parametrize("default_kind", [None, OutcomeKind.CANCELLED])
def test_a_plain_answer_is_mapped_and_refused_exactly_as_a_converted_one(response, decisions, default_kind):
    agency = _agency(decisions=decisions)
    for answer in ANSWERS:
        loaded = json.loads(json.dumps(answer))  # what the REST adapter hands over with plain=True

        def mapped(plain: bool, loaded=loaded):
            return _outcome_or_error(lambda: map_answer(agency, "register", response, loaded, request_id="r-1",
                                                        default_kind=default_kind, status_code=200, plain=plain))
        assert mapped(True) == mapped(False), (response, answer)


def test_a_response_section_that_does_not_compile_still_fails_as_before():
    agency = _agency()
    with pytest.raises(PermanentAgencyError, match=r"response\.reference 'company_number\[' failed"):
        map_answer(agency, "register", {"status": "status", "reference": "company_number["},
                   {"status": "REGISTERED", "company_number": "x"}, request_id="r-1")


def test_the_payload_is_encoded_as_json_dumps_without_nan_encodes_it():
    payload = {"name": "PT Maju ☂", "n": [1, 2.5, None, True], "nested": {"a": "b"}}
    assert _PAYLOAD_ENCODER.encode(payload) == json.dumps(payload, allow_nan=False)
    with pytest.raises(ValueError):
        _PAYLOAD_ENCODER.encode({"x": math.nan})


def test_a_path_template_is_filled_the_same_on_every_call():
    request = messages.agency_request(
        {"request_id": "req/1", "application_id": "app_1", "service": "s", "step": "a", "agency": "x",
         "operation": "register", "payload": {"nik": "3171", "flag": True}, "reference": "R 1"}, {})
    for _ in range(3):  # parsed once, then from the cache
        assert render_path("/c/{nik}/{reference}/{request_id}/{flag}", request, agency="x") == "/c/3171/R%201/req%2F1/true"
        assert render_path("/companies", request, agency="x") == "/companies"
    with pytest.raises(PermanentAgencyError, match=r"needs \{missing\}"):
        render_path("/c/{missing}", request, agency="x")
