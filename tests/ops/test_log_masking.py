"""Log lines are JSON with the message's ids, and never carry a whole NIK."""

from __future__ import annotations

import json
import logging

from core.logs import JsonLines, correlation, mask_pii


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("satupintu.worker", logging.WARNING, __file__, 1, message, args, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_nik_in_the_message_keeps_only_its_first_and_last_four_digits():
    line = json.loads(JsonLines("worker").format(record("owner %s rejected", "3171012345670123")))
    assert line["message"] == "owner 3171********0123 rejected"


def test_a_nik_in_an_id_or_a_traceback_is_masked_too():
    try:
        raise ValueError("bad nik 3171012345670123")
    except ValueError:
        import sys
        rec = record("failed", exc_info=sys.exc_info(), request_id="3171012345670123")
    text = JsonLines("worker").format(rec)
    assert "3171012345670123" not in text
    line = json.loads(text)
    assert line["request_id"] == "3171********0123" and "3171********0123" in line["error"]


def test_longer_numbers_and_hex_ids_are_left_alone():
    text = "amount 31710123456701234 id app_3171012345670123abcd trace 00-4bf92f3577b34da6a3ce929d0e0e4736-01"
    assert mask_pii(text) == text


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
