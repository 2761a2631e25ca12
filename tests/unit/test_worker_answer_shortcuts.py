"""The worker's per-message shortcuts give what the long way gave (broker/messages.py,
adapters/answers.py, adapters/rest.py): timestamps, correlation headers, answer mapping."""

from __future__ import annotations

import datetime as dt
import json
import math
import random

import pytest

from adapters.answers import map_answer
from adapters.base import OutcomeKind
from adapters.rest import _PAYLOAD_ENCODER, render_path
from broker import messages
from core.domain.errors import PermanentAgencyError
from core.model import Agency


def _datetime_iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def test_iso_time_writes_what_datetime_writes_including_whole_seconds_and_half_microseconds():
    rng = random.Random(7)
    values = [1_790_000_000.0, 1_790_000_000.25, 1_790_000_000.0000005, 1_790_000_000.0000015,
              1_790_000_000.9999996, 1_790_000_000.9999994, 0.0, 1.5e-6, 2.5e-6]
    values += [rng.randrange(0, 4 * 10**15) / 1e6 for _ in range(20_000)]
    values += [rng.randrange(0, 4 * 10**15) / 1e6 + 0.5e-6 for _ in range(20_000)]
    assert [messages.iso_time(v) for v in values] == [_datetime_iso(v) for v in values]


def test_utcnow_is_datetime_now_to_the_microsecond(monkeypatch):
    for ns in (1_790_000_000_000_000_000, 1_790_000_000_123_456_789, 1_790_000_001_000_000_999):
        monkeypatch.setattr(messages.time, "time_ns", lambda ns=ns: ns)
        expected = dt.datetime.fromtimestamp(ns // 1000 / 1e6, dt.UTC)
        expected = expected.replace(microsecond=ns // 1000 % 1_000_000)
        assert messages.utcnow() == expected.isoformat().replace("+00:00", "Z")


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
