"""Processes and concurrent writers: a job's command dies with its job (its store never appears), and two
writers of one output are refused with one line before any work, never a crash after it."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qkdissect.cli import main
from qkdissect.errors import QKDissectError
from qkdissect.stores import open_store
from qkdissect.util import lifeline
from qkdissect.util.atomic import FAILPOINT_ENV, atomic_path
from qkdissect.util.locks import lock_path
from tests.helpers import REPO, make_tiny_vit


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_vit(tmp_path_factory.mktemp("proc") / "w", depth=2)


def modes_args(spec: str, out: Path) -> list[str]:
    return ["modes", spec, "--name", "tiny", "--device", "cpu", "-q", "-o", str(out)]


def start(args: list[str], pause_at: str, shell: bool = False) -> subprocess.Popen[str]:
    """The command in a new process that pauses 5 s at ``pause_at`` (under ``sh -c`` as a job's shell runs it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), FAILPOINT_ENV: f"{pause_at}:pause"}
    cmd = [sys.executable, "-m", "qkdissect", *args]
    if shell:
        cmd = ["sh", "-c", f"{shlex.join(cmd)}; exit $?"]  # the shell stays the command's parent
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(d.name))
        except OSError:
            continue
    return found


def gone(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]) in ("Z", "X")
    except FileNotFoundError:
        return True


# ----------------------------------------------------------------------------------------- a job's process
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


# ----------------------------------------------------------------------------------------- two writers
def test_a_second_writer_of_one_output_is_refused_and_the_first_finishes(spec: str, tmp_path: Path) -> None:
    out = tmp_path / "m.zarr"
    first = start(modes_args(spec, out), "store:written")
    wait_for(lambda: bool(list(tmp_path.glob("m.zarr.tmp-*"))))
    second = subprocess.run(
        [sys.executable, "-m", "qkdissect", *modes_args(spec, out)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and f"{out} is being written by another command (pid {first.pid}: qkdissect modes " in lines[0]
    )
    assert "two writers to one output are refused" in lines[0]
    assert first.wait(60) == 0, first.stderr
    assert open_store(out, "modes").sizes["layer"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]


def test_two_threads_writing_one_output_and_a_stale_lock(spec: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.zarr"
    inside, release = threading.Event(), threading.Event()

    def writer() -> None:
        with atomic_path(out) as tmp:
            tmp.mkdir()
            inside.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    inside.wait(30)
    try:
        assert main(modes_args(spec, out)) == 2
        assert "is being written by another command" in capsys.readouterr().err
        assert list(tmp_path.glob("m.zarr.tmp-*"))  # the first writer's temporary store is untouched
        with pytest.raises(QKDissectError, match="being written"), atomic_path(out):
            pass
    finally:
        release.set()
        t.join()
    assert out.is_dir() and not lock_path(out).exists()
    # a lock file left by a writer that was killed (its pid long gone): taken over
    lock_path(out).write_text("pid 999999999: qkdissect modes ...")
    assert main(modes_args(spec, out)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]


def test_a_lock_dies_with_its_holder_not_with_the_children_it_forked(spec: str, tmp_path: Path) -> None:
    """Image-decoding workers forked by a killed writer may outlive it by seconds: its lock is free at once."""
    out = tmp_path / "m.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], env={**os.environ, "PYTHONPATH": str(REPO / "src")}, text=True,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().startswith("forked")
    with pytest.raises(QKDissectError, match="being written"), atomic_path(out):
        pass  # held
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with atomic_path(out) as tmp:  # its forked child still runs (for 20 s), the lock is free
        tmp.mkdir()
    assert out.is_dir()


HOLDER = """
import os, sys, time
from qkdissect.util.locks import writer_lock
with writer_lock(sys.argv[1]):
    if os.fork() == 0:
        time.sleep(20)
        os._exit(0)
    print("forked", flush=True)
    time.sleep(60)
"""


def test_a_file_system_without_locks_writes_unguarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert "cannot lock" in caplog.text and "would not be told apart" in caplog.text
