"""The OpenAPI document and the server agree (issue 26 finding 8, issue 24 item 5): the
document is valid OpenAPI 3.1, names every operation, types every array, leaves the HTML
pages out, and says what the server really answers."""

from __future__ import annotations

import re
import uuid

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

METHODS = ("get", "put", "post", "delete", "patch")
# A value for each path parameter, well formed so that the route matches.
SAMPLE = {"app_id": "app_" + "0" * 32, "doc_id": "doc_" + "0" * 32, "agency_id": "municipality", "dead_id": "1"}


@pytest.fixture
def document(client) -> dict:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.get_json()


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _arrays(node, where: str = "#"):
    """Every schema in ``node`` that says ``type: array``, with where it is."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "array" or (isinstance(kind, list) and "array" in kind):
            yield where, node
        for key, child in node.items():
            yield from _arrays(child, f"{where}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _arrays(child, f"{where}/{i}")


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["servers"]


def test_every_operation_has_a_stable_snake_case_operation_id_and_a_tag(document):
    ids = [op.get("operationId") for _path, _method, op in _operations(document)]
    assert all(isinstance(i, str) and re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids), ids
    assert len(ids) == len(set(ids))
    declared = {tag["name"] for tag in document["tags"]}
    for path, method, op in _operations(document):
        assert op.get("tags") and set(op["tags"]) <= declared, f"{method} {path}"
    assert {"get_application", "submit_application", "list_applications", "cancel_application",
            "list_services"} <= set(ids)


def test_every_array_has_an_item_schema(document):
    untyped = [where for where, schema in _arrays(document) if "items" not in schema]
    assert not untyped


def test_every_list_answer_names_what_its_items_are(document):
    for path in ("/v1/services", "/ops/api/applications", "/ops/api/agencies", "/ops/api/dead-letters"):
        schema = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in schema["properties"]["items"]["items"], path


def test_the_dashboard_pages_and_login_are_not_in_the_document(document):
    paths = set(document["paths"])
    assert not {p for p in paths if p.startswith("/ops/") and not p.startswith("/ops/api/")}
    for _path, _method, op in _operations(document):
        for answer in op["responses"].values():
            assert "text/html" not in answer.get("content", {})


def test_every_json_route_of_the_app_is_in_the_document(app, document):
    def as_openapi(rule: str) -> str:
        return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)

    served = set()
    for rule in app.url_map.iter_rules():
        html = rule.endpoint.startswith("ops.") and not rule.endpoint.startswith("ops.api.")
        if html or rule.endpoint.endswith("static"):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((as_openapi(rule.rule), method.lower()))
    documented = {(path, method) for path, method, _op in _operations(document)}
    assert served == documented


def test_every_operation_documents_the_400_a_nul_byte_in_the_query_gets(client, document, auth):
    for path, method, op in _operations(document):
        assert "400" in op["responses"], f"{method} {path}"
    answer = client.get("/v1/services?x=%00", headers=auth)
    assert answer.status_code == 400
    assert answer.mimetype == "application/problem+json"


def test_a_method_the_document_does_not_list_answers_405_with_allow(client, document, auth):
    for path, item in document["paths"].items():
        url = path.format(**SAMPLE)
        declared = {m.upper() for m in METHODS if m in item}
        for method in set(m.upper() for m in METHODS) - declared:
            answer = client.open(url, method=method, headers=auth)
            assert answer.status_code == 405, f"{method} {path}"
            assert declared <= {m.strip() for m in answer.headers["Allow"].split(",")}, f"{method} {path}"


@pytest.mark.parametrize("path, most", [("/ops/api/applications", 200), ("/ops/api/dead-letters", 1000),
                                        ("/ops/api/search", 200)])
def test_an_ops_limit_outside_what_the_document_allows_is_a_400_naming_limit(client, auth, document, path, most):
    schema = next(p["schema"] for p in document["paths"][path]["get"]["parameters"] if p["name"] == "limit")
    assert (schema["minimum"], schema["maximum"]) == (1, most)
    for limit in (0, -1, most + 1, "many"):
        answer = client.get(f"{path}?limit={limit}&q=x", headers=auth)
        assert answer.status_code == 400, limit
        assert answer.mimetype == "application/problem+json"
        assert "limit" in answer.get_json()["detail"]
    for limit in (1, most):
        assert client.get(f"{path}?limit={limit}&q=x", headers=auth).status_code == 200


# --- what the document says about answers and input, held against the server ------------

def _answer_schema(document: dict, path: str, method: str = "get") -> Draft202012Validator:
    schema = document["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


def test_the_ops_answers_carry_every_field_the_document_requires(client, document, submitted, example, auth,
                                                                  engine, catalog, make_key):
    from gateway.tracker import apply_event, record_dead_letter
    retrying = next(r for r in submitted["requests"] if r["status"] == "queued")
    failing = client.post("/v1/applications", json=example, headers={**auth, "Idempotency-Key": "other"}).get_json()
    dead = next(r for r in failing["requests"] if r["status"] == "queued")
    with engine.begin() as conn:
        apply_event(conn, catalog, {
            "event_id": uuid.uuid4().hex, "type": "retry", "request_id": retrying["request_id"],
            "application_id": submitted["id"], "service": submitted["service"], "step": retrying["step"],
            "agency": retrying["agency"], "status": None, "attempt": 1, "reference": None, "reason": "HTTP 503",
            "output": None, "detail": {"reason": "HTTP 503", "next_attempt": 2, "delay_seconds": 30},
            "occurred_at": None})
        body = {"message_id": uuid.uuid4().hex, "kind": "send", "request_id": dead["request_id"],
                "application_id": failing["id"], "service": failing["service"], "step": dead["step"],
                "agency": dead["agency"], "operation": "op", "payload": {}}
        record_dead_letter(conn, catalog, body, {"x-attempt": 3, "x-last-error": "HTTP 503"}, body["message_id"])
    ops = {"Authorization": f"Bearer {make_key('ops')}", "Origin": "http://localhost"}

    def answer(path: str, url: str, method: str = "get") -> dict:
        response = client.open(url, method=method.upper(), headers=ops)
        assert response.status_code == 200, response.get_data(as_text=True)
        doc = response.get_json()
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in _answer_schema(document, path, method).iter_errors(doc)]
        assert not errors, (url, errors)
        return doc

    listed = answer("/ops/api/applications", "/ops/api/applications")
    assert any(step["retry"] for item in listed["items"] for step in item["steps"])
    detail = answer("/ops/api/applications/{app_id}", f"/ops/api/applications/{submitted['id']}")
    assert any(r["retry"] and r["retry"]["next_attempt"] == 2 for r in detail["requests"])
    assert answer("/ops/api/applications/{app_id}", f"/ops/api/applications/{failing['id']}")["dead_letters"]
    letters = answer("/ops/api/dead-letters", "/ops/api/dead-letters")["items"]
    assert letters and all(d["what_happened"] and d["kind"] == "send" for d in letters)
    assert all(a["success_level"] for a in answer("/ops/api/agencies", "/ops/api/agencies")["items"])
    assert answer("/ops/api/dead-letters/replay", "/ops/api/dead-letters/replay", "post")["would_replay"] == 1


def test_the_submission_patterns_refuse_exactly_what_the_gateway_refuses(document):
    from core.domain.text import text_problem
    data = document["components"]["schemas"]["Data_business_startup"]
    company = data["properties"]["company"]["properties"]
    street, name = company["address"]["properties"]["street"]["pattern"], company["name"]["pattern"]
    reference = document["components"]["schemas"]["Submission"]["properties"]["reference"]["pattern"]
    nik_rules = [rule["pattern"] for rule in data["properties"]["applicant"]["properties"]["nik"]["allOf"]]
    assert nik_rules == [street]  # beside its own digits-only pattern
    assert reference == name
    for pattern, name_like in ((re.compile(street), False), (re.compile(name), True)):
        for code in range(0x110000):
            char = chr(code)
            assert (pattern.search(char) is None) == (text_problem(char, name_like=name_like) is not None), \
                f"U+{code:04X} ({'name' if name_like else 'text'})"
