"""Input the gateway used to resolve quietly is refused (issue 26, findings 8 and 9): duplicate
JSON keys, a charset other than UTF-8, ``"reference": null``, and LIKE wildcards in an
operator's search."""

from __future__ import annotations

import json


def _submit(client, auth, body: bytes | str, content_type: str = "application/json"):
    return client.post("/v1/applications", data=body, headers={**auth, "Content-Type": content_type})


def test_a_body_with_a_duplicate_key_is_refused_naming_the_key(client, auth, example):
    text = json.dumps(example)
    twice = text[:-1] + ', "reference": "second"}'  # last-wins would file "second"
    answer = _submit(client, auth, twice)
    assert answer.status_code == 400
    assert answer.mimetype == "application/problem+json"
    assert "reference" in answer.get_json()["detail"]


def test_a_duplicate_key_deep_inside_the_data_is_refused_too(client, auth, example):
    text = json.dumps(example).replace('"name": ', '"name": "PT Satu", "name": ', 1)
    answer = _submit(client, auth, text)
    assert answer.status_code == 400
    assert "name" in answer.get_json()["detail"]


def test_a_body_declared_in_another_charset_is_415(client, auth, example):
    body = json.dumps(example, ensure_ascii=False).encode("latin-1", errors="replace")
    for charset in ("latin-1", "ISO-8859-1", "utf-16"):
        answer = _submit(client, auth, body, f"application/json; charset={charset}")
        assert answer.status_code == 415, charset
        assert answer.mimetype == "application/problem+json"
    for charset in ("utf-8", "UTF-8", '"utf-8"'):
        assert _submit(client, auth, json.dumps(example), f"application/json; charset={charset}").status_code == 202


def test_a_null_reference_is_refused_naming_it(client, auth, example):
    answer = client.post("/v1/applications", json={**example, "reference": None}, headers=auth)
    assert answer.status_code == 422
    assert [e["path"] for e in answer.get_json()["errors"]] == ["/reference"]


def test_percent_and_underscore_in_an_ops_search_are_not_wildcards(client, auth, example):
    submitted = client.post("/v1/applications", json=example, headers=auth).get_json()
    for query in ("app_%%%%", "app_" + "_" * 32, submitted["id"][:8] + "%"):
        found = client.get("/ops/api/search", query_string={"q": query}, headers=auth).get_json()
        assert found["results"] == [], query
    prefix = client.get("/ops/api/search", query_string={"q": submitted["id"][:12]}, headers=auth).get_json()
    assert [r["id"] for r in prefix["results"]] == [submitted["id"]]
