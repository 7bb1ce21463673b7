"""How `make test` spreads the suite over its workers (tests/helpers/schedule.py): a file's tests stay together only
where they share a fixture wider than one test, and units go longest first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.schedule import CpuMeter, DurationRecorder, schedule

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


def test_the_cpu_recorder_counts_a_tests_own_work_and_its_childrens(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """``QKDISSECT_TEST_CPU``: a test that spins for 0.3 s of CPU, one whose child process does, and one that only
    sleeps: the first two are counted, the sleep is not (the seconds on the clock would count all three)."""
    pytester.makepyfile(
        """
        import subprocess, sys, time

        def spin(s):
            t = time.process_time()
            while time.process_time() - t < s:
                pass

        def test_spins(): spin(0.3)
        def test_child_spins():
            code = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass"
            subprocess.run([sys.executable, "-c", code], check=True)
        def test_sleeps(): time.sleep(0.3)
        """
    )
    out = tmp_path / "cpu.json"
    result = pytester.runpytest_inprocess(plugins=[CpuMeter(), DurationRecorder(out, cpu=True)])
    result.assert_outcomes(passed=3)
    seconds = {k.split("::")[1]: v for k, v in json.loads(out.read_text()).items()}
    assert seconds["test_spins"] >= 0.29 and seconds["test_child_spins"] >= 0.29 and seconds["test_sleeps"] < 0.1
