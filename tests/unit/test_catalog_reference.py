"""docs/catalog.md stays true: its reference is what scripts/catalog-reference writes from
the schemas, and the walk-through's files and fragments load as a catalog."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.domain.errors import ConfigError
from gateway.catalog import load_catalog

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "catalog-reference"
GUIDE = REPO / "docs" / "catalog.md"
WALKTHROUGH = REPO / "examples" / "catalog-walkthrough"
AGENCY_FILE = Path("agencies") / "company-registry.yaml"
SERVICE_FILE = Path("services") / "register-company.yaml"


def script():
    """scripts/catalog-reference as a module (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("catalog_reference", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def fragments(kind: str) -> list[dict]:
    """The YAML blocks of the guide marked ``<!-- fragment: KIND -->``."""
    found = re.findall(rf"<!-- fragment: {kind} -->\n```yaml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    return [yaml.safe_load(block) for block in found]


def walkthrough_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "my-catalog"
    shutil.copytree(WALKTHROUGH, folder)
    return folder


def edit_yaml(path: Path, change) -> None:  # noqa: ANN001
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def test_the_reference_in_the_guide_is_what_the_script_writes():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_schema_changed_without_regenerating_makes_the_guide_stale(monkeypatch, capsys):
    module = script()
    original = module.load_schema

    def changed(name: str) -> dict:
        schema = original(name)
        if name == "agency.schema.json":
            schema["properties"]["retry"]["properties"]["jitter"] = {"type": "number", "description": "spread"}
        return schema

    monkeypatch.setattr(module, "load_schema", changed)
    before = GUIDE.read_text(encoding="utf-8")
    assert module.main(["--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert GUIDE.read_text(encoding="utf-8") == before  # --check changes nothing
    assert "| `jitter` | number |" in module.update(before)


def test_the_reference_has_a_row_for_every_key_of_both_schemas():
    text = GUIDE.read_text(encoding="utf-8")
    for name in ("agency.schema.json", "service.schema.json"):
        schema = json.loads((REPO / "schemas" / name).read_text(encoding="utf-8"))
        for key in schema["properties"]:
            assert f"| `{key}` |" in text, f"{name}: {key}"


def test_every_key_of_both_schemas_is_described():
    def undescribed(node, where: str):  # noqa: ANN001
        for key, sub in (node.get("properties") or {}).items():
            if not sub.get("description"):
                yield f"{where}{key}"
            yield from undescribed(sub, f"{where}{key}.")
        for word in ("items", "additionalProperties"):
            if isinstance(node.get(word), dict):
                yield from undescribed(node[word], f"{where}<{word}>.")
        for branch in node.get("oneOf", []):
            yield from undescribed(branch, where)

    for name in ("agency.schema.json", "service.schema.json"):
        schema = json.loads((REPO / "schemas" / name).read_text(encoding="utf-8"))
        assert list(undescribed(schema, "")) == [], name


def test_the_walkthrough_catalog_loads():
    catalog = load_catalog(WALKTHROUGH)
    service = catalog.services["register-company"]
    assert service.order == ("register", "confirm")
    assert service.steps["confirm"].after == ("register",)
    assert set(catalog.agencies["company-registry"].operations) == {"register_company", "read_company"}


def test_the_guide_shows_every_file_of_the_walkthrough():
    text = GUIDE.read_text(encoding="utf-8")
    files = [p.relative_to(REPO).as_posix() for p in sorted(WALKTHROUGH.rglob("*")) if p.is_file()]
    assert files
    for name in files:
        assert f"<!-- BEGIN include {name} -->" in text, name


def test_the_sample_body_is_valid_for_the_walkthrough_service():
    import jsonschema
    body = json.loads((WALKTHROUGH / "register-company.json").read_text(encoding="utf-8"))
    service = load_catalog(WALKTHROUGH).services[body["service"]]
    jsonschema.Draft202012Validator(service.input_schema).validate(body["data"])


@pytest.mark.parametrize("fragment", fragments("agency"), ids=lambda f: "+".join(f))
def test_each_agency_fragment_of_the_guide_loads_in_the_walkthrough_agency(tmp_path, fragment):
    folder = walkthrough_copy(tmp_path)

    def merge(doc: dict) -> None:
        for key, value in copy.deepcopy(fragment).items():
            if key == "operations":
                doc["operations"].update(value)
            else:
                doc[key] = value

    edit_yaml(folder / AGENCY_FILE, merge)
    agency = load_catalog(folder).agencies["company-registry"]
    assert agency.decisions == fragment.get("decisions", "sync")


def test_the_guide_has_agency_and_request_fragments():
    assert len(fragments("agency")) >= 5 and fragments("request")


@pytest.mark.parametrize("fragment", fragments("request"), ids=lambda f: "+".join(f))
def test_each_request_fragment_of_the_guide_is_a_valid_mapping(tmp_path, fragment):
    folder = walkthrough_copy(tmp_path)
    edit_yaml(folder / SERVICE_FILE, lambda doc: doc["steps"]["confirm"]["request"].update(fragment))
    step = load_catalog(folder).services["register-company"].steps["confirm"]
    assert set(fragment) <= set(step.request)


def test_the_typos_the_guide_shows_are_refused_as_it_says(tmp_path):
    folder = walkthrough_copy(tmp_path)

    def typo(doc: dict) -> None:
        doc["steps"]["register"]["request"]["owner_nik"] = "data.applicant.nikk"
        doc["steps"]["confirm"]["request"]["registered_at"] = "steps.confirm.output.x"

    edit_yaml(folder / SERVICE_FILE, typo)
    with pytest.raises(ConfigError) as caught:
        load_catalog(folder)
    problems = [line.strip().split(": ", 1)[1] for line in str(caught.value).splitlines()[1:]]
    assert len(problems) == 2
    guide = GUIDE.read_text(encoding="utf-8")
    for problem in problems:
        assert f"my-catalog/services/register-company.yaml: {problem}" in guide
