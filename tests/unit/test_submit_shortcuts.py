"""Shortcuts taken on the submission path for speed must not change what they stand in for:
the NUL-byte guard still sees every query value that holds one, the kept metric children
still count into ``satupintu_submissions_total``, and a SQLite writer gets the connection
used last."""

from __future__ import annotations

import pytest

from core import metrics


@pytest.mark.parametrize("query", ["q=%00", "a=1&b=x%00y", "%00=1", "k=%2500%00"])
def test_a_nul_byte_escaped_in_the_query_is_still_refused(client, auth, query):
    response = client.get(f"/v1/applications?{query}", headers=auth)
    assert response.status_code == 400
    assert response.get_json()["type"].endswith("/malformed")
    assert "NUL" in response.get_json()["detail"]


@pytest.mark.parametrize("query", ["limit=5", "limit=5&status=completed", "service=%2500x"])
def test_a_query_without_a_nul_byte_reaches_the_view(client, auth, query):
    response = client.get(f"/v1/applications?{query}", headers=auth)
    assert response.status_code in (200, 400)
    assert "NUL" not in (response.get_json() or {}).get("detail", "")


def _sample(service: str, outcome: str) -> float:
    value = metrics.process_registry().get_sample_value(
        "satupintu_submissions_total", {"service": service, "outcome": outcome})
    return value or 0.0


def test_each_submission_answer_counts_once_under_its_own_outcome(client, auth, example):
    accepted, invalid = _sample(example["service"], "accepted"), _sample(example["service"], "invalid")
    for n in range(3):
        response = client.post("/v1/applications", json=example, headers={**auth, "Idempotency-Key": f"k{n}"})
        assert response.status_code == 202
    response = client.post("/v1/applications", json=dict(example, data={}), headers={**auth, "Idempotency-Key": "bad"})
    assert response.status_code == 422
    assert _sample(example["service"], "accepted") == accepted + 3
    assert _sample(example["service"], "invalid") == invalid + 1


def test_a_kept_counter_child_is_the_one_labels_gives():
    metrics.count_submission("svc-test-kept", 409)
    kept = metrics._submission_children[("svc-test-kept", 409)]
    assert kept is metrics.SUBMISSIONS.labels("svc-test-kept", "conflict")
    before = _sample("svc-test-kept", "conflict")
    metrics.count_submission("svc-test-kept", 409)
    assert _sample("svc-test-kept", "conflict") == before + 1


def test_a_sqlite_writer_gets_the_connection_used_last(tmp_path):
    from gateway.store import make_engine
    engine = make_engine(f"sqlite:///{tmp_path / 'lifo.db'}")
    try:
        first, second = engine.connect(), engine.connect()
        a, b = first.connection.driver_connection, second.connection.driver_connection
        first.close()
        second.close()  # returned last
        with engine.begin() as conn:
            assert conn.connection.driver_connection is b
        assert a is not b
    finally:
        engine.dispose()
