"""A corpus of hostile requests (OWASP API4, API8): each gets a 4xx problem+json, never a
5xx, and the store is unchanged afterwards."""

from __future__ import annotations

import copy
import io
import json

import pytest

SQL = "'; DROP TABLE applications; --"
JMESPATH = "data.applicant.nik || `\"x\"` | [*].@"
TRAVERSAL = "../../../../etc/passwd"
HOSTILE_STRINGS = [SQL, JMESPATH, TRAVERSAL, "%00", "\x00", "${jndi:ldap://x/a}", "{{7*7}}", "<script>x</script>"]


def deep(levels: int) -> str:
    return '{"service": "business-startup", "data": ' + "[" * levels + "]" * levels + "}"


def bodies(example):
    """(name, raw bytes, content type) of bad submission bodies."""
    big = json.dumps(dict(example, padding="x" * (10 * 1024 * 1024))).encode()
    huge_array = json.dumps({"service": "business-startup", "data": {"applicant": list(range(200_000))}}).encode()
    yield "malformed JSON", b'{"service": ', "application/json"
    yield "trailing garbage", json.dumps(example).encode() + b"}}", "application/json"
    yield "not an object", b"[1, 2, 3]", "application/json"
    yield "a bare string", b'"business-startup"', "application/json"
    yield "null", b"null", "application/json"
    yield "wrong content type", json.dumps(example).encode(), "text/plain"
    yield "form encoded", b"service=business-startup", "application/x-www-form-urlencoded"
    yield "no content type", json.dumps(example).encode(), None
    yield "invalid UTF-8", b'{"service": "\xff\xfe"}', "application/json"
    yield "UTF-16", json.dumps(example).encode("utf-16"), "application/json"
    yield "a 10 MB body", big, "application/json"
    yield "10,000-deep nesting", deep(10_000).encode(), "application/json"
    yield "990-deep nesting", deep(990).encode(), "application/json"
    yield "100-deep nesting", deep(100).encode(), "application/json"
    yield "a huge array", huge_array, "application/json"
    yield "NaN", b'{"service": "business-startup", "data": {"x": NaN}}', "application/json"
    yield "a huge number", b'{"service": "business-startup", "data": {"company": {"employees": 1e999999}}}', \
        "application/json"
    yield "unknown service", json.dumps(dict(example, service="open-a-casino")).encode(), "application/json"
    yield "unknown field", json.dumps(dict(example, client_id="cli_someone_else")).encode(), "application/json"
    yield "service as a list", json.dumps(dict(example, service=["business-startup"])).encode(), "application/json"
    yield "reference too long", json.dumps(dict(example, reference="r" * 201)).encode(), "application/json"
    yield "reference with NUL", json.dumps(dict(example, reference="a\x00b")).encode(), "application/json"
    for text in HOSTILE_STRINGS:
        for field in ("nik", "name", "email", "phone"):
            bad = copy.deepcopy(example)
            bad["data"]["applicant"][field] = text + "x" * 300  # too long for every field
            yield f"{text!r} in {field}", json.dumps(bad).encode(), "application/json"
        yield f"{text!r} as service", json.dumps(dict(example, service=text)).encode(), "application/json"


def assert_problem(response, name):
    assert 400 <= response.status_code < 500, (name, response.status_code, response.get_data(as_text=True)[:300])
    assert response.mimetype == "application/problem+json", (name, response.mimetype)
    problem = response.get_json()
    assert problem["status"] == response.status_code and problem["title"] and problem["detail"], name


def test_every_bad_body_is_a_4xx_problem_and_changes_nothing(client, auth, example, fingerprint):
    before = fingerprint()
    for name, raw, content_type in bodies(example):
        headers = dict(auth)
        if content_type:
            headers["Content-Type"] = content_type
        response = client.post("/v1/applications", data=raw, headers=headers)
        assert_problem(response, name)
    assert fingerprint() == before


def test_the_sizes_of_bad_bodies_get_the_right_statuses(client, auth, example):
    by_name = {name: (raw, ct) for name, raw, ct in bodies(example)}
    expected = {"a 10 MB body": 413, "10,000-deep nesting": 400, "990-deep nesting": 400, "100-deep nesting": 400,
                "wrong content type": 415, "invalid UTF-8": 400, "malformed JSON": 400, "unknown service": 422}
    for name, status in expected.items():
        raw, content_type = by_name[name]
        response = client.post("/v1/applications", data=raw, headers={**auth, "Content-Type": content_type})
        assert response.status_code == status, (name, response.status_code)


def post_chunked(app, path, body, headers):
    """POST as gunicorn hands on ``Transfer-Encoding: chunked``: no length, ``wsgi.input_terminated``.
    (The test client rebuilds environs and would put a Content-Length back.)"""
    from werkzeug.test import EnvironBuilder, run_wsgi_app
    from werkzeug.wrappers import Response
    environ = EnvironBuilder(path=path, method="POST", input_stream=io.BytesIO(body), headers={
        **headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    app_iter, status, response_headers = run_wsgi_app(app, environ, buffered=True)
    return Response(app_iter, status=status, headers=response_headers)


def test_a_chunked_body_without_length_is_capped_too(client, auth, app, example, fingerprint):
    """Werkzeug cuts such a body at the limit without a word; we answer 413 problem+json."""
    before = fingerprint()
    limit = app.config["MAX_CONTENT_LENGTH"]
    padded = json.dumps(example).encode()[:-1] + b', "padding": "' + b"x" * limit + b'"}'
    for path in ("/v1/applications", "/v1/agencies/municipality/callbacks"):
        response = post_chunked(app, path, padded, auth)
        assert response.status_code == 413, (path, response.get_data(as_text=True)[:200])
        assert response.mimetype == "application/problem+json"
    assert fingerprint() == before
    small = post_chunked(app, "/v1/applications", json.dumps(example).encode(), auth)
    assert small.status_code == 202  # a chunked body under the limit is read whole


@pytest.mark.parametrize("text", HOSTILE_STRINGS + ["app_" + "0" * 32, "a" * 5000])
def test_hostile_ids_and_filters_are_4xx_everywhere(client, auth, text, fingerprint):
    from urllib.parse import quote
    before = fingerprint()
    ident = quote(text, safe="")
    for method, path in [("GET", f"/v1/applications/{ident}"), ("GET", f"/v1/applications/{ident}/history"),
                         ("GET", f"/v1/applications/{ident}/events?timeout=0"),
                         ("POST", f"/v1/applications/{ident}/cancel"),
                         ("GET", f"/v1/applications?service={ident}"), ("GET", f"/v1/applications?status={ident}"),
                         ("GET", f"/v1/applications?cursor={ident}"), ("GET", f"/v1/applications?limit={ident}"),
                         ("GET", "/v1/applications?limit=101"), ("GET", "/v1/applications?limit=0"),
                         ("GET", f"/ops/api/applications/{ident}"), ("POST", f"/ops/api/dead-letters/{ident}/replay")]:
        response = client.open(path, method=method, headers=auth)
        assert_problem(response, f"{method} {path[:120]}")
    # A search is allowed to search for anything: it finds nothing, or says the query is too long.
    search = client.get(f"/ops/api/search?q={ident}", headers=auth)
    refused = len(text) > 200 or "\x00" in text  # NUL bytes are refused everywhere (no store keeps them)
    assert search.status_code == 400 if refused else search.get_json()["results"] == []
    assert fingerprint() == before


def test_a_cursor_of_the_right_shape_but_wrong_content_is_400(client, auth):
    import base64
    for payload in ([1, 2], {"a": 1, "b": 2}, ["not a date", "app_x"], ["2026-01-01T00:00:00Z", "../x"], "x"):
        cursor = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
        response = client.get(f"/v1/applications?cursor={cursor}", headers=auth)
        assert_problem(response, payload)


def test_a_bad_idempotency_key_is_400(client, auth, example, fingerprint):
    before = fingerprint()
    for key in ("k" * 201, "a\tb"):
        response = client.post("/v1/applications", json=example, headers={**auth, "Idempotency-Key": key})
        assert_problem(response, key[:20])
    assert fingerprint() == before


def test_an_sse_timeout_that_is_not_a_number_is_400(client, auth, submitted):
    for value in ("abc", "-1", "nan", "99999"):
        response = client.get(f"/v1/applications/{submitted['id']}/events?timeout={value}", headers=auth)
        assert_problem(response, value)
