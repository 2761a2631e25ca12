"""schemathesis against /openapi.json, in-process over WSGI, with every check that applies.

Each operation gets generated valid (positive) and invalid (negative) requests: a valid one
must be accepted, an invalid one refused with a 4xx, and every answer must be one the
document describes (status, content type, headers, body schema), with no server error.  A
stateful run then follows the document's links (submit -> read, history, cancel), so the
checks about the resources a response created apply too.  ``SATUPINTU_FUZZ_CASES`` sets
the cases per operation and mode (default 60).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

CASES_PER_OPERATION = int(os.environ.get("SATUPINTU_FUZZ_CASES", "60"))

# What ``st run --checks all`` runs in schemathesis 4.x, less those that cannot apply here:
# - missing_required_header and unsupported_method judge only the cases of schemathesis'
#   coverage phase, which its CLI and pytest plugin generate but ``as_strategy`` does not
#   (and the plugin's lazy loader does not run on pytest 9).  Both are tested directly in
#   tests/security/test_spec_agreement.py: every undeclared method answers 405 with Allow,
#   and the callback's required signature header is tested in test_callbacks.py.
# - object_level_authorization compares what two configured identities may read, which
#   needs schemathesis' multi-identity auth configuration; BOLA on every route is tested
#   with real clients in tests/security/test_authorisation_matrix.py.
# use_after_free stays in, though no operation deletes anything (a cancelled application
# stays readable), so it has nothing to judge until one does.
ALL_CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
    response_schema_conformance, negative_data_rejection, positive_data_acceptance, allow_header_conformance,
    use_after_free, ensure_resource_availability, ignored_auth,
]


@pytest.fixture
def api_schema(app):
    """The gateway's own document, loaded over WSGI, with no rate limit (tested on its own;
    here it would only turn cases into 429s)."""
    context = app.extensions["satupintu"]
    context.settings = dataclasses.replace(context.settings, rate_limit=0)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # Every request carries the test's own valid key: the Authorization header is not generated
    # (ignored_auth checks what a missing or invalid key gets).
    schema.config.generation.update(with_security_parameters=False)
    return schema


def _checks_for(case) -> list:
    where = (case.method.upper(), case.operation.path)
    if where == ("GET", "/v1/applications") and (case.query or {}).get("cursor"):
        # A cursor is opaque: a string the schema allows is still not one the gateway issued (400).
        return [check for check in ALL_CHECKS if check is not positive_data_acceptance]
    if where == ("POST", "/v1/applications") and isinstance(case.body, dict) and case.body.get("documents"):
        # A document id the schema allows is still not one this client uploaded (422 naming it).
        return [check for check in ALL_CHECKS if check is not positive_data_acceptance]
    if where == ("POST", "/v1/documents"):
        # No virus scanner runs here (tests/documents starts clamd and tests uploads): an upload
        # that passes the form checks gets the documented 503 "scanner not available".
        return [check for check in ALL_CHECKS if check is not not_a_server_error]
    return ALL_CHECKS


def _quick(case) -> None:
    """A stream answers at once instead of staying open (an invalid timeout is left to be refused)."""
    if case.path.endswith("/events"):
        timeout = (case.query or {}).get("timeout")
        if timeout is None or (type(timeout) in (int, float) and 0 <= timeout <= 3600):
            case.query = {**(case.query or {}), "timeout": 0}


_SETTINGS = dict(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _fuzz(operation, mode: GenerationMode, headers: dict[str, str], counted: dict) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=CASES_PER_OPERATION, phases=[Phase.explicit, Phase.generate], **_SETTINGS)
    def run(case):
        counted[mode] += 1
        _quick(case)
        case.call_and_validate(headers=headers, checks=_checks_for(case))

    run()


def test_every_generated_request_gets_an_answer_the_document_describes(api_schema, make_key):
    headers = {"Authorization": f"Bearer {make_key('submit', 'read', 'ops')}"}
    counted = dict.fromkeys(GenerationMode, 0)
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            try:
                _fuzz(operation, mode, headers, counted)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to get wrong (no parameters)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every operation runs; reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {str(exc)[:3000]}")
    print("schemathesis:", ", ".join(f"{count} {mode.value}" for mode, count in counted.items()), "cases")
    assert not failures, "\n\n".join(failures) + f"\n\n({len(failures)} operations failed)"
    assert min(counted.values()) >= 5 * CASES_PER_OPERATION  # both modes really ran, on many operations


def test_following_the_links_answers_as_the_document_says(api_schema, make_key):
    headers = {"Authorization": f"Bearer {make_key('submit', 'read', 'ops')}"}

    class Workflow(api_schema.as_state_machine()):
        def get_call_kwargs(self, case):
            _quick(case)
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=_checks_for(case), headers=headers,
                                   transport_kwargs=kwargs or None, recorder=self.recorder)

    Workflow.run(settings=settings(max_examples=max(5, CASES_PER_OPERATION // 3), stateful_step_count=6,
                                   phases=[Phase.generate], **_SETTINGS))
