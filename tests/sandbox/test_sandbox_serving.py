"""How the sandbox serves: kept-alive connections, calls answered side by side, clean stops.

Concurrency is read from the sandbox's own ``peak_in_flight`` counter, not from timings.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests

COMPANY = {"company_name": "PT Maju Jaya", "owner_nik": "3171234567890001"}
TAX_ENVELOPE = """<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:tax="urn:satupintu:sandbox:tax"><soapenv:Body><tax:RegisterTaxpayer>
  <tax:request_id>{request_id}</tax:request_id><tax:company_number>AHU-0000000001</tax:company_number>
  <tax:name>PT Maju Jaya</tax:name></tax:RegisterTaxpayer></soapenv:Body></soapenv:Envelope>"""


def key() -> str:
    return str(uuid.uuid4())


def connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


def exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> http.client.HTTPResponse:
    conn.request(method, path, body=body, headers=headers or {})
    answer = conn.getresponse()
    answer.read()
    return answer


def register(url: str) -> int:
    answer = requests.post(
        url + "/companies",
        json=COMPANY,
        headers={"Idempotency-Key": key()},
        timeout=30,
    )
    return answer.status_code


def test_a_kept_alive_connection_answers_two_rest_calls_on_one_socket(sandbox):
    conn = connection(sandbox.url("company-registry"))
    request_id = key()
    filed = exchange(
        conn,
        "POST",
        "/companies",
        json.dumps(COMPANY),
        {"Idempotency-Key": request_id, "Content-Type": "application/json"},
    )
    first_socket = conn.sock
    looked_up = exchange(conn, "GET", f"/companies?request_id={request_id}")
    assert (filed.status, looked_up.status) == (201, 200)
    assert filed.getheader("Connection") is None
    assert looked_up.getheader("Connection") is None
    # http.client drops a socket the server said it would close; this one was kept.
    assert first_socket is not None and conn.sock is first_socket
    conn.close()


def test_a_kept_alive_connection_serves_the_wsdl_and_a_soap_call(sandbox):
    conn = connection(sandbox.url("tax-office"))
    wsdl = exchange(conn, "GET", "/?wsdl")
    first_socket = conn.sock
    filed = exchange(
        conn,
        "POST",
        "/",
        TAX_ENVELOPE.format(request_id=key()),
        {"Content-Type": "text/xml; charset=utf-8"},
    )
    assert (wsdl.status, filed.status) == (200, 200)
    assert wsdl.getheader("Connection") is None
    assert filed.getheader("Connection") is None
    assert first_socket is not None and conn.sock is first_socket
    conn.close()


def test_slow_calls_are_answered_side_by_side(sandbox):
    sandbox.faults("company-registry", latency_ms=500)
    calls = 20
    url = sandbox.url("company-registry")
    started = time.monotonic()
    with ThreadPoolExecutor(calls) as pool:
        statuses = list(pool.map(lambda _: register(url), range(calls)))
    elapsed = time.monotonic() - started
    assert statuses == [201] * calls
    # One after the other they would take 10 s.
    assert elapsed < calls * 0.5 / 2
    stats = sandbox.stats("company-registry")
    assert stats["requests"] == calls
    assert stats["peak_in_flight"] >= calls // 2


def test_peak_in_flight_counts_agency_calls_and_starts_again_at_reset(sandbox):
    url = sandbox.url("company-registry")
    assert sandbox.stats("company-registry")["peak_in_flight"] == 0
    assert register(url) == 201
    assert sandbox.stats("company-registry")["peak_in_flight"] == 1
    requests.post(url + "/_sandbox/reset", timeout=5).raise_for_status()
    assert sandbox.stats("company-registry")["peak_in_flight"] == 0


def test_the_threads_option_caps_the_calls_one_agency_answers_at_once(launcher):
    faults = json.dumps({"company-registry": {"latency_ms": 300}})
    box = launcher("--threads", "2", "--faults", faults)
    urls = box.urls
    try:
        with ThreadPoolExecutor(6) as pool:
            statuses = list(
                pool.map(lambda _: register(urls["company-registry"]), range(6))
            )
        assert statuses == [201] * 6  # the others waited in line, none was refused
        stats = requests.get(
            urls["company-registry"] + "/_sandbox/stats", timeout=5
        ).json()
        assert stats["peak_in_flight"] == 2
        # Waitress warns of its queue depth: not a word of it without --verbose.
        assert box.stderr() == ""
    finally:
        assert box.stop() == 0


def test_sigterm_answers_the_call_in_flight_and_closes_idle_connections(launcher):
    faults = json.dumps({"company-registry": {"latency_ms": 500}})
    box = launcher("--faults", faults)
    urls = box.urls
    registry = urls["company-registry"]
    idle = connection(urls["municipality"])
    assert exchange(idle, "GET", "/_sandbox/health").status == 200
    answers: list[int] = []
    call = threading.Thread(target=lambda: answers.append(register(registry)))
    call.start()
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and not requests.get(registry + "/_sandbox/requests", timeout=5).json()
    ):
        time.sleep(0.02)  # until the sandbox has the call (it sleeps after recording)
    assert box.stop() == 0
    call.join(10)
    assert answers == [201]
    assert box.stderr() == ""
    # The idle connection was closed by the sandbox, not left to time out.
    assert idle.sock.recv(1) == b""
    idle.close()


def test_verbose_logs_one_line_per_request(launcher):
    box = launcher("--verbose")
    urls = box.urls
    try:
        requests.get(urls["company-registry"] + "/_sandbox/health", timeout=5)
        assert register(urls["company-registry"]) == 201
    finally:
        assert box.stop() == 0
    log = box.stderr()
    assert 'company-registry 127.0.0.1 "GET /_sandbox/health HTTP/1.1" 200' in log
    assert 'company-registry 127.0.0.1 "POST /companies HTTP/1.1" 201' in log
