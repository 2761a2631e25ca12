"""``pip install`` finds every folder that ships files as a package, so setuptools has no
"Package 'gateway.ops.static' is absent from the packages configuration" to warn about."""

from __future__ import annotations

import configparser
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[2]


def test_every_folder_with_package_data_is_a_package():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    find = config["options.packages.find"]
    finder = {"find:": setuptools.find_packages, "find_namespace:": setuptools.find_namespace_packages}
    packages = finder[config["options"]["packages"].strip()](
        where=str(REPO), include=find["include"].split(), exclude=find.get("exclude", "").split())
    for folder in ("gateway/ops/static", "gateway/ops/templates"):
        assert folder.replace("/", ".") in packages
    assert not [p for p in packages if "__pycache__" in p or p.startswith("tests")]
