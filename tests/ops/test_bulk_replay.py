"""Bulk replay of dead letters: a dry run with counts first, then a replay at a set rate that
records who did it and why, and reports each message's result as the history shows it,
not the count of replays written (camunda/camunda#63192).  And one attempt count: status,
the dashboard and ``dead-letters list`` agree for a request dead-lettered after one attempt."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import select

from gateway import dead_letters
from gateway.store import tables as t

pytestmark = pytest.mark.usefixtures("fixed_queues")

URL = "/ops/api/dead-letters/replay"
WAIT = 60  # seconds a verification may wait for a worker: a bound on a hang, not a claim about speed


def request_of(doc: dict, step: str) -> dict:
    return next(r for r in doc["requests"] if r["step"] == step)


def history(client, auth, app_id: str) -> list[dict]:
    return client.get(f"/ops/api/applications/{app_id}", headers=auth).get_json()["timeline"]


def test_a_dry_run_counts_per_agency_and_replays_nothing(client, submit, dead_letter, operator, engine):
    docs = [submit() for _ in range(3)]
    chosen = [dead_letter(docs[0], "company"), dead_letter(docs[1], "company"), dead_letter(docs[2], "tax")]
    auth = {"Authorization": f"Bearer {operator[0]}"}
    response = client.post(URL, json={}, headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"dry_run": True, "would_replay": 3, "ids": chosen,
                                   "by_agency": {"company-registry": 2, "tax-office": 1}}
    narrowed = client.post(URL, json={"agency": "tax-office", "dry_run": True}, headers=auth).get_json()
    assert narrowed["would_replay"] == 1 and narrowed["by_agency"] == {"tax-office": 1}
    assert [d["id"] for d in dead_letters.list_open(engine)] == chosen  # nothing replayed
    assert all(e["type"] != "replay" for e in history(client, auth, docs[0]["id"]))


def test_a_replay_needs_a_reason_and_a_sane_rate(client, submit, dead_letter, operator, engine):
    dead_letter(submit())
    auth = {"Authorization": f"Bearer {operator[0]}"}
    for body, path in (({"dry_run": False}, "/why"), ({"dry_run": False, "why": "  "}, "/why"),
                       ({"dry_run": False, "why": "back up", "rate": 0}, "/rate"),
                       ({"dry_run": False, "why": "back up", "rate": "fast"}, "/rate"),
                       ({"ids": ["1"]}, "/ids")):
        response = client.post(URL, json=body, headers=auth)
        assert response.status_code == 422, body
        assert response.get_json()["errors"][0]["path"] == path
    assert len(dead_letters.list_open(engine)) == 1


def test_a_cookie_authenticated_bulk_replay_needs_the_same_origin(client, submit, dead_letter, operator, engine):
    dead_letter(submit())
    client.post("/ops/login", data={"key": operator[0], "next": "/ops/"}, headers={"Origin": "http://localhost"})
    body = {"dry_run": False, "why": "registry back", "wait": 0}
    assert client.post(URL, json=body, headers={"Origin": "https://evil.example"}).status_code == 403
    assert len(dead_letters.list_open(engine)) == 1
    assert client.post(URL, json=body, headers={"Origin": "http://localhost"}).status_code == 200


def test_a_replay_nobody_takes_is_reported_unconfirmed_not_done(client, submit, dead_letter, operator):
    """No worker runs here: the replays are written, yet nothing shows a message reached a worker."""
    doc = submit()
    dead_id = dead_letter(doc)
    auth = {"Authorization": f"Bearer {operator[0]}"}
    plan = client.post(URL, json={}, headers=auth).get_json()
    body = client.post(URL, json={"ids": plan["ids"], "dry_run": False, "why": "registry is back", "wait": 0},
                       headers=auth).get_json()
    assert body["counts"] == {"unconfirmed": 1}
    [result] = body["results"]
    assert result["id"] == dead_id and result["result"] == "unconfirmed"
    assert result["detail"] == "no worker took it within 0 s"


def test_a_bulk_replay_records_who_and_why_and_checks_each_message(client, submit, dead_letter, operator,
                                                                  worker_event, engine):
    """A stand-in worker takes the replayed messages: one agency answers, one fails again."""
    good, bad = submit(), submit()
    dead_letter(good), dead_letter(bad)
    key, name = operator
    auth = {"Authorization": f"Bearer {key}"}
    plan = client.post(URL, json={"agency": "company-registry"}, headers=auth).get_json()
    later = dead_letter(submit())  # after the dry run: not in what the operator confirmed

    def worker() -> None:
        """Answers each replayed message once its replay is in the store, as worker and tracker would."""
        pending = {good["id"]: "approved", bad["id"]: "failed"}
        while pending:
            for app_id, answer in list(pending.items()):
                with engine.connect() as conn:
                    replayed = conn.execute(select(t.events.c.id).where(
                        t.events.c.application_id == app_id, t.events.c.type == "replay")).first()
                if replayed is None:
                    continue
                if answer == "approved":
                    worker_event(good, "company", "outcome", status="approved", attempt=1, reference="AHU-1")
                else:
                    dead_letter(bad, attempts=1, reason="HTTP 401 Unauthorized")
                del pending[app_id]
            threading.Event().wait(0.05)
    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    response = client.post(URL, json={"ids": plan["ids"], "dry_run": False, "why": "registry back after upgrade",
                                      "rate": 20, "wait": WAIT}, headers=auth)
    thread.join(WAIT)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["by"] == name and body["why"] == "registry back after upgrade" and body["rate"] == 20
    assert body["counts"] == {"went through": 1, "failed again": 1}
    results = {r["application_id"]: r for r in body["results"]}
    assert results[good["id"]]["result"] == "went through" and results[good["id"]]["status"] == "approved"
    assert results[bad["id"]]["result"] == "failed again"
    assert results[bad["id"]]["detail"] == "HTTP 401 Unauthorized"
    assert later in [d["id"] for d in dead_letters.list_open(engine)]  # not in the confirmed dry run
    for doc in (good, bad):
        [replay] = [e for e in history(client, auth, doc["id"]) if e["type"] == "replay"]
        assert replay["cause"] == f"bulk replay by {name}: registry back after upgrade"
        assert replay["detail"]["by"] == name and replay["detail"]["why"] == "registry back after upgrade"


def test_a_bulk_replay_keeps_its_rate(engine, catalog, submit, dead_letter):
    """Messages go out ``rate`` per second: the n-th no sooner than n / rate after the first."""
    chosen = [dead_letter(submit()) for _ in range(3)]
    now, slept = [100.0], []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds
    results = dead_letters.replay_paced(engine, catalog, chosen, cause="test", rate=2, sleep=sleep,
                                        clock=lambda: now[0])
    assert [r["result"] for r in results] == ["queued"] * 3
    assert slept == [0.5, 0.5]


def test_a_dead_letter_replayed_meanwhile_is_reported_so(engine, catalog, submit, dead_letter):
    dead_id = dead_letter(submit())
    assert dead_letters.replay(engine, catalog, ids=[dead_id], cause="first") == [dead_id]
    [result] = dead_letters.replay_paced(engine, catalog, [dead_id], cause="second")
    assert result["result"] == "already replayed"


# --- item 7: one attempt count -------------------------------------------------------------

@pytest.fixture
def served(app):
    """The gateway on a real HTTP server bound to port 0, for the command line's client commands."""
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_status_dashboard_and_dead_letters_list_agree_on_the_attempts(client, submit, dead_letter, operator,
                                                                       served, monkeypatch, capsys):
    """A 401 after one attempt: no retry, no outcome event, just the dead letter."""
    from gateway.cli import main
    doc = submit()
    request_id = request_of(doc, "company")["request_id"]
    dead_letter(doc, attempts=1, reason="HTTP 401 Unauthorized")
    auth = {"Authorization": f"Bearer {operator[0]}"}

    front_office = client.get(f"/v1/applications/{doc['id']}", headers={"Authorization": f"Bearer {submit.key}"})
    assert request_of(front_office.get_json(), "company")["attempts"] == 1
    dashboard = client.get(f"/ops/api/applications/{doc['id']}", headers=auth).get_json()
    assert request_of(dashboard, "company")["attempts"] == 1
    assert dashboard["dead_letters"][0]["attempts"] == 1
    [listed] = client.get("/ops/api/dead-letters", headers=auth).get_json()["items"]
    assert listed["attempts"] == 1
    page = client.get(f"/ops/applications/{doc['id']}", headers=auth).get_data(as_text=True)
    assert '<tr data-step="company"><td>company</td><td>company-registry</td><td><span class="chip s-failed">' \
           'failed</span></td>\n      <td>1</td>' in page

    monkeypatch.setenv("SATUPINTU_URL", served)
    monkeypatch.setenv("SATUPINTU_API_KEY", submit.key)
    assert main(["status", doc["id"]]) == 0
    status_line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("company "))
    assert "attempts=1 " in status_line
    assert main(["dead-letters", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["items"]
    assert row["request_id"] == request_id and row["attempts"] == 1


def test_every_view_counts_every_attempt_of_a_request_that_ran_out_of_retries(client, submit, dead_letter,
                                                                              worker_event, operator):
    doc = submit()
    worker_event(doc, "company", "retry", attempt=1, reason="HTTP 503", detail={"next_attempt": 2, "delay_seconds": 1})
    dead_letter(doc, attempts=2, reason="HTTP 503")  # the second attempt failed too, and was the last
    auth = {"Authorization": f"Bearer {operator[0]}"}
    dashboard = client.get(f"/ops/api/applications/{doc['id']}", headers=auth).get_json()
    [listed] = client.get("/ops/api/dead-letters", headers=auth).get_json()["items"]
    assert request_of(dashboard, "company")["attempts"] == listed["attempts"] == 2
