"""One writer per output (qkdissect.util.locks): two writers of one output, in two processes or two threads, are
refused with one line before any work, never a crash after it; a lock dies with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qkdissect.cli import main
from qkdissect.errors import QKDissectError
from qkdissect.stores import open_store
from qkdissect.util.atomic import atomic_path
from qkdissect.util.locks import lock_path
from tests.helpers import REPO, make_tiny_vit
from tests.helpers.processes import modes_args, start, wait_for


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_vit(tmp_path_factory.mktemp("proc") / "w", depth=2)


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
