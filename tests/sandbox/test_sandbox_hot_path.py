"""The cheap forms of the per-call work (request log, clock, references, JSON) say what the
plain forms said: same log entries, same timestamps, same JSON bytes."""

from __future__ import annotations

import http.client
import json
import re
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from flask import jsonify, request
from werkzeug.test import Client

from sandbox import agency as agency_module
from sandbox.agency import BODY_LIMIT, Agency, iso_second, now_iso
from sandbox.company_registry import create_app
from sandbox.front_desk import BODY_KEY, FrontDesk
from sandbox.rest import json_answer, json_body, rest_app

ISO_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


def plain_entry(environ: dict, body: bytes, when: str) -> dict:
    """The log entry as Agency.record built it eagerly before it was made lazy."""
    headers = {
        key[5:].replace("_", "-").title(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").title()] = environ[key]
    query = environ.get("QUERY_STRING", "")
    return {
        "time": when,
        "method": environ.get("REQUEST_METHOD", ""),
        "path": environ.get("PATH_INFO", "") + (f"?{query}" if query else ""),
        "headers": headers,
        "body": body[:BODY_LIMIT].decode("utf-8", errors="replace"),
    }


def test_now_iso_reads_as_datetime_now_to_the_second():
    before = datetime.now(UTC).isoformat(timespec="seconds")
    text = now_iso()
    after = datetime.now(UTC).isoformat(timespec="seconds")
    assert ISO_SECOND.fullmatch(text)
    assert before <= text <= after


@pytest.mark.parametrize("second", [0, 59, 1_700_000_000, 1_700_000_001, 4_102_444_799])
def test_iso_second_formats_each_second_and_never_a_stale_one(second):
    expected = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
    assert iso_second(second) == expected
    assert iso_second(second + 1) != expected  # the cached second is not reused
    assert iso_second(second) == expected


@pytest.mark.parametrize(
    "environ, body",
    [
        (
            {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": "/companies",
                "QUERY_STRING": "",
                "HTTP_HOST": "127.0.0.1:8301",
                "HTTP_IDEMPOTENCY_KEY": "k-1",
                "HTTP_X_ROAD_CLIENT": "ID/GOV/1/gateway",
                "HTTP_TRACEPARENT": "00-abc-def-01",
                "HTTP_HTTP_ODD": "kept",
                "CONTENT_TYPE": "application/json",
                "CONTENT_LENGTH": "28",
                "SERVER_NAME": "not a header",
                "wsgi.url_scheme": "http",
            },
            b'{"company_name": "PT \xc3\xa9"}',
        ),
        (
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": "/companies",
                "QUERY_STRING": "request_id=k-1",
                "CONTENT_TYPE": "",
            },
            b"",
        ),
        ({"REQUEST_METHOD": "POST", "PATH_INFO": "/"}, b"\xff\xfe" + b"x" * 5000),
    ],
    ids=["filing", "lookup-with-query", "long-undecodable-body"],
)
def test_request_log_entry_is_what_the_eager_record_made(environ, body):
    agency = Agency("company-registry", "rest")
    before = now_iso()
    agency.record(environ, body)
    after = now_iso()
    [entry] = agency.recent_requests(5)
    assert before <= entry["time"] <= after
    assert entry == plain_entry(environ, body, entry["time"])
    assert list(entry["headers"]) == list(plain_entry(environ, body, "")["headers"])


def test_request_log_is_newest_first_and_limited():
    agency = Agency("company-registry", "rest")
    for n in range(5):
        agency.record({"REQUEST_METHOD": "GET", "PATH_INFO": f"/{n}"}, b"")
    assert [e["path"] for e in agency.recent_requests(3)] == ["/4", "/3", "/2"]
    assert agency.recent_requests(0) == []


def test_request_log_on_the_wire_names_headers_as_sent(sandbox):
    parts = urlsplit(sandbox.url("company-registry"))
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = json.dumps({"company_name": "PT Maju"})
    conn.request(
        "POST",
        "/companies",
        body=body,
        headers={
            "Idempotency-Key": "log-check-1",
            "X-Road-Client": "ID/GOV/1/gateway",
            "traceparent": "00-abc-def-01",
            "Content-Type": "application/json",
        },
    )
    assert conn.getresponse().read()
    conn.close()
    [entry] = sandbox.requests("company-registry", 1)
    assert ISO_SECOND.fullmatch(entry["time"])
    assert entry == {
        "time": entry["time"],
        "method": "POST",
        "path": "/companies",
        "headers": {
            "Host": f"{parts.hostname}:{parts.port}",
            "Accept-Encoding": "identity",
            "Idempotency-Key": "log-check-1",
            "X-Road-Client": "ID/GOV/1/gateway",
            "Traceparent": "00-abc-def-01",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        },
        "body": body,
    }


def test_references_are_zero_padded_and_never_repeat(monkeypatch):
    agency = Agency("company-registry", "rest")
    draws = iter([42, 42, 9_999_999_999, 7])
    monkeypatch.setattr(agency._random, "randrange", lambda stop: next(draws))
    assert agency.reference("AHU-", 10) == "AHU-0000000042"
    assert agency.reference("AHU-", 10) == "AHU-9999999999"  # 42 again was skipped
    assert agency.reference("", 3) == "007"


def test_references_draw_below_ten_to_the_digits():
    agency = Agency("tax-office", "soap")
    refs = [agency.reference("", 2) for _ in range(100)]  # all 100 there are
    assert sorted(refs) == [f"{n:02d}" for n in range(100)]


BODIES = [
    {"company_number": "AHU-0000000001", "status": "REGISTERED", "registered_at": "x"},
    {"z": 1, "a": [1, 2.5, None, True], "nested": {"b": "é€ \u2028", "a": {}}},
    {"error": "missing or empty: company_name"},
    [],
]


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("body", BODIES)
def test_json_answer_is_byte_for_byte_jsonify(body, debug):
    app = rest_app("check")
    app.debug = debug
    with app.test_request_context("/"):
        fast = json_answer(body, 201, {"Idempotent-Replayed": "true"})
        plain = app.make_response((jsonify(body), 201, {"Idempotent-Replayed": "true"}))
        assert fast.get_data() == plain.get_data()
        assert fast.status == plain.status == "201 CREATED"
        assert sorted(fast.headers.items()) == sorted(plain.headers.items())
        assert "Idempotent-Replayed" not in json_answer(body, 200).headers


PAYLOADS = [
    json.dumps({"company_name": "PT Maju"}).encode(),
    json.dumps({"company_name": "é"}).encode("utf-16"),
    b"[1, 2]",
    b"{not json",
    b"\xff\xfe{",
    b"",
    b"null",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_json_body_reads_what_get_json_read(payload):
    agency = Agency("company-registry", "rest")
    app = create_app(agency)
    with app.test_request_context("/companies", method="POST", data=payload):
        expected = request.get_json(force=True, silent=True)
        expected = expected if isinstance(expected, dict) else None
    with app.test_request_context("/companies", method="POST", data=payload):
        assert json_body() == expected  # without the front desk: read from the stream
    seen = []

    @app.post("/probe")
    def probe():
        seen.append((BODY_KEY in request.environ, json_body()))
        return "ok"

    client = Client(FrontDesk(agency, app))  # the front desk has read the body already
    assert client.post("/probe", data=payload).status_code == 200
    assert seen == [(True, expected)]


def test_filing_answers_and_replays_through_the_front_desk():
    agency = Agency("company-registry", "rest")
    desk = FrontDesk(agency, create_app(agency))
    client = Client(desk)
    body = {"company_name": "PT Maju"}
    first = client.post("/companies", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/companies", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert first.get_data() == again.get_data()
    answer = json.loads(first.get_data())
    assert first.get_data() == (
        json.dumps(answer, sort_keys=True, separators=(",", ":")) + "\n"
    ).encode()
    assert re.fullmatch(r"AHU-\d{10}", answer["company_number"])
    assert ISO_SECOND.fullmatch(answer["registered_at"])
    assert client.post("/companies", json=body).status_code == 400
    stats = agency.stats()
    assert (stats["requests"], stats["duplicates"], stats["peak_in_flight"]) == (2, 1, 1)


def test_in_flight_count_drops_back_when_the_app_raises():
    agency = Agency("company-registry", "rest")

    def broken(environ, start_response):
        raise RuntimeError("boom")

    desk = FrontDesk(agency, broken)
    with pytest.raises(RuntimeError):
        desk({"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "wsgi.input": None}, None)
    agency.call_started()
    agency.call_ended()
    assert agency.stats()["peak_in_flight"] == 1  # 1, not 2: the failed call ended
    agency.reset()
    assert agency.stats()["peak_in_flight"] == 0


def test_now_iso_changes_with_the_second(monkeypatch):
    clock = iter([1_700_000_000_999_999_999, 1_700_000_001_000_000_000])
    monkeypatch.setattr(agency_module.time, "time_ns", lambda: next(clock))
    assert now_iso() == "2023-11-14T22:13:20+00:00"
    assert now_iso() == "2023-11-14T22:13:21+00:00"
    assert time.time() > 0  # the real clock is left alone
