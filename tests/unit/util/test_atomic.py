"""An output written atomically (qkdissect.util.atomic): it appears under its name only when complete, a failed
write leaves the old output and nothing else, what a killed write left is removed by the next one, and the
fault-injection points stop a write at the N-th arrival of the named step only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qkdissect.util import atomic
from qkdissect.util.atomic import FAILPOINT_ENV, atomic_path, failpoint, remove_leftovers
from qkdissect.util.ownership import OutputExistsError, holding_only
from tests.helpers import REPO


def test_a_write_appears_only_when_complete_and_a_failed_one_leaves_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    with atomic_path(out) as tmp:
        tmp.write_text('{"n": 1}')
        assert not out.exists() and tmp.parent == tmp_path and tmp.name.startswith("out.json.tmp-")
    assert out.read_text() == '{"n": 1}'
    with pytest.raises(RuntimeError, match="half way"), atomic_path(out) as tmp:
        tmp.write_text('{"n": 2}')
        raise RuntimeError("half way")
    assert out.read_text() == '{"n": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary output, no lock


def test_what_killed_writes_left_is_removed_by_the_next_write(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    (tmp_path / "s.zarr.tmp-dead0001").mkdir()
    (tmp_path / "s.zarr.tmp-dead0001" / "chunk").write_bytes(b"x")
    (tmp_path / "s.zarr.old-dead0002").write_text("old")
    (tmp_path / "s.zarr.tmp-other.txt").write_text("")  # a name of the same shape: also a leftover
    (tmp_path / "t.zarr.tmp-dead0003").mkdir()  # another output's: left alone
    with atomic_path(out) as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "t.zarr.tmp-dead0003"]
    assert remove_leftovers(out) == []


def test_an_output_of_another_kind_is_left_as_it_is_unless_the_writer_owns_it(tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    out.write_bytes(b"%PDF-1.4 a user's document")
    with pytest.raises(OutputExistsError, match="is a PDF file, not a PNG file"), atomic_path(out) as tmp:
        tmp.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert out.read_bytes() == b"%PDF-1.4 a user's document" and len(list(tmp_path.iterdir())) == 1
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config").write_text("a: 1")
    with atomic_path(folder, owned=holding_only(["config", "workflow"])) as tmp:  # a writer's own folder
        tmp.mkdir()
        (tmp / "workflow").write_text("rules")
    assert sorted(p.name for p in folder.iterdir()) == ["workflow"]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses of the failpoints (recorded, not slept), with no arrival counted yet."""
    slept: list[float] = []
    monkeypatch.setattr(atomic, "_hits", {})
    monkeypatch.setattr(atomic.time, "sleep", slept.append)
    return slept


def test_a_failpoint_pauses_at_the_nth_arrival_of_its_step_only(monkeypatch, sleeps: list[float]) -> None:
    failpoint("store:written")  # no $QKDISSECT_FAILPOINT: nothing
    monkeypatch.setenv(FAILPOINT_ENV, "stream:write@3:pause")
    for _ in range(2):
        failpoint("stream:write")
        failpoint("stream:finish")
    assert sleeps == []
    failpoint("stream:write")
    assert sleeps == [5]
    failpoint("stream:write")
    assert sleeps == [5]  # the third arrival only


@pytest.mark.parametrize(("want", "killed"), [("store:written", True), ("store:written@2", False)])
def test_a_failpoint_without_an_action_kills_the_process(want: str, killed: bool) -> None:
    """A point's name holds a colon: a value without a known action names the point, and kills (SIGKILL)."""
    run = "from qkdissect.util.atomic import failpoint; failpoint('store:written'); print('alive')"
    r = subprocess.run(
        [sys.executable, "-c", run], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), FAILPOINT_ENV: want},
    )  # fmt: skip
    if killed:
        assert r.returncode == -signal.SIGKILL and r.stdout == ""
    else:
        assert r.returncode == 0 and r.stdout == "alive\n", r.stderr
