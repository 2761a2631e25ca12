"""The step DAG: order, release of dependents, skipped propagation, refused cycles."""

import pytest

from core.domain.dag import advance, check_dag
from core.domain.errors import ConfigError
from core.domain.status import RequestStatus as R

BUSINESS = {"company": (), "tax": ("company",), "permit": ("company",), "social": ("tax", "permit")}


def test_dependencies_come_first_in_the_order():
    order = check_dag(BUSINESS)
    assert order.index("company") < order.index("tax") < order.index("social")
    assert order.index("permit") < order.index("social")


def test_a_cycle_is_refused_with_its_path():
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        check_dag({"a": ("b",), "b": ("a",)}, file="svc.yaml")


def test_an_unknown_dependency_is_refused_naming_the_step():
    with pytest.raises(ConfigError, match="steps.tax.after.*unknown step 'kompany'"):
        check_dag({"company": (), "tax": ("kompany",)}, file="svc.yaml")


def test_steps_without_dependencies_are_released_at_once():
    statuses = {s: R.PENDING for s in BUSINESS}
    assert advance(BUSINESS, statuses) == {"company": R.QUEUED}


def test_tax_step_waits_for_company_number():
    statuses = {"company": R.ACCEPTED, "tax": R.PENDING, "permit": R.PENDING, "social": R.PENDING}
    assert advance(BUSINESS, statuses) == {}
    statuses["company"] = R.APPROVED
    assert advance(BUSINESS, statuses) == {"tax": R.QUEUED, "permit": R.QUEUED}


def test_a_rejected_step_skips_every_dependent_transitively():
    statuses = {"company": R.REJECTED, "tax": R.PENDING, "permit": R.PENDING, "social": R.PENDING}
    assert advance(BUSINESS, statuses) == {"tax": R.SKIPPED, "permit": R.SKIPPED, "social": R.SKIPPED}


def test_a_step_waits_for_all_of_its_dependencies():
    statuses = {"company": R.APPROVED, "tax": R.APPROVED, "permit": R.ACCEPTED, "social": R.PENDING}
    assert advance(BUSINESS, statuses) == {}
