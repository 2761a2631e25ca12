"""Third-party adapters register through the ``satupintu.adapters`` entry-point group."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import OutcomeKind
from adapters.registry import adapter_class, available
from core.domain.errors import ConfigError, UnsupportedOperation
from gateway.catalog import load_catalog

PLUGIN_DIR = Path(__file__).parent / "example_plugin"


@pytest.fixture
def echo_installed(tmp_path, monkeypatch):
    """What ``pip install`` of the plug-in would leave behind: a dist-info with entry points."""
    dist = tmp_path / "site" / "satupintu_echo-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: satupintu-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[satupintu.adapters]\necho = satupintu_echo:EchoAdapter\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    return tmp_path


def test_an_installed_plugin_is_found_by_name(echo_installed, make_agency, request_factory):
    assert available()["echo"] == "satupintu_echo:EchoAdapter"
    cls = adapter_class("echo")
    adapter = cls(make_agency("http://unused", {"op": {}}, adapter="echo", options={"prefix": "E-"}))
    outcome = adapter.send(request_factory("op", {"a": 1}))
    assert (outcome.kind, outcome.reference, outcome.output) == (OutcomeKind.APPROVED, "E-req-0001", {"a": 1})
    with pytest.raises(UnsupportedOperation):
        adapter.poll(request_factory("op"))


def test_an_unknown_adapter_name_lists_the_known_ones(echo_installed):
    with pytest.raises(ConfigError, match="unknown adapter 'ehco'; known adapters: echo, rest, soap"):
        adapter_class("ehco")


def test_the_catalog_checks_plugin_options_with_the_plugin_schema(echo_installed):
    root = echo_installed / "config"
    (root / "agencies").mkdir(parents=True)
    (root / "services").mkdir()
    (root / "agencies" / "echo.yaml").write_text(
        "id: echo-office\nname: Echo\nadapter: echo\nendpoint: http://unused\n"
        "options: {prefx: E-}\noperations: {op: {}}\n")
    with pytest.raises(ConfigError, match="options: Additional properties are not allowed .'prefx'"):
        load_catalog(root)
    (root / "agencies" / "echo.yaml").write_text(
        "id: echo-office\nname: Echo\nadapter: echo\nendpoint: http://unused\n"
        "options: {prefix: E-}\noperations: {op: {}}\n")
    assert load_catalog(root).agencies["echo-office"].options == {"prefix": "E-"}


def test_builtin_adapters_validate_through_the_catalog(tmp_path):
    root = tmp_path / "config"
    (root / "agencies").mkdir(parents=True)
    (root / "services").mkdir()
    (root / "agencies" / "tax.yaml").write_text(
        "id: tax-office\nname: Tax\nadapter: soap\nendpoint: http://tax\n"
        "options: {wsdl: tax.wsdl, soap_versoin: '1.2'}\n"
        "operations: {register: {operation: RegisterTaxpayer, respnse: {}}}\n")
    with pytest.raises(ConfigError) as info:
        load_catalog(root)
    assert "soap_versoin" in str(info.value) and "operations.register" in str(info.value)
