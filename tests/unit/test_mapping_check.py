"""A mapping path that can never find a value stops start-up (and ``config check``), naming the
file, the step and the field (issue 24, item 3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.domain.errors import ConfigError
from gateway.catalog import load_catalog
from gateway.mapping_check import data_problem, field_chains, mapping_problems

REPO = Path(__file__).resolve().parents[2]
SERVICE = "services/business-startup.yaml"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    shutil.copytree(REPO / "config", tmp_path / "config")
    monkeypatch.setenv("SATUPINTU_MUNICIPALITY_SECRET", "x")
    return tmp_path / "config"


def edit(folder: Path, old: str, new: str) -> None:
    path = folder / SERVICE
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_typo_in_a_data_path_names_the_file_the_step_and_the_field(folder):
    edit(folder, "owner_nik: data.applicant.nik", "owner_nik: data.applicant.nikk")
    with pytest.raises(ConfigError) as err:
        load_catalog(folder)
    message = str(err.value)
    assert "business-startup.yaml: steps.company.request.owner_nik: data.applicant.nikk is not in the input schema" \
        in message
    assert "data.applicant has: email, name, nik, phone" in message


def test_a_step_that_does_not_run_before_cannot_be_read(folder):
    edit(folder, "company_number: steps.company.reference\n      nik:", "company_number: steps.permit.reference\n      nik:")
    with pytest.raises(ConfigError, match=r"steps.tax.request.company_number: steps.permit is not a step that runs "
                                          r"before 'tax'"):
        load_catalog(folder)


def test_a_step_offers_reference_output_and_status_only(folder):
    edit(folder, "npwp: steps.tax.reference", "npwp: steps.tax.referense")
    with pytest.raises(ConfigError, match=r"steps.social.request.npwp: steps.tax.referense: a step offers"):
        load_catalog(folder)


def test_an_earlier_step_of_an_earlier_step_may_be_read(folder):
    edit(folder, "npwp: steps.tax.reference", "npwp: join('/', [steps.tax.reference, steps.company.reference])")
    assert load_catalog(folder).services["business-startup"]


@pytest.mark.parametrize("expression, chains", [
    ("data.a.b", [["data", "a", "b"]]),
    ("data.owners[0].nik", [["data", "owners"]]),
    ("join(', ', [data.a, steps.x.reference])", [["data", "a"], ["steps", "x", "reference"]]),
    ("data.items[*].name", [["data", "items"]]),
    ("data.a || application.reference", [["data", "a"], ["application", "reference"]]),
    ("{n: data.name, r: steps.s.output.code}", [["data", "name"], ["steps", "s", "output", "code"]]),
    ("data.list | [0]", [["data", "list"]]),
])
def test_the_chains_read_from_the_top_of_the_context(expression, chains):
    import jmespath
    assert list(field_chains(jmespath.compile(expression).parsed)) == chains


SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "a": {"type": "object", "properties": {"b": {"type": "string"}}},
    "free": {"type": "object"},
    "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    "text": {"type": "string"},
    "ref": {"$ref": "#/$defs/thing"},
    "either": {"anyOf": [{"type": "object", "properties": {"p": {}}, "additionalProperties": False},
                         {"type": "object", "properties": {"q": {}}, "additionalProperties": False}]},
}, "$defs": {"thing": {"type": "object", "properties": {"t": {}}, "additionalProperties": False}}}


@pytest.mark.parametrize("path, can_exist", [
    ("a.b", True), ("a.c", False), ("zz", False), ("free.anything.below", True), ("map.key.x", True),
    ("map.key.y", False), ("text.length", False), ("ref.t", True), ("ref.u", False), ("either.p", True),
    ("either.q", True), ("either.r", False),
])
def test_what_the_schema_says_can_exist(path, can_exist):
    assert (data_problem(path.split("."), SCHEMA) is None) is can_exist


def test_application_fields_and_unknown_roots_are_checked():
    assert mapping_problems("s", "application.reference", schema={}, earlier=set()) == []
    assert "the application offers" in mapping_problems("s", "application.nik", schema={}, earlier=set())[0]
    assert "a mapping reads data, steps or application" in mapping_problems("s", "dta.x", schema={}, earlier=set())[0]
