"""How `make test` spreads the suite over its workers (tests/helpers/schedule.py): a file's tests stay together only
where they share a fixture wider than one test, and units go longest first."""

from __future__ import annotations

import pytest

from tests.helpers.schedule import schedule

SOURCE = """
import pytest

@pytest.fixture(scope="module")
def run():
    return 1

@pytest.fixture
def made(run):
    return run + 1

def test_reads_the_run(made): pass
def test_alone(): pass
def test_reads_it_too(run): pass
def test_slow(): pass
"""


def test_tests_sharing_a_module_fixture_form_one_unit_and_units_go_longest_first(pytester: pytest.Pytester) -> None:
    items = pytester.getitems(SOURCE)
    file = items[0].nodeid.split("::")[0]
    seconds = {f"{file}::test_slow": 30.0, f"{file}::test_reads_the_run": 10.0, f"{file}::test_reads_it_too": 5.0}
    groups = schedule(items, seconds)
    # through another fixture too; the shared unit's tests together, in the file's order
    assert groups == {f"{file}::test_reads_the_run": file, f"{file}::test_reads_it_too": file}
    assert [i.name for i in items] == ["test_slow", "test_reads_the_run", "test_reads_it_too", "test_alone"]
    schedule(items, {})  # unrecorded: 1 s each, so the unit of two first; ties in the collection's order
    assert [i.name for i in items] == ["test_reads_the_run", "test_reads_it_too", "test_slow", "test_alone"]
