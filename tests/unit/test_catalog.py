"""Catalog validation: a wrong file stops start-up with the file, the field and the problem."""

import shutil
from pathlib import Path

import pytest

from core.domain.errors import ConfigError
from core.model import resolve_secret
from gateway.catalog import load_catalog

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    shutil.copytree(REPO / "config", tmp_path / "config")
    monkeypatch.setenv("SATUPINTU_MUNICIPALITY_SECRET", "x")
    return tmp_path / "config"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_demo_catalog_is_valid(folder):
    catalog = load_catalog(folder)
    assert "business-startup" in catalog.services
    assert set(catalog.agencies) >= {"company-registry", "municipality"}


def test_a_typo_in_an_agency_file_names_the_file_and_the_field(folder):
    edit(folder / "agencies" / "company-registry.yaml", "timeouts:", "timeout:")
    with pytest.raises(ConfigError) as err:
        load_catalog(folder)
    assert "company-registry.yaml" in str(err.value)
    assert "'timeout' was unexpected" in str(err.value)


def test_an_answers_total_time_is_twice_the_read_timeout_at_least_a_minute_unless_given(folder):
    path = folder / "agencies" / "company-registry.yaml"
    assert load_catalog(folder).agencies["company-registry"].total_timeout == 60  # read: 10
    edit(path, "timeouts: {connect: 2, read: 10}", "timeouts: {connect: 2, read: 45}")
    assert load_catalog(folder).agencies["company-registry"].total_timeout == 90
    edit(path, "timeouts: {connect: 2, read: 45}", "timeouts: {connect: 2, read: 5, total: 12.5}")
    assert load_catalog(folder).agencies["company-registry"].total_timeout == 12.5
    edit(path, "total: 12.5", "total: 0")
    with pytest.raises(ConfigError, match=r"timeouts.total: 0 is less than or equal to the minimum of 0"):
        load_catalog(folder)


def test_a_wrong_type_names_the_nested_field(folder):
    edit(folder / "agencies" / "company-registry.yaml", "max_attempts: 5", "max_attempts: five")
    with pytest.raises(ConfigError, match=r"company-registry.yaml: retry.max_attempts: 'five' is not of type"):
        load_catalog(folder)


def test_an_unknown_adapter_lists_the_known_ones(folder):
    edit(folder / "agencies" / "company-registry.yaml", "adapter: rest", "adapter: carrier-pigeon")
    with pytest.raises(ConfigError, match=r"adapter: unknown adapter 'carrier-pigeon'; known adapters: .*rest"):
        load_catalog(folder)


def test_a_step_naming_an_unknown_agency_is_refused(folder):
    edit(folder / "services" / "business-startup.yaml", "agency: municipality", "agency: municipalty")
    with pytest.raises(ConfigError, match=r"business-startup.yaml: steps.permit.agency: unknown agency 'municipalty'"):
        load_catalog(folder)


def test_a_step_naming_an_unknown_operation_is_refused(folder):
    edit(folder / "services" / "business-startup.yaml", "operation: register_company", "operation: register")
    with pytest.raises(ConfigError, match=r"steps.company.operation: agency 'company-registry' has no operation"):
        load_catalog(folder)


def test_a_bad_jmespath_expression_is_refused(folder):
    edit(folder / "services" / "business-startup.yaml", "company_name: data.company.name",
         "company_name: data.company.[name")
    with pytest.raises(ConfigError, match=r"steps.company.request.company_name: bad JMESPath"):
        load_catalog(folder)


def test_a_cycle_between_steps_is_refused(folder):
    path = folder / "services" / "business-startup.yaml"
    text = path.read_text().replace("    agency: company-registry\n",
                                    "    agency: company-registry\n    after: [permit]\n", 1)
    text = text.replace("    agency: municipality\n", "    agency: municipality\n    after: [company]\n", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match="cycle"):
        load_catalog(folder)


def test_a_missing_environment_variable_is_named(folder, monkeypatch):
    edit(folder / "agencies" / "company-registry.yaml", "${SATUPINTU_SANDBOX_COMPANY_REGISTRY_URL:-http://127.0.0.1:8301}",
         "${SATUPINTU_TEST_SURELY_UNSET}")
    monkeypatch.delenv("SATUPINTU_TEST_SURELY_UNSET", raising=False)
    with pytest.raises(ConfigError, match="SATUPINTU_TEST_SURELY_UNSET is not set"):
        load_catalog(folder)


def test_secrets_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SP_TEST_SECRET", "s3cret")
    (tmp_path / "secret").write_text("from-file\n")
    assert resolve_secret("env:SP_TEST_SECRET") == "s3cret"
    assert resolve_secret(f"file:{tmp_path / 'secret'}") == "from-file"
    with pytest.raises(ConfigError, match="SP_TEST_MISSING"):
        resolve_secret("env:SP_TEST_MISSING")


def test_a_wrong_xroad_section_is_refused(folder):
    path = folder / "agencies" / "company-registry.yaml"
    path.write_text(path.read_text() + "xroad: {client: {instance: EE}, sevrice: {}}\n")
    with pytest.raises(ConfigError, match=r"company-registry.yaml: xroad"):
        load_catalog(folder)
