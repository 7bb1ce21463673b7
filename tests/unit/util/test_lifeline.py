"""A command lives only as long as the job that started it (qkdissect.util.lifeline): when the job's shell is
killed, its store never appears, and a process whose parent died refuses the final rename."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from qkdissect.util import lifeline
from qkdissect.util.atomic import atomic_path
from tests.helpers import make_tiny_vit
from tests.helpers.processes import children, gone, modes_args, start, wait_for


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_vit(tmp_path_factory.mktemp("proc") / "w", depth=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_command_whose_shell_is_killed_never_publishes_and_leaves_nothing(spec: str, tmp_path: Path) -> None:
    out = tmp_path / "m.zarr"
    sh = start(modes_args(spec, out), "store:written", shell=True)
    wait_for(lambda: bool(children(sh.pid)) and bool(list(tmp_path.glob("m.zarr.tmp-*"))))
    (child,) = children(sh.pid)
    time.sleep(0.5)  # complete under its temporary name, pausing 5 s before the rename
    os.kill(sh.pid, signal.SIGKILL)  # what `kill -9` of a job's shell does
    sh.wait()
    wait_for(lambda: gone(child), 20)
    time.sleep(0.5)
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no temporary store, no lock


def test_a_process_whose_parent_died_does_not_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the kernel's signal (not Linux, or the instant before it), the rename itself is refused."""
    monkeypatch.setattr(lifeline, "_parent", -1)  # a parent pid we no longer have
    monkeypatch.setattr(lifeline, "_owner", os.getpid())
    with pytest.raises(lifeline.OrphanedError, match=r"is gone: .*out\.json is not written"):  # noqa: SIM117
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
    assert not list(tmp_path.iterdir())
