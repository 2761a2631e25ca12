"""The operators' dashboard in a real browser (Debian's chromium through Playwright) on a live stack.

Log in with an ops key, see a completed bundle, see a retrying step's next attempt and
two dead letters appear while the company registry is down (and its success rate turn
red), replay one with a click and the other with a bulk replay (dry run first, then each
message's checked result) once the registry is back, and watch the bundles complete.
Times read in the hall's zone with UTC on hover.  The screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
from support import edit_yaml, wait_until

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 90_000  # a bound on a hang, not a claim about speed
RETRY_DELAY = 15  # seconds between the registry's two attempts


def _chromium() -> str:
    """The chromium binary; installed with apt-get when missing and we may; else the test skips."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, capture_output=True)
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")


@pytest.fixture
def browser(tmp_path):
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True, args=ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def fast_retries(config_dir, env, tmp_path, monkeypatch):
    """The registry gives up after two attempts, RETRY_DELAY seconds apart: long enough to
    see the retrying step on its page, short enough for the dead letter to come soon."""
    edit_yaml(config_dir / "agencies" / "company-registry.yaml",
              lambda doc: doc.update(retry={"max_attempts": 2, "delays": [RETRY_DELAY]}))
    state = tmp_path / "breaker-state"  # this stack's breakers only
    env["SATUPINTU_STATE_DIR"] = str(state)
    monkeypatch.setenv("SATUPINTU_STATE_DIR", str(state))
    return config_dir


def submit(stack, key, body) -> str:
    response = requests.post(stack.url + "/v1/applications", json=body, timeout=10, headers={
        "Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def status_of(stack, key, app_id) -> str:
    return requests.get(f"{stack.url}/v1/applications/{app_id}", timeout=10,
                        headers={"Authorization": f"Bearer {key}"}).json()["status"]


def company_retry(stack, key, app_id) -> dict | None:
    doc = requests.get(f"{stack.url}/ops/api/applications/{app_id}", timeout=10,
                       headers={"Authorization": f"Bearer {key}"}).json()
    return next(r for r in doc["requests"] if r["step"] == "company")["retry"]


def test_an_operator_sees_a_dead_letter_replays_it_and_the_bundle_completes(
        fast_retries, stack, sandbox, browser, make_key, example):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    front_office = make_key("submit", "read")
    operator = make_key("ops", name="duty-operator")
    page = browser.new_page()

    # A bundle that goes through.
    done_id = submit(stack, front_office, example)
    wait_until(lambda: status_of(stack, front_office, done_id) == "completed", 120,
               message="the first bundle to complete")

    # Log in: the form sets the cookie, then the overview shows the bundle with its chips.
    page.goto(stack.url + "/ops/")
    expect(page).to_have_url(f"{stack.url}/ops/login?next=/ops/")
    page.fill("input[name=key]", operator)
    page.click("form button[type=submit]")
    expect(page.locator("h1")).to_have_text("Overview")
    row = page.locator(f'#recent tr[data-id="{done_id}"]')
    expect(row.locator("td span.chip.s-completed")).to_have_text("completed", timeout=WAIT_MS)
    expect(row.locator(".chips .chip.s-approved")).to_have_count(len(example_steps(stack)))

    page.goto(f"{stack.url}/ops/applications/{done_id}")
    expect(page.locator("#app-status")).to_have_text("completed")
    expect(page.locator("svg.dag g.node[data-status=approved]")).to_have_count(len(example_steps(stack)))
    expect(page.locator("table.timeline tr.t-published").first).to_be_visible()
    assert "3171012345670123" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "application.png"), full_page=True)

    # Times in the hall's zone, to the second, UTC on hover.
    created = page.locator("p time").first
    expect(created).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    expect(created).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    expect(page.locator("p.zone")).to_contain_text("Asia/Jakarta")

    # The company registry goes down: the next bundles' first step retries, then dead-letters.
    sandbox.faults("company-registry", failure_rate=1.0)
    failing_id = submit(stack, front_office, example)
    second_id = submit(stack, front_office, example)
    wait_until(lambda: company_retry(stack, operator, failing_id), 120, message="the registry's first failure")
    page.goto(f"{stack.url}/ops/applications/{failing_id}")
    company = page.locator('table.requests tr[data-step="company"]')
    expect(company.locator(".chip.s-retrying")).to_have_text("retrying")
    expect(company.locator(".next-attempt")).to_contain_text(re.compile(r"next attempt at \d\d:\d\d:\d\d \(.*503"))
    page.screenshot(path=str(ARTIFACTS / "retrying.png"), full_page=True)

    page.goto(stack.url + "/ops/dead-letters")
    dead_row = page.locator("#dead-letters tbody tr", has=page.locator(f'a:text-is("{failing_id}")'))
    expect(dead_row).to_have_count(1, timeout=WAIT_MS)  # the page polls; no reload
    expect(dead_row.locator("td").nth(2)).to_have_text("company-registry")
    expect(dead_row.locator("td").nth(5)).to_have_text("2")
    expect(dead_row.locator("td.reason")).to_contain_text("failed after every retry (2 attempts of 2)")
    page.goto(stack.url + "/ops/")
    expect(page.locator('[data-counter="dead_letters_open"]')).to_have_text("2", timeout=WAIT_MS)
    # 1 call of 5 went well: the registry's success rate is red, unlike a healthy agency's.
    registry = page.locator('table.agencies tr[data-agency="company-registry"] td[data-field="success_rate"]')
    expect(registry).to_have_class("level-alert", timeout=WAIT_MS)
    expect(registry).to_have_css("background-color", "rgb(255, 227, 227)")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # The registry is back: one click replays the dead letter, and the bundle completes.
    sandbox.faults("company-registry", failure_rate=0.0)
    page.goto(stack.url + "/ops/dead-letters")
    dead_row = page.locator("#dead-letters tbody tr", has=page.locator(f'a:text-is("{failing_id}")'))
    dead_row.locator("button.replay").click()
    expect(page.locator("#replay-status")).to_contain_text("replayed")
    expect(dead_row).to_have_count(0, timeout=WAIT_MS)

    page.goto(f"{stack.url}/ops/applications/{failing_id}")
    expect(page.locator("#app-status")).to_have_text("completed", timeout=WAIT_MS)  # the page reloads itself
    expect(page.locator("table.timeline tr.t-replay")).to_have_count(1)
    expect(page.locator("table.timeline tr.t-replay")).to_contain_text("replayed by duty-operator in /ops")
    page.screenshot(path=str(ARTIFACTS / "replayed.png"), full_page=True)

    # The other one by bulk replay, filtered to the registry: a dry run first, then each
    # message's result as the history shows it.
    page.goto(stack.url + "/ops/dead-letters?agency=company-registry")
    page.click("#dry-run")
    expect(page.locator("#bulk-summary")).to_contain_text("1 dead letter(s) would be replayed")
    expect(page.locator('#bulk-by-agency li[data-agency="company-registry"]')).to_have_text("company-registry: 1")
    page.fill("input[name=why]", "registry back after maintenance")
    page.click("#bulk-confirm")
    result = page.locator(f'#bulk-results tr:has(a:text-is("{second_id}")) td.result')
    expect(result).to_have_text("went through", timeout=WAIT_MS)
    expect(page.locator("#replay-status")).to_contain_text("Bulk replay by duty-operator: 1 went through")
    page.screenshot(path=str(ARTIFACTS / "bulk-replay.png"), full_page=True)
    page.goto(f"{stack.url}/ops/applications/{second_id}")
    expect(page.locator("#app-status")).to_have_text("completed", timeout=WAIT_MS)
    expect(page.locator("table.timeline tr.t-replay")).to_contain_text(
        "bulk replay by duty-operator: registry back after maintenance")


def example_steps(stack) -> list[str]:
    from gateway.catalog import load_catalog
    return list(load_catalog(stack.env["SATUPINTU_CONFIG"]).services["business-startup"].steps)
