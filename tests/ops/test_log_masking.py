"""Log lines are JSON with the message's ids, and never carry a whole NIK or an e-mail address."""

from __future__ import annotations

import io
import json
import logging
import sys

from core.logs import JsonLines, correlation, handler


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("satupintu.worker", logging.WARNING, __file__, 1, message, args, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def written(rec: logging.LogRecord, role: str = "worker") -> str:
    """``rec`` as the handler ``core.logs.configure`` installs writes it."""
    stream = io.StringIO()
    handler(role, stream).handle(rec)
    return stream.getvalue()


def test_a_nik_in_the_message_keeps_only_its_first_and_last_four_digits():
    line = json.loads(written(record("owner %s rejected", "3171012345670123")))
    assert line["message"] == "owner 3171********0123 rejected"


def test_a_nik_with_letters_around_it_and_an_email_address_are_masked():
    line = json.loads(written(record("fault: %s", "owner NIK3171012345670123 (siti@example.com)")))
    assert line["message"] == "fault: owner NIK3171********0123 (***@***)"


def test_a_nik_in_an_id_or_a_traceback_is_masked_too():
    try:
        raise ValueError("bad nik NIK3171012345670123")
    except ValueError:
        rec = record("failed", exc_info=sys.exc_info(), request_id="3171012345670123")
    text = written(rec)
    assert "3171012345670123" not in text
    line = json.loads(text)
    assert line["request_id"] == "3171********0123" and "NIK3171********0123" in line["error"]


def test_ids_and_longer_numbers_are_left_alone():
    ids = {"request_id": "req_" + "1234567890123456" + "0" * 16, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-01"}
    line = json.loads(written(record("amount %s", "31710123456701234", **ids)))
    assert line["message"] == "amount 31710123456701234"
    assert (line["request_id"], line["traceparent"]) == (ids["request_id"], ids["traceparent"])


def test_a_line_carries_the_role_level_and_the_message_ids():
    body = {"application_id": "app_1", "request_id": "req_1", "agency": "tax-office", "step": "tax"}
    ids = correlation(body, {"traceparent": "00-abc-def-01"})
    line = json.loads(JsonLines("tracker").format(record("applied", **ids)))
    assert line["role"] == "tracker" and line["level"] == "warning"
    assert (line["application_id"], line["request_id"], line["agency"], line["step"], line["traceparent"]) == (
        "app_1", "req_1", "tax-office", "tax", "00-abc-def-01")


def test_correlation_falls_back_to_the_amqp_headers_and_drops_what_is_missing():
    assert correlation({}, {"application_id": "app_2", "request_id": "req_2"}) == {
        "application_id": "app_2", "request_id": "req_2"}
