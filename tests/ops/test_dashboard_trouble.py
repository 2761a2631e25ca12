"""The dashboard shows trouble: an open circuit and a low success rate coloured (thresholds
are settings), a retrying step's next attempt and reason, and times in the hall's zone."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from core.settings import Settings
from gateway.ops import queries

pytestmark = pytest.mark.usefixtures("fixed_queues")


def request_of(doc: dict, step: str) -> dict:
    return next(r for r in doc["requests"] if r["step"] == step)


def calls(worker_event, doc, *, successes: int, failures: int) -> None:
    """What the history holds after the company registry's calls: outcomes and retries."""
    for n in range(failures):
        worker_event(doc, "company", "retry", attempt=n + 1, reason="HTTP 503",
                     detail={"duration_ms": 40, "next_attempt": n + 2, "delay_seconds": 1})
    for _ in range(successes):
        worker_event(doc, "company", "outcome", status="accepted", attempt=failures + 1, detail={"duration_ms": 30})


def agency_row(page: str, agency: str) -> str:
    found = re.search(rf'<tr id="{agency}" data-agency="{agency}">(.*?)</tr>', page, re.S)
    assert found, f"no row for {agency}"
    return found.group(1)


def test_the_success_thresholds_are_settings_read_from_the_environment():
    assert (Settings().ops_success_warn_pct, Settings().ops_success_alert_pct) == (95.0, 80.0)
    settings = Settings.from_env({"SATUPINTU_OPS_SUCCESS_WARN_PCT": "99", "SATUPINTU_OPS_SUCCESS_ALERT_PCT": "90"})
    assert (settings.ops_success_warn_pct, settings.ops_success_alert_pct) == (99.0, 90.0)
    with pytest.raises(ValueError, match="SATUPINTU_OPS_SUCCESS_ALERT_PCT"):
        Settings.from_env({"SATUPINTU_OPS_SUCCESS_ALERT_PCT": "180"})


def test_an_open_circuit_and_an_82_percent_success_rate_stand_out(client, submit, worker_event, operator,
                                                                  monkeypatch):
    monkeypatch.setattr(queries, "circuit_states", lambda: {"company-registry": "open", "tax-office": "closed"})
    doc = submit()
    calls(worker_event, doc, successes=9, failures=2)  # 9 of 11: 81.8 %
    auth = {"Authorization": f"Bearer {operator[0]}"}
    agencies = {a["id"]: a for a in client.get("/ops/api/agencies", headers=auth).get_json()["items"]}
    assert agencies["company-registry"]["success_rate"] == pytest.approx(9 / 11, abs=1e-4)
    assert agencies["company-registry"]["success_level"] == "warn"  # under 95 %, not under 80 %
    assert agencies["tax-office"]["success_level"] == "none"  # no calls: nothing to judge

    page = client.get("/ops/agencies", headers=auth).get_data(as_text=True)
    registry, tax = agency_row(page, "company-registry"), agency_row(page, "tax-office")
    assert 'class="level-warn">81.8 %</td>' in registry
    assert 'class="circuit circuit-open">open</td>' in registry
    assert 'class="circuit circuit-closed">closed</td>' in tax
    overview = client.get("/ops/", headers=auth).get_data(as_text=True)
    assert 'class="circuit circuit-open">open</td>' in overview and 'class="level-warn">81.8 %' in overview


def test_a_success_rate_under_the_alert_threshold_is_an_alert(client, submit, worker_event, operator,
                                                              monkeypatch, settings, app):
    monkeypatch.setattr(app.extensions["satupintu"], "settings",
                        Settings(**{**vars(settings), "ops_success_alert_pct": 85.0}))
    calls(worker_event, submit(), successes=9, failures=2)
    auth = {"Authorization": f"Bearer {operator[0]}"}
    agencies = {a["id"]: a for a in client.get("/ops/api/agencies", headers=auth).get_json()["items"]}
    assert agencies["company-registry"]["success_level"] == "alert"
    page = client.get("/ops/agencies", headers=auth).get_data(as_text=True)
    assert 'class="level-alert">81.8 %</td>' in agency_row(page, "company-registry")


def test_a_retrying_step_shows_its_next_attempt_in_hall_time_and_the_reason(client, submit, worker_event, operator):
    doc = submit()
    # The worker's retry: at 03:04:05 UTC the call failed; the message waits 30 s in a delay tier.
    worker_event(doc, "company", "retry", attempt=1, reason="HTTP 503 Service Unavailable",
                 occurred_at="2026-03-02T03:04:05Z", detail={"next_attempt": 2, "delay_seconds": 30})
    auth = {"Authorization": f"Bearer {operator[0]}"}
    body = client.get(f"/ops/api/applications/{doc['id']}", headers=auth).get_json()
    company = request_of(body, "company")
    assert company["status"] == "queued" and company["attempts"] == 1
    assert company["retry"] == {"next_attempt_at": "2026-03-02T03:04:35Z", "next_attempt": 2,
                                "reason": "HTTP 503 Service Unavailable"}
    assert request_of(body, "tax")["retry"] is None

    page = client.get(f"/ops/applications/{doc['id']}", headers=auth).get_data(as_text=True)
    # Asia/Jakarta is UTC+7.
    assert ('next attempt at <time datetime="2026-03-02T03:04:35Z" title="2026-03-02 03:04:35 UTC">10:04:35</time>'
            ' (HTTP 503 Service Unavailable)') in page
    assert 'data-step="company" data-status="queued">' in page and ">retrying</text>" in page  # the DAG node
    listed = client.get("/ops/applications", headers=auth).get_data(as_text=True)
    assert 'class="chip s-retrying" data-retry="2026-03-02T03:04:35Z"' in listed
    assert "retrying, next attempt at 10:04:35 (HTTP 503 Service Unavailable)" in listed


def test_a_step_that_was_tried_again_after_its_retry_is_no_longer_retrying(client, submit, worker_event, operator):
    doc = submit()
    worker_event(doc, "company", "retry", attempt=1, reason="HTTP 503", detail={"next_attempt": 2, "delay_seconds": 5})
    worker_event(doc, "company", "attempt", status="sent", attempt=2)
    body = client.get(f"/ops/api/applications/{doc['id']}", headers={"Authorization": f"Bearer {operator[0]}"})
    assert request_of(body.get_json(), "company")["retry"] is None


def test_times_are_shown_in_the_hall_time_zone_to_the_second_with_utc_on_hover(client, submit, operator):
    doc = submit()
    created = dt.datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00"))
    local = created.astimezone(dt.timezone(dt.timedelta(hours=7))).strftime("%Y-%m-%d %H:%M:%S")
    utc = created.strftime("%Y-%m-%d %H:%M:%S UTC")
    auth = {"Authorization": f"Bearer {operator[0]}"}
    page = client.get(f"/ops/applications/{doc['id']}", headers=auth).get_data(as_text=True)
    assert f'<time datetime="{doc["created_at"]}" title="{utc}">{local}</time>' in page
    assert 'data-timezone="Asia/Jakarta"' in page and "Times in Asia/Jakarta" in page
    listed = client.get("/ops/applications", headers=auth).get_data(as_text=True)
    assert f'<time datetime="{doc["created_at"]}" title="{utc}">{local}</time>' in listed


def test_the_hall_time_zone_is_the_timezone_setting(client, submit, operator, monkeypatch, settings, app):
    monkeypatch.setattr(app.extensions["satupintu"], "settings", Settings(**{**vars(settings), "timezone": "UTC"}))
    doc = submit()
    created = dt.datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    page = client.get(f"/ops/applications/{doc['id']}", headers={"Authorization": f"Bearer {operator[0]}"})
    assert f'title="{created} UTC">{created}</time>' in page.get_data(as_text=True)
