"""The applications list pages and filters by status, service and agency; the dead letters
filter by agency and reason, and say what really happened to each."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

pytestmark = pytest.mark.usefixtures("fixed_queues")


@pytest.fixture
def two_services(config_dir):
    """The demo catalog plus ``company-only``: one step, at the company registry alone."""
    services = config_dir / "services"
    doc = yaml.safe_load((services / "business-startup.yaml").read_text())
    doc.update(id="company-only", title="Register a company only", steps={"company": doc["steps"]["company"]})
    (services / "company-only.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(services / "business-startup.schema.json", services / "company-only.schema.json")
    return config_dir


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [a["id"] for a in response.get_json()["items"]]


def page_ids(response) -> list[str]:
    assert response.status_code == 200
    return re.findall(r'<tr data-id="(app_[0-9a-f]+)"', response.get_data(as_text=True))


def test_applications_filter_by_status_service_and_agency(two_services, client, submit, operator, engine):
    bundles = [submit()["id"] for _ in range(2)]
    company_only = submit(service="company-only")["id"]
    cancelled = client.post(f"/v1/applications/{bundles[0]}/cancel", headers={"Authorization": f"Bearer {submit.key}"})
    assert cancelled.status_code in (200, 202), cancelled.get_data(as_text=True)
    auth = {"Authorization": f"Bearer {operator[0]}"}
    api = "/ops/api/applications"
    assert ids(client.get(api, headers=auth)) == [company_only, bundles[1], bundles[0]]
    assert ids(client.get(api, query_string={"service": "company-only"}, headers=auth)) == [company_only]
    assert ids(client.get(api, query_string={"agency": "tax-office"}, headers=auth)) == [bundles[1], bundles[0]]
    assert ids(client.get(api, query_string={"agency": "tax-office", "status": "cancelled"}, headers=auth)) == [
        bundles[0]]
    assert ids(client.get(api, query_string={"agency": "no-such-agency"}, headers=auth)) == []

    page = client.get("/ops/applications", query_string={"service": "business-startup", "status": "in_progress"},
                      headers=auth)
    assert page_ids(page) == [bundles[1]]
    text = page.get_data(as_text=True)
    assert '<option value="business-startup" selected>' in text and '<option value="in_progress" selected>' in text
    assert '<option value="company-registry">' in text  # every agency of the catalog to choose from


def test_applications_page_through_newest_first_without_gaps_or_repeats(client, submit, operator):
    made = [submit()["id"] for _ in range(5)]
    newest_first = made[::-1]
    auth = {"Authorization": f"Bearer {operator[0]}"}
    seen, cursor = [], None
    for _ in range(4):
        body = client.get("/ops/api/applications", query_string={"limit": 2, **({"before": cursor} if cursor else {})},
                          headers=auth).get_json()
        seen += [a["id"] for a in body["items"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == newest_first


def test_the_applications_page_links_to_the_older_page_keeping_the_filters(client, submit, operator, monkeypatch):
    from gateway.ops import views
    monkeypatch.setattr(views, "PAGE", 2)
    made = [submit()["id"] for _ in range(3)]
    auth = {"Authorization": f"Bearer {operator[0]}"}
    first = client.get("/ops/applications?service=business-startup", headers=auth)
    assert page_ids(first) == [made[2], made[1]]
    older = re.search(r'<a href="([^"]+)" id="older"', first.get_data(as_text=True)).group(1).replace("&amp;", "&")
    assert "service=business-startup" in older and f"before={made[1]}" in older
    second = client.get(older, headers=auth)
    assert page_ids(second) == [made[0]]
    text = second.get_data(as_text=True)
    assert 'id="older"' not in text and 'id="newest"' in text


def test_dead_letters_filter_by_agency_and_reason(client, submit, dead_letter, operator):
    registry = dead_letter(submit(), "company", reason="HTTP 503 Service Unavailable")
    refused = dead_letter(submit(), "company", reason="HTTP 401 Unauthorized")
    tax = dead_letter(submit(), "tax", reason="SOAP fault: server busy (503)")
    auth = {"Authorization": f"Bearer {operator[0]}"}

    def listed(**query) -> list[int]:
        response = client.get("/ops/api/dead-letters", query_string=query, headers=auth)
        return [d["id"] for d in response.get_json()["items"]]
    assert listed() == [tax, refused, registry]
    assert listed(agency="company-registry") == [refused, registry]
    assert listed(reason="503") == [tax, registry]
    assert listed(agency="company-registry", reason="unauthorized") == [refused]
    assert listed(reason="100%") == []  # the text itself, not a LIKE pattern
    page = client.get("/ops/dead-letters?agency=tax-office", headers=auth).get_data(as_text=True)
    assert re.findall(r'<tr data-id="(\d+)">', page) == [str(tax)]
    assert '<option value="tax-office" selected>' in page


def test_dead_letters_say_what_really_happened(client, submit, dead_letter, worker_event, operator):
    """A 401 after one attempt is a permanent refusal, not "failed after every retry"."""
    refused = dead_letter(submit(), "company", attempts=1, reason="HTTP 401 Unauthorized")
    exhausted_doc = submit()
    for attempt in range(1, 5):
        worker_event(exhausted_doc, "company", "retry", attempt=attempt, reason="HTTP 503",
                     detail={"next_attempt": attempt + 1, "delay_seconds": 1})
    exhausted = dead_letter(exhausted_doc, "company", attempts=5, reason="HTTP 503")  # max_attempts: 5
    auth = {"Authorization": f"Bearer {operator[0]}"}
    items = {d["id"]: d for d in client.get("/ops/api/dead-letters", headers=auth).get_json()["items"]}
    assert items[refused]["what_happened"] == "refused permanently after 1 attempt: HTTP 401 Unauthorized"
    assert items[exhausted]["what_happened"] == "failed after every retry (5 attempts of 5): HTTP 503"
    page = client.get("/ops/dead-letters", headers=auth).get_data(as_text=True)
    assert "refused permanently after 1 attempt: HTTP 401 Unauthorized" in page
    assert "failed after every retry (5 attempts of 5): HTTP 503" in page
    assert "failed after every retry (1" not in page
