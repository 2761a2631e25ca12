"""Request mappings are JMESPath expressions (DESIGN §4): compiled at start-up, applied per request."""

from __future__ import annotations

import pytest

from core.domain.errors import ConfigError, MappingError
from core.domain.mapping import apply_mapping, compile_mapping


def test_a_mapping_reads_data_and_earlier_steps_and_leaves_out_nulls():
    compiled = compile_mapping({"name": "data.company.name", "nib": "steps.company.reference",
                                "first": "data.owners[0].nik", "missing": "data.company.nope"})
    context = {"data": {"company": {"name": "PT Maju"}, "owners": [{"nik": "3171012345670001"}]},
               "steps": {"company": {"reference": "NIB-1", "output": None}}, "application": {}}
    assert apply_mapping(compiled, context) == {"name": "PT Maju", "nib": "NIB-1", "first": "3171012345670001"}


def test_a_bad_expression_is_a_config_error_naming_the_field_and_a_type_error_a_mapping_error():
    with pytest.raises(ConfigError, match="request.x"):
        compile_mapping({"x": "data.[oops"})
    with pytest.raises(MappingError):
        apply_mapping(compile_mapping({"x": "length(data.n)"}), {"data": {"n": 5}})
