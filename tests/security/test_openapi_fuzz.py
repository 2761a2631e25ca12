"""schemathesis against /openapi.json, in-process over WSGI: generated requests (valid and
invalid) for every operation must never get a server error nor an answer the spec does
not describe (status, content type, headers, body schema)."""

from __future__ import annotations

import dataclasses
import os

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

CASES_PER_OPERATION = int(os.environ.get("SATUPINTU_FUZZ_CASES", "60"))


def test_every_generated_request_gets_an_answer_the_spec_describes(app, make_key):
    # The rate limit is tested on its own; here it would only turn cases into 429s.
    context = app.extensions["satupintu"]
    context.settings = dataclasses.replace(context.settings, rate_limit=0)
    key = make_key("submit", "read", "ops")
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    counted = {"cases": 0, "operations": 0}
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        counted["operations"] += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case):
            counted["cases"] += 1
            excluded = []
            if case.path.endswith("/events"):
                case.query = {**(case.query or {}), "timeout": 0}  # do not hold a stream open
            if (case.query or {}).get("cursor") is not None:
                # A cursor is opaque: a string the schema allows is still not one we issued (400).
                excluded.append(positive_data_acceptance)
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every operation runs; failures are reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:3000]}")
    print(f"schemathesis: {counted['cases']} cases over {counted['operations']} operations")
    assert not failures, "\n\n".join(failures) + f"\n\n({len(failures)} operations failed)"
    assert counted["cases"] >= 1000
