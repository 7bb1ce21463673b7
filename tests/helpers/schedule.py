"""How the suite spreads over the workers of ``pytest -n`` (``--dist loadgroup --no-loadscope-reorder``, as
`make test` runs it): longest first, and a test file's tests together only where they share a fixture.

- **Units.** The tests of a file that defines a fixture wider than one test (module or session scope: a workflow
  run that the file's tests inspect, a stand-in hub cache) form one unit, run by one worker so that the fixture
  is made once. Every other test is a unit of its own, free to run on whichever worker is idle. The workers
  write the units they collected to the folder of ``$QKDISSECT_TEST_GROUPS`` (which the controller makes), and
  the controller's scheduler (:func:`grouped_scheduler`, for ``--dist loadgroup``) reads them: xdist's own
  ``loadgroup`` renames tests through an attribute pytest 9 no longer reads.
- **Order.** Units go longest first (the longest-processing-time rule), by the durations recorded in
  ``tests/durations.json``; a test not recorded there counts :data:`UNKNOWN_S`. The order changes which worker
  runs a test, never what a test checks.
- **Recording.** ``QKDISSECT_TEST_DURATIONS=FILE pytest ...`` (``make test-durations``) writes each test's
  setup, call and teardown seconds to FILE when the run ends. ``QKDISSECT_TEST_CPU=FILE`` writes each test's CPU
  seconds (user and system, of the worker and of the processes the test started and waited for: a Snakemake run's
  jobs among them), which, unlike the seconds on the clock, do not depend on what ran beside the test.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

#: the durations of the last recorded run (``make test-durations``), by test id
DURATIONS = Path(__file__).resolve().parents[1] / "durations.json"
#: what a test not in :data:`DURATIONS` is taken to last, in seconds
UNKNOWN_S = 1.0
#: fixture scopes wider than one test
_SHARED = ("class", "module", "package", "session")
#: the folder the workers write their units to, for the controller's scheduler
GROUPS_ENV = "QKDISSECT_TEST_GROUPS"
#: the file each test's CPU seconds are written to, when set
CPU_ENV = "QKDISSECT_TEST_CPU"
#: the name under which a test's report carries the CPU seconds of its phase
CPU_PROPERTY = "qkdissect_cpu_s"


def shared_fixture_file(item: pytest.Item) -> str | None:
    """The test file whose own fixture of module or session scope ``item`` uses (directly or through another
    fixture), or None. Fixtures of ``conftest.py`` (the assets' paths, two photographs) are cheap and shared by
    every worker anyway."""
    file = item.nodeid.split("::")[0]
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        fd = defs[-1]
        if fd.scope in _SHARED and fd.baseid == file:
            return file
    return None


def read_durations(path: Path = DURATIONS) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


def schedule(items: list[pytest.Item], durations: dict[str, float] | None = None) -> dict[str, str]:
    """Sort ``items`` in place, units longest first (the tests of a unit in their file's order); return each
    grouped test's unit (its file)."""
    known = read_durations() if durations is None else durations
    units: dict[str, list[pytest.Item]] = {}
    groups: dict[str, str] = {}
    for item in items:
        group = shared_fixture_file(item)
        if group is not None:
            groups[item.nodeid] = group
        units.setdefault(group or item.nodeid, []).append(item)

    def cost(unit: Iterable[pytest.Item]) -> float:
        return sum(known.get(i.nodeid, UNKNOWN_S) for i in unit)

    ordered = sorted(units.values(), key=cost, reverse=True)  # stable: ties keep the collection's order
    items[:] = [item for unit in ordered for item in unit]
    return groups


def write_groups(groups: dict[str, str], worker: str) -> None:
    """A worker's units, for the controller's scheduler (nothing when ``$QKDISSECT_TEST_GROUPS`` is not set)."""
    if folder := os.environ.get(GROUPS_ENV):
        _write_json(Path(folder) / f"{worker}.json", groups)


def _write_json(path: Path, value: Any) -> None:
    """``value`` as JSON at ``path``, whole or not at all (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=0) + "\n")
    os.replace(tmp, path)


def read_groups(folder: Path) -> dict[str, str]:
    """The units the first worker to finish its collection wrote (every worker collects the same tests)."""
    for path in sorted(folder.glob("*.json")):
        return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    return {}


def grouped_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scheduler by scope, a scope being a test's unit: its file where it shares a fixture with the file's
    other tests, else the test alone. Units are sent in the workers' order (longest first, with
    ``--no-loadscope-reorder``), two at a time per worker."""
    from xdist.scheduler import LoadScopeScheduling

    folder = Path(os.environ[GROUPS_ENV])

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                self._groups = read_groups(folder)
            return self._groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def cpu_seconds() -> float:
    """The user and system seconds of this process and of its children that have been waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuMeter:
    """In the process that runs the tests: each phase's report (setup, call, teardown) carries the CPU seconds
    spent since the previous phase ended, as a user property that xdist sends to the controller."""

    def __init__(self) -> None:
        self.mark = cpu_seconds()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self.mark = cpu_seconds()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        now = cpu_seconds()
        report.user_properties.append((CPU_PROPERTY, now - self.mark))
        self.mark = now
        return report


class DurationRecorder:
    """Adds up each test's setup, call and teardown time and writes ``{test id: seconds}`` at the end; with
    ``cpu=True``, the CPU seconds its reports carry (:class:`CpuMeter`) instead."""

    def __init__(self, path: Path, cpu: bool = False) -> None:
        self.path = path
        self.cpu = cpu
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        spent = report.duration
        if self.cpu:
            spent = sum(float(v) for k, v in report.user_properties if k == CPU_PROPERTY)
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + spent

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.seconds:
            return
        _write_json(self.path, {k: round(v, 2) for k, v in sorted(self.seconds.items())})
