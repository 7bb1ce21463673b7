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
  setup, call and teardown seconds to FILE when the run ends.
"""

from __future__ import annotations

import json
import os
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


class DurationRecorder:
    """Adds up each test's setup, call and teardown time and writes ``{test id: seconds}`` at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.seconds:
            return
        _write_json(self.path, {k: round(v, 2) for k, v in sorted(self.seconds.items())})
